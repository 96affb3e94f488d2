//! The chaos sweep: seeded runs in which nodes crash and restart, links partition and heal,
//! and replays are aimed at restarted mixes, each checked against the invariants (see
//! `loopix_sim::chaos`). And the mutations it must catch: a node that skips its journal
//! writes forwards replays after a restart; a network whose documents stop loses messages.

use loopix_sim::chaos::{ChaosConfig, run, sweep};

#[test]
fn a_sweep_of_crashes_partitions_and_replays_breaks_no_invariant() {
    let first = loopix_sim::seed_from_env(1);
    let started = std::time::Instant::now();
    let s = sweep(first, 100, &ChaosConfig::default());
    eprintln!("{s} in {:?}", started.elapsed());
    assert!(
        s.failures.is_empty(),
        "failing seeds: {:?}",
        s.failures
            .iter()
            .map(|(seed, v)| format!("seed {seed}: {v}"))
            .collect::<Vec<_>>()
    );
    // The sweep did break things.
    assert!(
        s.totals.crashes >= 100 && s.totals.restarts >= s.totals.crashes,
        "{s:?}"
    );
    assert!(
        s.totals.partitions >= 50 && s.totals.replays >= 500,
        "{s:?}"
    );
    assert!(s.totals.messages >= 100 * 20 * 9 / 10, "{s:?}");
    assert!(
        s.totals.documents >= 100 * 3,
        "every run crosses epochs: {s:?}"
    );
    assert!(
        s.totals.failed_commits >= 100,
        "store commits failed and were retried: {s:?}"
    );
}

#[test]
fn a_node_that_skips_its_journal_writes_is_caught() {
    let broken = ChaosConfig {
        journal_writes: false,
        ..ChaosConfig::default()
    };
    let caught = (1..=20).find_map(|seed| run(seed, &broken).err());
    let (v, _) = caught.expect("no seed of 20 caught a node that skips its journal writes");
    assert_eq!(v.invariant, "no replay forwarded", "{v}");
}

#[test]
fn without_each_epochs_document_messages_are_lost_and_the_sweep_says_so() {
    let stale = ChaosConfig {
        documents: false,
        ..ChaosConfig::default()
    };
    let (v, _) = run(3, &stale).expect_err("a network on its first document alone loses messages");
    assert_eq!(
        v.invariant, "no message lost without its sender learning it",
        "{v}"
    );
}
