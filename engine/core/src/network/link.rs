//! Authenticated links between nodes. Every datagram a node sends another carries a
//! trailer after the packet:
//!
//! ```text
//! packet | flags u8 | counter u64 (LE) | tag (16 bytes)
//! flags: bit 7 the link key's epoch parity, bits 0..=6 the sending shard
//! tag:   ChaCha20-Poly1305 under the link key of (epoch, sender, receiver), nonce
//!        (counter, flags), over all before it as associated data
//! ```
//! The trailer goes at the end so the packet's first bytes still steer it to its shard.
//! A node takes a datagram only from an adjacent node of the stratified topology (a mix
//! from the layer before it, or from providers for layer 1; a provider from the last
//! layer) and only when its tag verifies under the key of one of the epochs in use (the
//! parity says which); then each sending shard's counter must be new to a sliding window
//! ([`ReplayWindow`], after the tag verified). It sends only to the next layer (providers
//! after the last). So a datagram with a forged source address, a replayed one and a
//! packet routed across the layers are each dropped, under their own reasons, before any
//! public-key work.
//!
//! A sender's counter is `max(last + 1, now in µs)`: it never repeats, even across a
//! restart, as long as a shard sends fewer than one datagram a microsecond to all neighbours.
//! The receiver's window is 65,472 counters: 65 ms of reordering at low rates.

use std::collections::{HashMap, HashSet};

use loopix_crypto::{KeyPhase, LINK_TAG_LEN, LinkKey, LinkSecret, NodeId, SessionSecret};

use crate::drops::DropReason;
use crate::network::epoch::EpochSchedule;
use crate::network::topology::{Role, Topology};
use crate::session::ReplayWindow;

/// A link's replay window: 65,472 counters (8 KiB). Counters run with the sender's clock
/// in µs, so at low rates this is how far (65 ms) a link may reorder datagrams.
type LinkWindow = ReplayWindow<1024>;

/// Bytes a link adds to a packet.
pub const LINK_OVERHEAD: usize = 1 + 8 + LINK_TAG_LEN;
const PARITY_BIT: u8 = 0x80;
/// Shards a node may run: the flags byte has seven bits for the index.
pub const MAX_LINK_SHARDS: usize = 128;

/// Why a node could not set up its links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// This node, or an adjacent one, has no session key in the topology.
    NoSessionKey(NodeId),
    /// The topology lists a session key for `0` that shares no secret (small order).
    WeakKey(NodeId),
    /// The node's own key is not the one the topology lists.
    KeyMismatch(NodeId),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSessionKey(a) => write!(f, "node {} has no session_key in the topology", a.0),
            Self::WeakKey(a) => write!(f, "node {}'s session_key is a weak (small-order) key", a.0),
            Self::KeyMismatch(a) => write!(
                f,
                "the topology's session_key for node {} is not the public half of its key",
                a.0
            ),
        }
    }
}

/// One direction's key for one epoch.
struct EpochKey {
    epoch: u64,
    key: LinkKey,
}

struct Neighbour {
    secret: LinkSecret,
    /// Keys for datagrams to the neighbour and from it, by epoch parity, made when first needed.
    send: [Option<EpochKey>; 2],
    receive: [Option<EpochKey>; 2],
    /// When a datagram from it last verified, µs (0: never): its link is alive.
    heard_us: u64,
}

/// A node's links to its adjacent nodes. See the module docs.
pub struct Links {
    me: NodeId,
    shard: u8,
    schedule: EpochSchedule,
    neighbours: HashMap<NodeId, Neighbour>,
    accept_from: HashSet<NodeId>,
    send_to: HashSet<NodeId>,
    counter: u64,
    /// False only under a simulation's stand-in codec: trailers without tags.
    authenticate: bool,
    /// One window per (sending node, its shard); made only for datagrams that verified.
    windows: HashMap<(NodeId, u8), LinkWindow>,
}

