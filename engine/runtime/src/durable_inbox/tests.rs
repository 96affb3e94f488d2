use super::*;
use std::time::Instant;

fn temp(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("loopix-inbox-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn options(per_client: usize, total: usize) -> StoreOptions {
    StoreOptions {
        per_client,
        total,
        queue: 1_000,
        faults: WriterFaults::default(),
    }
}

/// One shard's store (the writer with it).
fn one(path: &Path, o: StoreOptions, now_us: u64) -> (StoreWriter, ShardInbox) {
    let (w, mut s) = open(path, 1, o, now_us).unwrap();
    (w, s.remove(0))
}

/// Flushes until everything written so far is durable (the writer is a thread).
fn settle(s: &mut ShardInbox) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.flush().unwrap();
        if s.pending.is_empty() && s.uncommitted == 0 && s.in_flight.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the writer never committed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops a shard and its writer as a clean stop does: the last writes are committed.
fn close(w: StoreWriter, s: ShardInbox) {
    drop(s);
    w.join();
}

/// Stops them as SIGKILL would: what was not yet handed to the writer is gone.
fn kill(w: StoreWriter, mut s: ShardInbox) {
    s.pending = Writes::new(0, 0);
    drop(s);
    w.join();
}

#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = temp("mode");
    let (w, s) = one(&path, options(10, 1_000), 0);
    close(w, s);
    assert_eq!(mode(&path), 0o600, "a new store");
    // One left readable by others (made before, or by hand) is closed when opened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (w, mut s) = one(&path, options(10, 1_000), 0);
    assert_eq!(mode(&path), 0o600, "an existing store");
    s.store(NodeId(1), 1, 0, b"kept").unwrap();
    close(w, s);
    let (w, s) = one(&path, options(10, 1_000), 0);
    assert_eq!(
        s.len(NodeId(1)),
        1,
        "the last writes of a clean stop are kept"
    );
    close(w, s);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn only_durable_packets_are_handed_out_and_they_survive_a_kill() {
    let path = temp("reopen");
    let c = NodeId(7);
    {
        let (w, mut s) = one(&path, options(10, 1_000), 0);
        s.store(c, 100, 0, b"first").unwrap();
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert!(ids.is_empty(), "not durable yet, not handed out");
        let mut buf = [0u8; 5];
        assert!(!s.read(c, 100, &mut buf), "nor readable");
        assert!(!s.ack(c, 100), "nor acknowledged");
        settle(&mut s);
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![100]);
        s.store(c, 101, 0, b"secnd").unwrap();
        settle(&mut s);
        s.store(c, 102, 0, b"lost!").unwrap(); // never handed to the writer: killed now
        kill(w, s);
    }
    let (w, mut s) = one(&path, options(10, 1_000), 0);
    assert_eq!(
        (s.len(c), s.total()),
        (2, 2),
        "the index rebuilt from the file"
    );
    let mut ids = Vec::new();
    s.oldest(c, 5, &mut ids);
    assert_eq!(ids, vec![100, 101]);
    let mut buf = [0u8; 5];
    assert!(s.read(c, 101, &mut buf));
    assert_eq!(&buf, b"secnd");
    assert!(s.ack(c, 100));
    assert!(!s.ack(c, 999), "an id never stored is not acknowledged");
    settle(&mut s);
    kill(w, s);
    let (w, s) = one(&path, options(10, 1_000), 0);
    let mut ids = Vec::new();
    s.oldest(c, 5, &mut ids);
    assert_eq!((ids, s.len(c)), (vec![101], 1), "the ack was durable");
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

/// A commit that fails (a full disk, an I/O error) loses nothing: the writer tries the
/// same writes again, and until they are durable nothing of them is handed out.
#[test]
fn a_failed_commit_is_tried_again_and_loses_nothing() {
    let path = temp("failed-commit");
    let c = NodeId(7);
    let o = StoreOptions {
        faults: WriterFaults {
            fail_first: 2,
            ..WriterFaults::default()
        },
        ..options(10, 1_000)
    };
    let (w, mut s) = one(&path, o, 0);
    s.store(c, 100, 0, b"first").unwrap();
    s.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.stats.failures.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    s.flush().unwrap();
    let mut ids = Vec::new();
    s.oldest(c, 5, &mut ids);
    assert!(ids.is_empty(), "a failed commit hands nothing out");
    settle(&mut s);
    s.oldest(c, 5, &mut ids);
    assert_eq!((ids, s.len(c), s.total()), (vec![100], 1, 1));
    assert_eq!(
        w.stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    kill(w, s);
    let (w, s) = one(&path, options(10, 1_000), 0);
    assert_eq!((s.len(c), s.total()), (1, 1), "and so it is on disk");
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_full_inbox_and_a_full_store_refuse_more_and_the_bound_survives_a_reopen() {
    let path = temp("full");
    let (w, mut s) = one(&path, options(2, 3), 0);
    let c = NodeId(1);
    s.store(c, 1, 0, b"a").unwrap();
    s.store(c, 2, 0, b"b").unwrap();
    assert_eq!(s.store(c, 3, 0, b"c"), Err(StoreRefused::InboxFull));
    s.store(NodeId(2), 4, 0, b"d").unwrap();
    assert_eq!(s.store(NodeId(3), 5, 0, b"e"), Err(StoreRefused::StoreFull));
    close(w, s);
    let (w, mut s) = one(&path, options(2, 3), 0);
    assert_eq!(s.total(), 3);
    assert_eq!(s.store(NodeId(3), 5, 0, b"e"), Err(StoreRefused::StoreFull));
    assert!(s.ack(NodeId(2), 4));
    assert!(s.store(NodeId(3), 5, 0, b"e").is_ok(), "an ack makes room");
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn packets_expire_after_a_reopen_and_acks_of_expired_ones_are_harmless() {
    let path = temp("expire");
    let (a, b) = (NodeId(1), NodeId(2));
    {
        let (w, mut s) = one(&path, options(10, 100), 0);
        s.store(a, 1, 100, b"p").unwrap();
        s.store(b, 2, 200, b"p").unwrap();
        s.store(a, 3, 300, b"p").unwrap();
        assert_eq!(s.expire(1_000, 10), 0, "nothing durable, nothing expires");
        close(w, s);
    }
    let (w, mut s) = one(&path, options(10, 100), 5_000);
    assert_eq!(s.expire(100, 10), 0, "stored at the cutoff: kept");
    assert_eq!(s.expire(250, 1), 1, "at most `max` a call");
    assert_eq!(s.expire(250, 10), 1, "the other one stored before 250");
    settle(&mut s);
    let mut ids = Vec::new();
    s.oldest(a, 10, &mut ids);
    s.oldest(b, 10, &mut ids);
    assert_eq!(ids, vec![3]);
    assert_eq!((s.total(), s.len(a), s.len(b)), (1, 1, 0));
    assert!(!s.ack(a, 1), "an expired packet is not acknowledged");
    assert!(!s.ack(b, 2), "nor the other");
    let mut buf = [0u8; 1];
    assert!(!s.read(a, 1, &mut buf));
    kill(w, s);
    let (w, s) = one(&path, options(10, 100), 6_000);
    assert_eq!(s.total(), 1, "the expiry was durable");
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_store_from_before_expiry_gets_its_packets_stamped_when_opened() {
    let path = temp("legacy");
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut inbox = tx.open_table(INBOX).unwrap();
            let mut ids = tx.open_table(IDS).unwrap();
            let mut value = 42u64.to_le_bytes().to_vec();
            value.extend_from_slice(b"old");
            inbox.insert((7, 0), value.as_slice()).unwrap();
            ids.insert((7, 42), 0).unwrap();
        }
        tx.commit().unwrap();
    }
    let (w, mut s) = one(&path, options(10, 100), 1_000);
    assert_eq!(s.total(), 1);
    assert_eq!(s.expire(1_000, 10), 0, "stamped at the open, not at 0");
    assert_eq!(s.expire(1_001, 10), 1);
    assert_eq!(s.total(), 0);
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

/// A node restarted with another shard count: every client's packets are loaded on its
/// home for the new count, and nowhere else.
#[test]
fn a_restart_with_another_shard_count_finds_each_client_s_packets_at_its_new_home() {
    let path = temp("reshard");
    let clients: Vec<NodeId> = (1..=12).map(NodeId).collect();
    {
        let (w, mut shards) = open(&path, 2, options(10, 1_000), 0).unwrap();
        for (i, &c) in clients.iter().enumerate() {
            let s = &mut shards[home_shard(c, 2)];
            s.store(c, 100 + i as u64, 0, b"p").unwrap();
            s.store(c, 200 + i as u64, 0, b"p").unwrap();
        }
        for s in &mut shards {
            settle(s);
        }
        drop(shards);
        w.join();
    }
    let (w, mut shards) = open(&path, 3, options(10, 1_000), 0).unwrap();
    for (i, &c) in clients.iter().enumerate() {
        for (n, s) in shards.iter().enumerate() {
            let mut ids = Vec::new();
            s.oldest(c, 10, &mut ids);
            if n == home_shard(c, 3) {
                assert_eq!(ids, vec![100 + i as u64, 200 + i as u64], "client {c:?}");
            } else {
                assert!(ids.is_empty(), "client {c:?} on shard {n}");
            }
        }
    }
    // And they are acknowledged there as anywhere.
    let c = clients[0];
    assert!(shards[home_shard(c, 3)].ack(c, 100));
    for s in &mut shards {
        settle(s);
    }
    drop(shards);
    w.join();
    std::fs::remove_file(&path).unwrap();
}

/// A disk whose commits take 300 ms: the shard's calls return at once, stores beyond the
/// queue are refused as busy (never waited for), and what was queued becomes durable.
#[test]
fn a_slow_disk_never_holds_a_shard() {
    let path = temp("slow");
    let o = StoreOptions {
        queue: 8,
        faults: WriterFaults {
            commit_delay: Duration::from_millis(300),
            ..WriterFaults::default()
        },
        ..options(100, 1_000)
    };
    let (w, mut s) = one(&path, o, 0);
    let c = NodeId(3);
    let mut refused = 0;
    let started = Instant::now();
    for id in 0..20 {
        match s.store(c, id, 0, b"p") {
            Ok(()) => {}
            Err(StoreRefused::Busy) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
        s.flush().unwrap();
    }
    let took = started.elapsed();
    assert_eq!(refused, 12, "beyond the queue of 8: busy");
    assert!(
        took < Duration::from_millis(150),
        "20 stores and flushes took {took:?} against a 300 ms commit"
    );
    assert!(s.longest_wait_us() < 100_000, "{} µs", s.longest_wait_us());
    settle(&mut s);
    assert_eq!(s.len(c), 8);
    assert!(
        w.stats
            .commit_us_max
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 300_000
    );
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}

/// Durable packets are kept in memory for polls up to the bound, and read from the file
/// beyond it; an ack frees the memory.
#[test]
fn durable_packets_are_read_from_memory_up_to_the_bound_and_from_the_file_beyond() {
    let path = temp("cache");
    let o = StoreOptions {
        queue: 100_000,
        ..options(100_000, 1_000_000)
    };
    let (w, mut s) = one(&path, o, 0);
    let c = NodeId(4);
    let n = CACHED_PACKETS as u64 + 5;
    for id in 0..n {
        s.store(c, id, 0, &id.to_le_bytes()).unwrap();
    }
    settle(&mut s);
    assert_eq!(s.cached, CACHED_PACKETS, "kept in memory up to the bound");
    let mut buf = [0u8; 8];
    for id in [0, n / 2, n - 1] {
        assert!(s.read(c, id, &mut buf), "{id}");
        assert_eq!(u64::from_le_bytes(buf), id);
    }
    assert!(s.ack(c, 0));
    assert!(s.ack(c, n - 1));
    assert_eq!(s.cached, CACHED_PACKETS - 1, "the acked kept one freed");
    // Expiry frees what it removes as an ack does (all were stored at 0).
    assert_eq!(s.expire(1, 10), 10);
    assert_eq!(s.cached, CACHED_PACKETS - 11, "expired kept ones freed");
    close(w, s);
    std::fs::remove_file(&path).unwrap();
}
