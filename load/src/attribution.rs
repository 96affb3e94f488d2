//! Who lost what. Every load tool that reports loss says at which side each lost packet
//! went: the generator's own (its sockets' receive buffers overflowed, a send failed), the
//! node's (a drop counter, its sockets' kernel drops, an injected fault), or neither side's
//! counters (in flight when the run ended, lost while the node was dead, or a node whose
//! metrics were not given). A generator that falls behind its own receiving must not show
//! up as a lossy node: that is what a perf engineer would chase for nothing.
//!
//! The node's side comes from its Prometheus counters, scraped before and after (or every
//! second, across a restart): [`NodeCounters`].

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use serde::Serialize;

use crate::scrape::{label, samples};

/// A node's counters over a run: the increase of each between scrapes.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams its shards received and sent.
    pub packets_in: u64,
    pub packets_out: u64,
    /// Its drops by reason (`loopix_packets_dropped_total`), summed over shards.
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the kernel dropped at its sockets (receive buffers full).
    pub kernel_drops: u64,
    /// Outgoing datagrams dropped by fault injection (`[faults]`).
    pub fault_drops: u64,
    /// Sends that failed.
    pub socket_errors: u64,
    /// Datagrams that reached the wrong shard and could not be passed on.
    pub strays_dropped: u64,
    /// Scrapes after which a counter had gone down: the node restarted, and what it
    /// counted between the last scrape before and its death is not here.
    pub restarts: u64,
}

impl NodeCounters {
    /// The increase from scrape `before` to `after`.
    pub fn between(before: &str, after: &str) -> Self {
        let mut c = Self::default();
        c.add(before, after);
        c
    }

    /// Adds the increase from scrape `before` to `after`, as Prometheus' `increase` does: a
    /// series that went down was reset by a restart, and counts from zero.
    pub fn add(&mut self, before: &str, after: &str) {
        let earlier: HashMap<(&str, &str), f64> = samples(before)
            .map(|(name, labels, v)| ((name, labels), v))
            .collect();
        let mut reset = false;
        for (name, labels, v) in samples(after) {
            let counter = match name {
                "loopix_packets_in_total" => &mut self.packets_in,
                "loopix_packets_out_total" => &mut self.packets_out,
                "loopix_kernel_drops_total" => &mut self.kernel_drops,
                "loopix_fault_drops_total" => &mut self.fault_drops,
                "loopix_socket_errors_total" => &mut self.socket_errors,
                "loopix_strays_dropped_total" => &mut self.strays_dropped,
                "loopix_packets_dropped_total" => {
                    let reason = label(labels, "reason").unwrap_or("?").to_string();
                    self.drops.entry(reason).or_default()
                }
                _ => continue,
            };
            let was = earlier.get(&(name, labels)).copied().unwrap_or(0.0);
            let increase = if v >= was {
                v - was
            } else {
                reset = true;
                v
            };
            *counter += increase as u64;
        }
        self.drops.retain(|_, n| *n > 0);
        self.restarts += u64::from(reset);
    }

    /// Everything the node counted as not passed on.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum::<u64>()
            + self.kernel_drops
            + self.fault_drops
            + self.socket_errors
            + self.strays_dropped
    }
}

/// What the generator's own side lost.
#[derive(Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorCounts {
    /// Datagrams the kernel dropped at the generator's sockets during the run.
    pub kernel_drops: u64,
    /// Sends that failed.
    pub send_errors: u64,
}

/// Every lost packet of a run, by side. `lost = generator + node + unattributed`.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct LossBySide {
    pub lost: u64,
    /// Lost at the generator: its own kernel drops and failed sends.
    pub generator: u64,
    /// Lost at the node: what its counters dropped, less the refusals the generator asked
    /// for.
    pub node: u64,
    /// Lost where neither side counted it.
    pub unattributed: u64,
    pub generator_counts: GeneratorCounts,
    /// Datagrams sent to be refused (replays, junk): that many of the node's drops are
    /// the node doing its job, not loss.
    pub refusals_asked: u64,
    /// The node's counters over the run (`None`: no metrics address given, or it did not
    /// answer).
    pub node_counters: Option<NodeCounters>,
}

impl LossBySide {
    /// Attributes `lost` packets: first to the generator, as far as its own counts go
    /// (what it dropped never reached the node's counters), then to the node, as far as
    /// its drops beyond `refusals_asked` go; the rest to neither.
    pub fn attribute(
        lost: u64,
        generator_counts: GeneratorCounts,
        node_counters: Option<NodeCounters>,
        refusals_asked: u64,
    ) -> Self {
        let generator = (generator_counts.kernel_drops + generator_counts.send_errors).min(lost);
        let node = node_counters
            .as_ref()
            .map_or(0, |n| n.dropped().saturating_sub(refusals_asked))
            .min(lost - generator);
        Self {
            lost,
            generator,
            node,
            unattributed: lost - generator - node,
            generator_counts,
            refusals_asked,
            node_counters,
        }
    }