impl Links {
    /// Node `me` (holding `key`) as `topology` places it, sending from shard `shard`.
    pub fn new(
        topology: &Topology,
        me: NodeId,
        key: &SessionSecret,
        shard: usize,
    ) -> Result<Self, LinkError> {
        let node = topology.node(me).ok_or(LinkError::NoSessionKey(me))?;
        if node.session_key.ok_or(LinkError::NoSessionKey(me))? != key.public() {
            return Err(LinkError::KeyMismatch(me));
        }
        let layers = topology.network.layers;
        let layer_of = |role: Role| match role {
            Role::Mix { layer } => layer,
            Role::Provider => 0,
        };
        let before = |l: u8| match l {
            0 => layers,
            1 => 0,
            l => l - 1,
        };
        let after = |l: u8| if l == layers { 0 } else { l + 1 };
        let mine = layer_of(node.role);
        let adjacent = |l: u8| topology.nodes.iter().filter(move |n| layer_of(n.role) == l);
        let accept_from: HashSet<NodeId> = adjacent(before(mine)).map(|n| n.id).collect();
        let send_to: HashSet<NodeId> = adjacent(after(mine)).map(|n| n.id).collect();
        let mut neighbours = HashMap::new();
        for n in topology.nodes.iter() {
            if !accept_from.contains(&n.id) && !send_to.contains(&n.id) {
                continue;
            }
            let public = n.session_key.ok_or(LinkError::NoSessionKey(n.id))?;
            let secret = LinkSecret::agree(key, &public).map_err(|_| LinkError::WeakKey(n.id))?;
            neighbours.insert(
                n.id,
                Neighbour {
                    secret,
                    send: [None, None],
                    receive: [None, None],
                    heard_us: 0,
                },
            );
        }
        Ok(Self {
            me,
            shard: (shard % MAX_LINK_SHARDS) as u8,
            schedule: topology.network.epochs,
            neighbours,
            accept_from,
            send_to,
            counter: 0,
            authenticate: true,
            windows: HashMap::new(),
        })
    }

    /// The same links with tags written as zeros and never checked: for simulations over
    /// a stand-in codec only ([`crate::formats::codec::Codec::AUTHENTICATES_LINKS`]).
    pub fn unauthenticated(self) -> Self {
        Self {
            authenticate: false,
            ..self
        }
    }

    /// Whether this node sends to `to` (the next layer).
    pub fn sends_to(&self, to: NodeId) -> bool {
        self.send_to.contains(&to)
    }

    /// Writes the trailer after the packet in `datagram` (the packet, then
    /// [`LINK_OVERHEAD`] bytes) for node `to`, under the link key of the epoch of `now_us`.
    /// Refused (`NotAdjacent`) for a node this one does not send to.
    pub fn seal(&mut self, now_us: u64, to: NodeId, datagram: &mut [u8]) -> Result<(), DropReason> {
        let at = datagram
            .len()
            .checked_sub(LINK_OVERHEAD)
            .ok_or(DropReason::Malformed)?;
        if !self.send_to.contains(&to) {
            return Err(DropReason::NotAdjacent);
        }
        let epoch = self.schedule.epoch_at(now_us);
        let me = self.me;
        let neighbour = self
            .neighbours
            .get_mut(&to)
            .ok_or(DropReason::NotAdjacent)?;
        let key = key_for(&mut neighbour.send, &neighbour.secret, epoch, me, to);
        self.counter = (self.counter + 1).max(now_us);
        let parity = if KeyPhase::of_epoch(epoch) == KeyPhase::Odd {
            PARITY_BIT
        } else {
            0
        };
        let flags = parity | self.shard;
        datagram[at] = flags;
        datagram[at + 1..at + 9].copy_from_slice(&self.counter.to_le_bytes());
        let tag = if self.authenticate {
            key.tag(self.counter, flags, &datagram[..at + 9])
        } else {
            [0; LINK_TAG_LEN]
        };
        datagram[at + 9..].copy_from_slice(&tag);
        Ok(())
    }

    /// Checks a datagram that came from `from`'s address: adjacent, tag verified under a
    /// key in use, counter new. On success the packet is `datagram[..len - LINK_OVERHEAD]`.
    pub fn open(&mut self, now_us: u64, from: NodeId, datagram: &[u8]) -> Result<(), DropReason> {
        let at = datagram
            .len()
            .checked_sub(LINK_OVERHEAD)
            .ok_or(DropReason::Malformed)?;
        if !self.accept_from.contains(&from) {
            return Err(DropReason::NotAdjacent);
        }
        let flags = datagram[at];
        let phase = if flags & PARITY_BIT != 0 {
            KeyPhase::Odd
        } else {
            KeyPhase::Even
        };
        let Some(epoch) = self.schedule.live(now_us)[phase.index()] else {
            return Err(DropReason::LinkAuth);
        };
        let counter = u64::from_le_bytes(datagram[at + 1..at + 9].try_into().unwrap_or_default());
        let window = (from, flags & !PARITY_BIT);
        if self
            .windows
            .get(&window)
            .is_some_and(|w| !w.may_accept(counter))
        {
            return Err(DropReason::LinkReplay);
        }
        let me = self.me;
        let neighbour = self
            .neighbours
            .get_mut(&from)
            .ok_or(DropReason::NotAdjacent)?;
        let key = key_for(&mut neighbour.receive, &neighbour.secret, epoch, from, me);
        if self.authenticate
            && !key.verify(counter, flags, &datagram[..at + 9], &datagram[at + 9..])
        {
            return Err(DropReason::LinkAuth);
        }
        if !self.windows.entry(window).or_default().accept(counter) {
            return Err(DropReason::LinkReplay);
        }
        neighbour.heard_us = now_us;
        Ok(())
    }

