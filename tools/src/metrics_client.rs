//! Reading a node's Prometheus metrics over HTTP (loadgen, testnet).

use std::collections::BTreeMap;
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

/// The node's drop counters summed over shards, by reason.
pub fn drops(addr: SocketAddr) -> Option<BTreeMap<String, u64>> {
    let text = scrape(addr)?;
    let mut out = BTreeMap::new();
    for (name, labels, v) in samples(&text) {
        if name == "loopix_packets_dropped_total" {
            let reason = label(labels, "reason").unwrap_or("?").to_string();
            *out.entry(reason).or_default() += v as u64;
        }
    }
    Some(out)
}

/// How many shards report in the node's metrics.
pub fn shards(addr: SocketAddr) -> Option<usize> {
    let text = scrape(addr)?;
    let n = samples(&text)
        .filter(|(name, _, _)| *name == "loopix_packets_in_total")
        .count();
    (n > 0).then_some(n)
}
