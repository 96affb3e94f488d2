//! Reading a node's Prometheus metrics over HTTP (loadgen, testnet).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GET /metrics, or `None` if the node does not answer.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loopix\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Whether the node at `addr` answers `GET /ready` with 200 (every shard reporting). Any
/// other answer, or another process's on that port, is not ready.
pub fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
        || s.write_all(b"GET /ready HTTP/1.1\r\nHost: loopix\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

/// One line of the text format: name, labels (raw), value.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            Some((name, labels, value.parse().ok()?))
        })
}

/// The value of label `key` in a raw label string.
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(&format!("{key}=\"")).nth(1)?.split('"').next()
}

/// A family's samples summed over every label set; `None` if the scrape has none.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    samples(text)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .reduce(|a, b| a + b)
}

/// A scrape's cumulative `_bucket` counts of histogram `name`: (upper bound in seconds,
/// count).
pub fn buckets(text: &str, name: &str) -> Option<Vec<(f64, f64)>> {
    let bucket = format!("{name}_bucket");
    let out: Vec<(f64, f64)> = samples(text)
        .filter(|(n, _, _)| *n == bucket)
        .filter_map(|(_, labels, v)| {
            let le = label(labels, "le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, v))
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The bound under which a fraction `q` of what was recorded between two snapshots of
/// one histogram's buckets fell; `None` if nothing was.
pub fn quantile_bound(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|(&(bound, a), &(_, b))| (bound, a - b))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta.iter().find(|(_, n)| *n >= q * total).map(|(b, _)| *b)
}

/// How many shards the node runs (its `loopix_shards` gauge), once every one of them has
/// reported: a node that has just started lists only the shards heard from so far.
pub fn shards(addr: SocketAddr) -> Option<usize> {
    let text = scrape(addr)?;
    let runs = samples(&text)
        .find(|(name, _, _)| *name == "loopix_shards")
        .map(|(_, _, v)| v as usize)?;
    let reported = samples(&text)
        .filter(|(name, _, _)| *name == "loopix_packets_in_total")
        .count();
    (runs > 0 && reported == runs).then_some(runs)
}
