//! Whether a node takes a network document (or a re-read topology file): the decision the
//! node's shell used to make on its own, here so that every driver (the runtime, the
//! simulator, a test) reaches the same one.
//!
//! A node takes a fresh topology if it still lists the node, under the session key the node
//! holds, with epoch keys its seed gives, and if the network's parameters are the ones its
//! filters, wheels and links were sized for; anything else is refused with the reason, and
//! the node keeps what it has.

use loopix_crypto::{EpochSeed, NodeId, SessionPublic};

use crate::network::topology::{Network, NodeEntry, Topology};

/// What the node's keys look like in a topology it can take ([`check_node_keys`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCheck {
    /// The epoch now, and how long until the next starts.
    pub current: u64,
    pub until_next_us: u64,
    /// The last epoch the topology publishes a key of this node for.
    pub last_published: u64,
    /// Things an operator must act on soon (keys about to run out).
    pub warnings: Vec<String>,
}

/// Why a node refuses a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It does not list the node.
    NotListed(NodeId),
    /// It lists another session key for the node than the one it holds.
    SessionKey(NodeId),
    /// The node's seed starts after an epoch in use: that key is gone.
    KeyGone { seed_epoch: u64, in_use: u64 },
    /// It publishes a key for `epoch` that the node's seed does not give.
    EpochKey { node: NodeId, epoch: u64 },
    /// It changes network parameters the node was built for (needs a restart).
    NetworkChanged(Vec<&'static str>),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotListed(id) => write!(f, "it does not list node {}", id.0),
            Self::SessionKey(id) => write!(
                f,
                "it lists another session key for node {} than the key file's",
                id.0
            ),
            Self::KeyGone { seed_epoch, in_use } => write!(
                f,
                "the key file starts at epoch {seed_epoch}, after epoch {in_use}, which is in \
                 use: its key is gone"
            ),
            Self::EpochKey { node, epoch } => write!(
                f,
                "its key for epoch {epoch} is not the one the topology publishes for node {}",
                node.0
            ),
            Self::NetworkChanged(what) => write!(
                f,
                "it changes the network's parameters ({}), which needs a restart",
                what.join(", ")
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// The network parameters that differ between `a` and `b` and that only a restart applies
/// (filters, wheels, links and pools were sized for them); the rest (rates a node does not
/// size anything by) change with a document.
pub fn network_changes(a: &Network, b: &Network) -> Vec<&'static str> {
    let shape = |n: &Network| (n.layers, n.mu_per_s, n.lambda_mix_loop_per_s, n.poll_size);
    [
        (
            "network.epoch_s/epoch_start/epoch_grace_s",
            a.epochs != b.epochs,
        ),
        ("network.payload_bytes", a.params != b.params),
        (
            "network.layers/mu_per_s/lambda_mix_loop_per_s/poll_size",
            shape(a) != shape(b),
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Checks that `seed` gives every key `topology` publishes for `node` from the seed's
/// epoch on, and that it still holds the keys in use at `now_us`.
pub fn check_node_keys(
    topology: &Topology,
    node: &NodeEntry,
    seed: &EpochSeed,
    now_us: u64,
) -> Result<KeyCheck, Refused> {
    let epochs = &topology.network.epochs;
    let oldest = epochs.oldest_live(now_us);
    if seed.epoch() > oldest {
        return Err(Refused::KeyGone {
            seed_epoch: seed.epoch(),
            in_use: oldest,
        });
    }
    let mut last_published = 0;
    for (epoch, published) in node.epoch_keys.iter() {
        last_published = epoch;
        let Some(held) = seed.secret_key(epoch) else {
            continue;
        };
        if held.public_key() != published {
            return Err(Refused::EpochKey {
                node: node.id,
                epoch,
            });
        }
    }
    let current = epochs.epoch_at(now_us);
    let mut warnings = Vec::new();
    for (epoch, what) in [(current, "the current"), (current + 1, "the next")] {
        if node.epoch_keys.get(epoch).is_none() {
            warnings.push(format!(
                "the topology publishes no key of node {} for {what} epoch ({epoch}): \
                 senders cannot reach it then; publish more with `loopix keygen --publish`",
                node.id.0
            ));
        }
    }
    Ok(KeyCheck {
        current,
        until_next_us: epochs.until_next_us(now_us),
        last_published,
        warnings,
    })
}

/// Whether node `me` (holding `seed` and the session key `session`), running on
/// `current`, takes `fresh` at `now_us`: what its keys look like there, or why not.
pub fn take_document(
    current: &Topology,
    fresh: &Topology,
    me: NodeId,
    seed: &EpochSeed,
    session: SessionPublic,
    now_us: u64,
) -> Result<KeyCheck, Refused> {
    let node = fresh.node(me).ok_or(Refused::NotListed(me))?;
    if node.session_key != Some(session) {
        return Err(Refused::SessionKey(me));
    }
    let changed = network_changes(&current.network, &fresh.network);
    if !changed.is_empty() {
        return Err(Refused::NetworkChanged(changed));
    }
    check_node_keys(fresh, node, seed, now_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::topology::EpochKeys;
    use crate::network::topology::tests::sample;
    use loopix_crypto::SessionSecret;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// The sample topology, its mixes (nodes 1 and 2) publishing epochs 0..4 of seeds and
    /// session keys this returns.
    fn two_node_topology() -> (Topology, Vec<EpochSeed>, Vec<SessionSecret>) {
        let mut t = Topology::from_toml(&sample()).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (mut seeds, mut sessions) = (Vec::new(), Vec::new());
        for i in 0..2 {
            let seed = EpochSeed::generate(&mut rng, 0);
            let session = SessionSecret::generate(&mut rng);
            let keys = (0..4)
                .map(|e| seed.secret_key(e).unwrap().public_key())
                .collect();
            t.nodes[i].epoch_keys = EpochKeys::new(0, keys);
            t.nodes[i].session_key = Some(session.public());
            seeds.push(seed);
            sessions.push(session);
        }
        (t, seeds, sessions)
    }

    #[test]
    fn a_node_takes_only_a_document_that_lists_it_with_its_keys_on_its_network() {
        let (topology, seeds, sessions) = two_node_topology();
        let me = topology.nodes[0].id;
        let (seed, session) = (&seeds[0], sessions[0].public());
        let now = topology.network.epochs.start_of(1) + 1;
        let take = |fresh: &Topology| take_document(&topology, fresh, me, seed, session, now);
        let taken = take(&topology).expect("its own topology");
        assert_eq!(taken.current, 1);
        assert!(taken.last_published >= 1);

        let mut without = topology.clone();
        without.nodes.retain(|n| n.id != me);
        assert_eq!(take(&without), Err(Refused::NotListed(me)));

        let mut other_session = topology.clone();
        other_session.nodes[0].session_key =
            Some(SessionSecret::generate(&mut ChaCha20Rng::seed_from_u64(99)).public());
        assert_eq!(take(&other_session), Err(Refused::SessionKey(me)));

        // Another node's published keys under this node's id.
        let mut other_keys = topology.clone();
        other_keys.nodes[0].epoch_keys = topology.nodes[1].epoch_keys.clone();
        assert!(matches!(take(&other_keys), Err(Refused::EpochKey { .. })));

        let mut faster = topology.clone();
        faster.network.mu_per_s *= 2.0;
        let refused = take(&faster);
        assert!(
            matches!(&refused, Err(Refused::NetworkChanged(what)) if what.len() == 1),
            "{refused:?}"
        );
        // Rates a node sizes nothing by change with a document.
        let mut busier = topology.clone();
        busier.network.lambda_payload_per_s *= 2.0;
        assert!(take(&busier).is_ok());

        // A seed already past an epoch in use.
        let mut later = seed.clone();
        later.advance_to(3);
        assert!(matches!(
            take_document(&topology, &topology, me, &later, session, now),
            Err(Refused::KeyGone { .. })
        ));
    }
}