    /// One line for a tool's text output.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "lost {}: {} at the generator ({} kernel drops, {} failed sends), {} at the node, {} unattributed",
            self.lost,
            self.generator,
            self.generator_counts.kernel_drops,
            self.generator_counts.send_errors,
            self.node,
            self.unattributed
        );
        if let Some(n) = &self.node_counters {
            s += &format!(
                "; node in {} out {}, kernel drops {}",
                n.packets_in, n.packets_out, n.kernel_drops
            );
            for (reason, count) in &n.drops {
                s += &format!(", {reason} {count}");
            }
            if n.restarts > 0 {
                s += &format!(", restarted {} time(s)", n.restarts);
            }
        }
        s
    }
}

/// Datagrams the kernel has dropped at these sockets so far (0 for one it says nothing
/// of): read before and after a run, the difference is the generator's own receive loss.
pub fn own_kernel_drops<'a>(sockets: impl IntoIterator<Item = &'a UdpSocket>) -> u64 {
    sockets
        .into_iter()
        .filter_map(|s| loopix_runtime::socket_stats::kernel_drops(s.as_raw_fd()))
        .sum()
}

/// The node's counters over a run from two optional scrapes of its metrics at `addr`.
pub fn node_counters(before: Option<&str>, after: Option<&str>) -> Option<NodeCounters> {
    Some(NodeCounters::between(before?, after?))
}

/// Scrapes `addr` every `every` until `stop`, adding up the node's counters across
/// restarts (a dead node's scrapes are skipped; its first answer after is counted from
/// the last one before). For runs that restart the node on purpose.
pub fn watch_node(
    addr: SocketAddr,
    every: std::time::Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<NodeCounters> {
    let mut last = crate::scrape::scrape(addr)?;
    let mut counters = NodeCounters::default();
    let mut done = false;
    while !done {
        done = stop.load(std::sync::atomic::Ordering::SeqCst);
        if !done {
            std::thread::sleep(every);
        }
        if let Some(now) = crate::scrape::scrape(addr) {
            counters.add(&last, &now);
            last = now;
        }
    }
    Some(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE loopix_packets_in_total counter
loopix_packets_in_total{shard=\"0\"} 100
loopix_packets_in_total{shard=\"1\"} 50
loopix_packets_out_total{shard=\"0\"} 90
loopix_packets_dropped_total{shard=\"0\",reason=\"replay\"} 3
loopix_kernel_drops_total{shard=\"0\"} 0
";

    const AFTER: &str = "\
loopix_packets_in_total{shard=\"0\"} 300
loopix_packets_in_total{shard=\"1\"} 150
loopix_packets_out_total{shard=\"0\"} 260
loopix_packets_dropped_total{shard=\"0\",reason=\"replay\"} 13
loopix_packets_dropped_total{shard=\"1\",reason=\"replay\"} 2
loopix_packets_dropped_total{shard=\"1\",reason=\"stale\"} 0
loopix_kernel_drops_total{shard=\"0\"} 5
loopix_fault_drops_total{kind=\"dropped\"} 7
";

    #[test]
    fn counters_are_the_increase_per_series_summed() {
        let c = NodeCounters::between(BEFORE, AFTER);
        assert_eq!((c.packets_in, c.packets_out), (300, 170));
        assert_eq!(c.drops, BTreeMap::from([("replay".to_string(), 12)]));
        assert_eq!((c.kernel_drops, c.fault_drops, c.restarts), (5, 7, 0));
        assert_eq!(c.dropped(), 24);
    }

    #[test]
    fn a_counter_that_went_down_was_reset_by_a_restart() {
        let mut c = NodeCounters::between(BEFORE, AFTER);
        // The node restarted: its counters begin again from zero.
        let restarted = "loopix_packets_in_total{shard=\"0\"} 40\n\
                         loopix_packets_dropped_total{shard=\"0\",reason=\"replay\"} 1\n";
        c.add(AFTER, restarted);
        assert_eq!((c.packets_in, c.restarts), (340, 1));
        assert_eq!(c.drops["replay"], 13);
    }

    /// The generator's own drops are never the node's: a run whose generator overflowed
    /// its receive buffer, against a node that dropped nothing, puts every lost packet on
    /// the generator.
    #[test]
    fn the_generators_own_loss_is_never_the_nodes() {
        let quiet_node = NodeCounters {
            packets_in: 1_000,
            packets_out: 1_000,
            ..NodeCounters::default()
        };
        let gen_drops = GeneratorCounts {
            kernel_drops: 300,
            send_errors: 0,
        };
        let l = LossBySide::attribute(300, gen_drops, Some(quiet_node.clone()), 0);
        assert_eq!((l.generator, l.node, l.unattributed), (300, 0, 0));
        // The node's refusals of replays it was sent are not loss either.
        let mut refusing = quiet_node;
        refusing.drops.insert("replay".into(), 40);
        let l = LossBySide::attribute(310, gen_drops, Some(refusing.clone()), 40);
        assert_eq!((l.generator, l.node, l.unattributed), (300, 0, 10));
        // A node that dropped some packets of its own gets those.
        refusing.drops.insert("stale".into(), 10);
        let l = LossBySide::attribute(310, gen_drops, Some(refusing), 40);
        assert_eq!((l.generator, l.node, l.unattributed), (300, 10, 0));
        // Without the node's counters, nothing is put on it.
        let l = LossBySide::attribute(320, GeneratorCounts::default(), None, 0);
        assert_eq!((l.generator, l.node, l.unattributed), (0, 0, 320));
    }
}
