//! Real messages a run gave its clients, and what became of each: delivered (once, to
//! the right client, intact), lost, or still in flight when the run ended.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use loopix_core::roles::client::ClientEvent;
use loopix_crypto::NodeId;
use loopix_runtime::client_driver::{ClientOutput, RunningClient};

/// Real messages in flight and what became of them.
#[derive(Default)]
pub(crate) struct Traffic {
    /// Queued messages: sender, recipient, queue time, content.
    sent: BTreeMap<u64, (NodeId, NodeId, Instant, Vec<u8>)>,
    delivered: BTreeMap<u64, u32>,
    misdelivered: u64,
    /// Each delivered message's latency, ms, by message.
    latencies_ms: BTreeMap<u64, f64>,
    /// Messages given to a client whose queue answer has not come yet, in order.
    pending_queue: BTreeMap<NodeId, VecDeque<(NodeId, Instant, Vec<u8>)>>,
    /// Fragments of each message that have left their sender, and when the last did.
    left: BTreeMap<u64, (u16, u16, Instant)>,
    /// When the run stopped waiting for deliveries.
    pub(crate) ended: Option<Instant>,
    /// A node that died while the network ran: the run stops there.
    pub(crate) node_died: Option<String>,
    /// Messages their senders heard acknowledged, and gave up.
    acked: BTreeSet<u64>,
    gave_up: BTreeSet<u64>,
    /// From the clients' final counters.
    fragments_sent: u64,
    retransmitted: u64,
    acks_sent: u64,
    acks_expired: u64,
    /// Every client's recorded departure times, µs (for the Poisson test).
    pub(crate) departures: Vec<Vec<u64>>,
}

/// What became of a run's real messages. `sent = delivered + lost + in_flight`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Judged {
    /// Messages given to the clients (and queued by them).
    pub sent: u64,
    pub delivered: u64,
    /// Missing, though they left their senders long enough before the end to have
    /// arrived (with acks: given up by their senders).
    pub lost: u64,
    /// Missing and not yet judged: they left too late to have arrived, or (with acks) are
    /// still being sent again, or never left their senders (`unsent`).
    pub in_flight: u64,
    /// Of `in_flight`: never (completely) left their senders.
    pub unsent: u64,
    /// Of those: given more than the drain and the late window before the end (stuck at
    /// their senders: no session with their provider, or a network that does not run).
    pub stuck: u64,
    /// Delivered, but later than the late window after they were given.
    pub late: u64,
    pub duplicates: u64,
    pub misdelivered: u64,
    pub acked: u64,
    /// Given up by their senders (a fragment out of attempts); counted in `lost`.
    pub gave_up: u64,
    pub retransmitted: u64,
    pub acks_sent: u64,
    pub acks_expired: u64,
    pub fragments_sent: u64,
    /// Delivered latencies (given -> delivered), ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Per sender: (sent, delivered).
    pub per_sender: BTreeMap<NodeId, (u64, u64)>,
}

impl Traffic {
    /// Message `content` given to client `from` for `to` at `at`.
    pub(crate) fn queue(&mut self, from: NodeId, to: NodeId, at: Instant, content: Vec<u8>) {
        self.pending_queue
            .entry(from)
            .or_default()
            .push_back((to, at, content));
    }

    pub(crate) fn sent_count(&self) -> usize {
        self.sent.len()
    }

    pub(crate) fn delivered_count(&self) -> usize {
        self.delivered.len()
    }

    /// Every message delivered and (with acks) every one acknowledged or given up.
    pub(crate) fn settled(&self, acks: bool) -> bool {
        self.delivered.len() == self.sent.len()
            && (!acks || self.acked.len() + self.gave_up.len() >= self.sent.len())
    }

    /// Takes a client's outputs: queue answers, departures, deliveries, acks.
    pub(crate) fn collect(&mut self, c: &RunningClient) {
        while let Ok(out) = c.output.try_recv() {
            self.take(c.id, out);
        }
    }