    /// Every node this one takes datagrams from, and when one of its datagrams last
    /// verified (µs; 0: never): whether each link in is alive.
    pub fn heard(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.accept_from
            .iter()
            .map(|id| (*id, self.neighbours.get(id).map_or(0, |p| p.heard_us)))
    }

    /// Takes what `old` (the links before a reload) heard of the neighbours both have.
    pub fn keep_heard(&mut self, old: &Links) {
        for (id, neighbour) in &mut self.neighbours {
            if let Some(o) = old.neighbours.get(id) {
                neighbour.heard_us = o.heard_us;
            }
        }
    }
}

/// The key of `epoch` under its parity, derived when that parity holds another epoch's.
fn key_for<'a>(
    by_parity: &'a mut [Option<EpochKey>; 2],
    secret: &LinkSecret,
    epoch: u64,
    from: NodeId,
    to: NodeId,
) -> &'a LinkKey {
    let held = &mut by_parity[KeyPhase::of_epoch(epoch).index()];
    if held.as_ref().is_none_or(|k| k.epoch != epoch) {
        *held = Some(EpochKey {
            epoch,
            key: secret.key(epoch, from, to),
        });
    }
    match held {
        Some(k) => &k.key,
        None => unreachable!("filled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::SecretKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const S: u64 = 1_000_000;
    const PACKET: usize = 100;

    /// Two layers of one mix each (1, 2) and a provider (100); epochs of 60 s, 2 s grace.
    fn network() -> (Topology, Vec<SessionSecret>) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let keys: Vec<SessionSecret> = (0..3).map(|_| SessionSecret::generate(&mut rng)).collect();
        let node = |id: u64, role: &str, k: &SessionSecret, rng: &mut ChaCha20Rng| {
            let epoch_key = hex::encode(SecretKey::generate(rng).public_key().to_bytes());
            format!(
                "[[nodes]]\nid = {id}\n{role}\naddress = \"127.0.0.1:{}\"\nfirst_epoch = 0\n\
                 epoch_keys = [\"{epoch_key}\"]\nsession_key = \"{}\"\n",
                9000 + id,
                hex::encode(k.public().0)
            )
        };
        let text = format!(
            "[network]\nlayers = 2\nmu_per_s = 1.0\nlambda_payload_per_s = 1.0\n\
             lambda_loop_per_s = 1.0\nlambda_drop_per_s = 1.0\nlambda_mix_loop_per_s = 1.0\n\
             poll_size = 4\npoll_rate_per_s = 1.0\nepoch_s = 60\nepoch_grace_s = 2\n{}{}{}",
            node(1, "role = \"mix\"\nlayer = 1", &keys[0], &mut rng),
            node(2, "role = \"mix\"\nlayer = 2", &keys[1], &mut rng),
            node(100, "role = \"provider\"", &keys[2], &mut rng),
        );
        (Topology::from_toml(&text).unwrap(), keys)
    }

    fn links(t: &Topology, keys: &[SessionSecret], id: u64, shard: usize) -> Links {
        let i = match id {
            1 => 0,
            2 => 1,
            _ => 2,
        };
        Links::new(t, NodeId(id), &keys[i], shard).unwrap()
    }

    fn datagram(fill: u8) -> Vec<u8> {
        vec![fill; PACKET + LINK_OVERHEAD]
    }

    #[test]
    fn a_datagram_opens_once_and_only_from_its_sender() {
        let (t, keys) = network();
        let (mut p, mut m1, mut m2) = (
            links(&t, &keys, 100, 0),
            links(&t, &keys, 1, 0),
            links(&t, &keys, 2, 5),
        );
        let mut d = datagram(7);
        p.seal(10 * S, NodeId(1), &mut d).unwrap();
        // Claimed to come from mix 2 (a forged source): mix 2 is not adjacent to mix 1's
        // input, so not even the tag is checked.
        assert_eq!(m1.open(10 * S, NodeId(2), &d), Err(DropReason::NotAdjacent));
        assert_eq!(m1.open(10 * S, NodeId(100), &d), Ok(()));
        assert_eq!(
            m1.open(10 * S, NodeId(100), &d),
            Err(DropReason::LinkReplay)
        );
        // Mix 2 seals for the provider; replayed to mix 1 claiming the provider's address.
        let mut e = datagram(8);
        m2.seal(10 * S, NodeId(100), &mut e).unwrap();
        assert_eq!(m1.open(10 * S, NodeId(100), &e), Err(DropReason::LinkAuth));
        // One changed byte anywhere.
        let mut f = datagram(9);
        p.seal(10 * S, NodeId(1), &mut f).unwrap();
        f[3] ^= 1;
        assert_eq!(m1.open(10 * S, NodeId(100), &f), Err(DropReason::LinkAuth));
        // Nobody sends backwards: mix 1 to the provider, mix 2 to mix 1.
        assert_eq!(
            m1.seal(10 * S, NodeId(100), &mut datagram(0)),
            Err(DropReason::NotAdjacent)
        );
        assert_eq!(
            m2.seal(10 * S, NodeId(1), &mut datagram(0)),
            Err(DropReason::NotAdjacent)
        );
    }

    /// A link counts as heard only when a datagram on it verifies: a forged, replayed or
    /// altered one changes nothing; and a reload keeps what was heard.
    #[test]
    fn a_link_is_heard_only_when_a_datagram_verifies() {
        let (t, keys) = network();
        let (mut p, mut m1, mut m2) = (
            links(&t, &keys, 100, 0),
            links(&t, &keys, 1, 0),
            links(&t, &keys, 2, 0),
        );
        let heard = |l: &Links| l.heard().collect::<Vec<_>>();
        assert_eq!(heard(&m1), vec![(NodeId(100), 0)], "never yet");
        let mut forged = datagram(3);
        m2.seal(5 * S, NodeId(100), &mut forged).unwrap();
        assert!(m1.open(5 * S, NodeId(100), &forged).is_err());
        assert_eq!(heard(&m1), vec![(NodeId(100), 0)]);
        let mut d = datagram(7);
        p.seal(10 * S, NodeId(1), &mut d).unwrap();
        m1.open(10 * S, NodeId(100), &d).unwrap();
        assert_eq!(heard(&m1), vec![(NodeId(100), 10 * S)]);
        assert!(m1.open(12 * S, NodeId(100), &d).is_err(), "a replay");
        assert_eq!(heard(&m1), vec![(NodeId(100), 10 * S)]);
        let mut fresh = links(&t, &keys, 1, 0);
        fresh.keep_heard(&m1);
        assert_eq!(heard(&fresh), vec![(NodeId(100), 10 * S)]);
    }

    #[test]
    fn keys_follow_the_epochs_with_their_grace() {
        let (t, keys) = network();
        let mut p = links(&t, &keys, 100, 3);
        let mut m1 = links(&t, &keys, 1, 0);
        // Sealed at 59.5 s (epoch 0), arriving at 61 s: epoch 0 is still in its grace.
        let mut late = datagram(1);
        p.seal(59 * S + S / 2, NodeId(1), &mut late).unwrap();
        assert_eq!(m1.open(61 * S, NodeId(100), &late), Ok(()));
        // Sealed in epoch 0 and arriving after its grace (or the receiver's clock that far
        // ahead): no key of that epoch is in use, so the tag cannot verify.
        let mut stale = datagram(2);
        p.seal(59 * S + S / 2 + 1, NodeId(1), &mut stale).unwrap();
        assert_eq!(
            m1.open(63 * S, NodeId(100), &stale),
            Err(DropReason::LinkAuth)
        );
        // A sender whose clock is 1 s ahead, across the boundary: epoch 1 is in use early.
        let mut early = datagram(3);
        p.seal(60 * S + S / 2, NodeId(1), &mut early).unwrap();
        assert_eq!(m1.open(59 * S + S / 2, NodeId(100), &early), Ok(()));
    }

    #[test]
    fn each_sending_shard_has_a_window_of_its_own() {
        let (t, keys) = network();
        let (mut a, mut b) = (links(&t, &keys, 100, 0), links(&t, &keys, 100, 1));
        let mut m1 = links(&t, &keys, 1, 0);
        // Shard 0 runs far ahead; shard 1's older counters still open.
        let mut ahead = datagram(1);
        for _ in 0..100_000 {
            a.seal(10 * S, NodeId(1), &mut ahead).unwrap();
        }
        let mut behind = datagram(2);
        b.seal(10 * S, NodeId(1), &mut behind).unwrap();
        assert_eq!(m1.open(10 * S, NodeId(100), &ahead), Ok(()));
        assert_eq!(m1.open(10 * S, NodeId(100), &behind), Ok(()));
    }
}
