//! What every load tool shares: who loads whom (`LoadNodes`), the generator's fixed part
//! (`Setup`: the socket of the node it plays, the target, the path and the link keys every
//! datagram is sealed with), and a pool of prebuilt packets recognised after one hop by the
//! MAC their second hop would check. `loopix loadgen`, its hostile mix and `loopix soak`
//! build on it.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;

use clap::Args;
use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::{NodeEntry, Topology};
use loopix_crypto::lanes::Kernel;
use loopix_crypto::params::MAC_LEN;
use loopix_crypto::{BuildError, BuildJob, Command, Hop, NodeId, Params, build_batch};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Who loads whom: the options `loopix loadgen` and `loopix soak` share.
#[derive(Args, Debug, Clone)]
pub struct LoadNodes {
    /// The network's topology file.
    #[arg(long)]
    topology: PathBuf,
    /// The node under load.
    #[arg(long)]
    target: u64,
    /// The key file of the node the generator plays (`loopix keygen --epochs`): its link
    /// keys, without which the target takes nothing from it.
    #[arg(long)]
    key: PathBuf,
    /// The topology node the generator plays (it binds that node's address). The target
    /// must take packets from it and send them back to it: a provider, for a layer-1 mix
    /// of a one-layer network.
    #[arg(long = "as")]
    as_node: u64,
}

impl LoadNodes {
    /// The generator as node `as_node` (with its key file `key`) loading `target`.
    pub(crate) fn new(topology: PathBuf, target: NodeId, key: PathBuf, as_node: NodeId) -> Self {
        Self {
            topology,
            target: target.0,
            key,
            as_node: as_node.0,
        }
    }
}

/// The prebuilt packets and how to recognise each after one hop.
pub(crate) struct Pool {
    pub packets: Vec<Vec<u8>>,
    pub by_mac: HashMap<[u8; MAC_LEN], u32>,
}

/// The generator's fixed part: its socket, the target, and the path every packet takes
/// (target, then the generator itself), under the keys of the epoch it is sent in.
pub(crate) struct Setup {
    pub params: Params,
    pub epochs: EpochSchedule,
    target_node: NodeEntry,
    me: NodeEntry,
    /// The hold every packet asks the target for, µs.
    hold_us: u32,
    /// The played node's links: every datagram to the target is sealed with them.
    links: std::sync::Mutex<Links>,
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

impl Setup {
    /// The generator as the node `nodes` names (with its key file), loading the target,
    /// which holds each packet `hold_us`.
    pub fn for_nodes(nodes: &LoadNodes, hold_us: u32) -> Result<Self, String> {
        let (topology, key_file) = (&nodes.topology, &nodes.key);
        let text = std::fs::read_to_string(topology)
            .map_err(|e| format!("{}: {e}", topology.display()))?;
        let topology =
            Topology::from_toml(&text).map_err(|e| format!("{}: {e}", topology.display()))?;
        let target = topology
            .node(NodeId(nodes.target))
            .ok_or("--target: not a node of the topology")?;
        let me = topology
            .node(NodeId(nodes.as_node))
            .ok_or("--as: not a node of the topology")?;
        let key = loopix_runtime::key_file::read_session_key(key_file)?
            .ok_or_else(|| format!("--key {}: no session key", key_file.display()))?;
        let links = Links::new(&topology, me.id, &key, 0).map_err(|e| format!("--key: {e}"))?;
        if !links.sends_to(target.id) {
            return Err(format!(
                "--as {}: node {} does not send to node {} in a stratified topology (play a \
                 node of the layer before the target, e.g. a provider for a layer-1 mix)",
                me.id.0, me.id.0, target.id.0
            ));
        }
        let socket = bind_large(me.address).map_err(|e| format!("--as {}: {e}", me.address))?;
        // Now, long before the first send: the kernel switches stamping on lazily.
        loopix_runtime::rx_timestamp::enable(&socket)
            .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        Ok(Self {
            params: topology.network.params,
            epochs: topology.network.epochs,
            target_node: target.clone(),
            me: me.clone(),
            hold_us,
            links: std::sync::Mutex::new(links),
            socket,
            target: target.address,
        })
    }

    /// The path of a packet sent at `at_us` (unix): both hops under their keys of the
    /// epoch then.
    pub fn path_at(&self, at_us: u64) -> Result<[Hop; 2], String> {
        self.path_holding(at_us, self.hold_us)
    }