    fn take(&mut self, client: NodeId, out: ClientOutput) {
        match out {
            ClientOutput::Queued(Ok(msg_id)) => {
                if let Some((to, at, content)) = self
                    .pending_queue
                    .get_mut(&client)
                    .and_then(VecDeque::pop_front)
                {
                    self.sent.insert(msg_id, (client, to, at, content));
                }
            }
            ClientOutput::Queued(Err(_)) => {
                if let Some(q) = self.pending_queue.get_mut(&client) {
                    q.pop_front();
                }
            }
            ClientOutput::Event(ClientEvent::FragmentSent { msg_id, count, .. }) => {
                let entry = self
                    .left
                    .entry(msg_id)
                    .or_insert((0, count, Instant::now()));
                entry.0 += 1;
                entry.2 = Instant::now();
            }
            ClientOutput::Event(ClientEvent::Delivered {
                msg_id, message, ..
            }) => match self.sent.get(&msg_id) {
                Some((_, to, at, content)) if *to == client && *content == message => {
                    let n = self.delivered.entry(msg_id).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        self.latencies_ms
                            .insert(msg_id, at.elapsed().as_secs_f64() * 1e3);
                    }
                }
                _ => self.misdelivered += 1,
            },
            ClientOutput::Event(ClientEvent::Acked { msg_id, .. }) => {
                self.acked.insert(msg_id);
            }
            ClientOutput::Event(ClientEvent::GaveUp { msg_id, .. }) => {
                self.gave_up.insert(msg_id);
            }
            ClientOutput::Departures(times) => self.departures.push(times),
            ClientOutput::Stopped(stats) => {
                self.fragments_sent += stats.sent_real;
                self.retransmitted += stats.retransmitted;
                self.acks_sent += stats.acks_sent;
                self.acks_expired += stats.acks_expired;
            }
            _ => {}
        }
    }

    /// Judges every message: a missing one that left its sender more than `window_s`
    /// before the end is lost (with acks, only once its sender gave it up); `drain_s` is
    /// how long the run waited after the last message was given.
    pub(crate) fn judge(&self, window_s: f64, drain_s: f64, acks: bool) -> Judged {
        let ended = self.ended.unwrap_or_else(Instant::now);
        let mut j = Judged {
            sent: self.sent.len() as u64,
            delivered: self.delivered.len() as u64,
            duplicates: self.delivered.values().map(|&n| u64::from(n - 1)).sum(),
            misdelivered: self.misdelivered,
            acked: self.acked.len() as u64,
            retransmitted: self.retransmitted,
            acks_sent: self.acks_sent,
            acks_expired: self.acks_expired,
            fragments_sent: self.fragments_sent,
            ..Judged::default()
        };
        for (id, (from, _, queued, _)) in &self.sent {
            let sender = j.per_sender.entry(*from).or_default();
            sender.0 += 1;
            if let Some(&ms) = self.latencies_ms.get(id) {
                sender.1 += 1;
                j.late += u64::from(ms > window_s * 1e3);
                continue;
            }
            if acks && self.gave_up.contains(id) {
                j.lost += 1;
                j.gave_up += 1;
                continue;
            }
            match left_whole(&self.left, id) {
                None => {
                    j.in_flight += 1;
                    j.unsent += 1;
                    j.stuck +=
                        u64::from(ended.duration_since(*queued).as_secs_f64() > drain_s + window_s);
                }
                // With acks a sender knows: one it has not given up is still being sent.
                Some(_) if acks => j.in_flight += 1,
                Some(last) if ended.duration_since(last).as_secs_f64() < window_s => {
                    j.in_flight += 1;
                }
                Some(_) => j.lost += 1,
            }
        }
        j.latencies_ms = self.latencies_ms.values().copied().collect();
        j.latencies_ms.sort_by(f64::total_cmp);
        j
    }
}

/// When the last fragment of message `id` left its sender, if every one has.
fn left_whole(left: &BTreeMap<u64, (u16, u16, Instant)>, id: &u64) -> Option<Instant> {
    left.get(id)
        .and_then(|&(n, count, last)| (n >= count).then_some(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn given(t: &mut Traffic, id: u64, from: u64, to: u64, at: Instant) {
        t.sent.insert(
            id,
            (NodeId(from), NodeId(to), at, id.to_le_bytes().to_vec()),
        );
    }

    #[test]
    fn missing_messages_are_told_apart_by_when_they_left() {
        let end = Instant::now() + Duration::from_secs(100);
        let mut t = Traffic {
            ended: Some(end),
            ..Traffic::default()
        };
        let given_at = end - Duration::from_secs(90);
        for id in 1..=5 {
            given(&mut t, id, 10, 11, given_at);
        }
        t.left = BTreeMap::from([
            (1, (2, 2, end - Duration::from_secs(30))), // left long ago: lost
            (2, (1, 1, end - Duration::from_secs(1))),  // left just before the end: in flight
            (3, (1, 2, end - Duration::from_secs(50))), // a fragment never left: unsent
            (5, (1, 1, end - Duration::from_secs(60))), // delivered
        ]);
        t.delivered.insert(5, 2); // delivered twice
        t.latencies_ms.insert(5, 30_000.0); // later than the window
        // 4: nothing left at all.
        let j = t.judge(5.0, 20.0, false);
        assert_eq!((j.sent, j.delivered, j.lost, j.in_flight), (5, 1, 1, 3));
        assert_eq!(j.sent, j.delivered + j.lost + j.in_flight);
        assert_eq!(
            (j.unsent, j.stuck),
            (2, 2),
            "3 and 4, given 90 s before the end"
        );
        assert_eq!((j.duplicates, j.late), (1, 1));
        assert_eq!(j.per_sender[&NodeId(10)], (5, 1));
    }

    #[test]
    fn with_acks_a_missing_message_is_lost_only_once_given_up() {
        let end = Instant::now() + Duration::from_secs(100);
        let mut t = Traffic {
            ended: Some(end),
            ..Traffic::default()
        };
        for id in 1..=2 {
            given(&mut t, id, 10, 11, end - Duration::from_secs(90));
            t.left.insert(id, (1, 1, end - Duration::from_secs(80)));
        }
        t.gave_up.insert(2);
        let j = t.judge(5.0, 20.0, true);
        assert_eq!((j.lost, j.gave_up, j.in_flight), (1, 1, 1));
    }

    #[test]
    fn a_delivery_to_the_wrong_client_or_with_other_content_is_misdelivered() {
        let mut t = Traffic::default();
        given(&mut t, 1, 10, 11, Instant::now());
        let delivered = |message: Vec<u8>| {
            ClientOutput::Event(ClientEvent::Delivered {
                msg_id: 1,
                message,
                at_us: 0,
            })
        };
        t.take(NodeId(12), delivered(1u64.to_le_bytes().to_vec()));
        t.take(NodeId(11), delivered(b"other".to_vec()));
        assert_eq!((t.misdelivered, t.delivered_count()), (2, 0));
        t.take(NodeId(11), delivered(1u64.to_le_bytes().to_vec()));
        assert_eq!(t.delivered_count(), 1);
    }
}