    /// [`Setup::path_at`], asking the target to hold the packet `hold_us`.
    pub fn path_holding(&self, at_us: u64, hold_us: u32) -> Result<[Hop; 2], String> {
        let epoch = self.epochs.epoch_at(at_us);
        let (target, me) = (&self.target_node.epoch_keys, &self.me.epoch_keys);
        let relay = Command::Relay {
            next: self.me.id,
            delay_us: hold_us,
        };
        match (target.hop(epoch, relay), me.hop(epoch, Command::Final)) {
            (Some(first), Some(second)) => Ok([first, second]),
            _ => Err(format!(
                "the topology publishes no key of --target or --as for epoch {epoch}"
            )),
        }
    }

    /// `packet` as the played node sends it to the target at `at_us`: with its link
    /// trailer.
    pub fn seal(&self, at_us: u64, packet: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(packet.len() + LINK_OVERHEAD);
        d.extend_from_slice(packet);
        self.seal_owned(at_us, d)
    }

    /// [`Setup::seal`], extending `packet` itself.
    pub fn seal_owned(&self, at_us: u64, packet: Vec<u8>) -> Vec<u8> {
        let mut d = packet;
        // Exactly: a pool of millions of datagrams must not double its capacity on growth.
        d.reserve_exact(LINK_OVERHEAD);
        d.resize(d.len() + LINK_OVERHEAD, 0);
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        // Checked at setup: the played node sends to the target.
        let _sealed = links.seal(at_us, self.target_node.id, &mut d);
        debug_assert!(_sealed.is_ok());
        d
    }
}

/// A UDP socket with a receive buffer big enough that bursts of forwarded packets are not
/// lost in the generator's own kernel queue (which would be charged to the node).
pub(crate) fn bind_large(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    s.set_recv_buffer_size(8 << 20)?;
    s.set_send_buffer_size(8 << 20)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A built packet and the MAC its second hop checks.
type Built = (Vec<u8>, [u8; MAC_LEN]);

/// Packets built at once: two runs of the widest lane kernel.
const BUILD_BATCH: usize = 32;

/// Builds `count` distinct packets on every core, packet `i` along `path_of(i)`, in
/// batches (`build_batch`, this CPU's lane kernel).
pub(crate) fn build_pool(
    params: &Params,
    path_of: &(dyn Fn(usize) -> [Hop; 2] + Sync),
    count: usize,
) -> Result<Pool, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let mut base_seed = [0u8; 32];
    getrandom::fill(&mut base_seed).map_err(|e| format!("no OS randomness: {e}"))?;
    let kernel = Kernel::detect();
    let parts: Vec<Result<Vec<Built>, BuildError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    // One stream per thread from the one seed.
                    let mut seed = base_seed;
                    seed[..8]
                        .iter_mut()
                        .zip(t.to_le_bytes())
                        .for_each(|(b, x)| *b ^= x);
                    let mut rng = ChaCha20Rng::from_seed(seed);
                    let first = t * chunk;
                    let n = chunk.min(count.saturating_sub(first));
                    let mut built = Vec::with_capacity(n);
                    let ids: Vec<usize> = (first..first + n).collect();
                    for batch in ids.chunks(BUILD_BATCH) {
                        let paths: Vec<[Hop; 2]> = batch.iter().map(|&i| path_of(i)).collect();
                        let jobs: Vec<BuildJob<'_>> = paths
                            .iter()
                            .map(|p| BuildJob {
                                path: p,
                                payload: b"loadgen",
                            })
                            .collect();
                        let mut packets = vec![vec![0u8; params.packet_len()]; batch.len()];
                        let mut macs = vec![[0u8; MAC_LEN]; batch.len()];
                        let mut outs: Vec<&mut [u8]> =
                            packets.iter_mut().map(|p| &mut p[..]).collect();
                        build_batch(params, kernel, &jobs, &mut rng, &mut outs, &mut macs)?;
                        built.extend(packets.into_iter().zip(macs));
                    }
                    Ok(built)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(Vec::new())))
            .collect()
    });
    let mut pool = Pool {
        packets: Vec::with_capacity(count),
        by_mac: HashMap::with_capacity(count),
    };
    for part in parts {
        let part = part.map_err(|e| format!("building the packet pool: {e}"))?;
        for (p, mac) in part {
            pool.by_mac.insert(mac, pool.packets.len() as u32);
            pool.packets.push(p);
        }
    }
    if pool.packets.len() < count {
        return Err("could not build the packet pool".into());
    }
    Ok(pool)
}
