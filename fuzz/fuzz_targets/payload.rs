//! A client's side of what it receives, after the session: answer items split into id and
//! packet, payloads decoded, fragments put back together. The input is a run of payloads
//! (each a length byte and bytes); every fragment among them goes to one bounded
//! reassembly. Never a panic; the reassembly never holds more than its byte bound; and a
//! message the input also sends honestly (fragmented by the writer) is delivered whole,
//! exactly once, whatever junk fragments surround it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopix_core::formats::payload::{self, Content, Reassembly};
use loopix_core::formats::wire::read_item;

/// Small bounds, so the fuzzer reaches eviction and refusal quickly.
const MAX_BYTES: usize = 4_096;
const PAYLOAD: usize = 64;

/// Adds one honest fragment; the message if it completed it.
fn add_honest(r: &mut Reassembly, payload: &[u8]) -> Option<Vec<u8>> {
    match payload::read(payload)? {
        Content::Fragment {
            msg_id,
            index,
            count,
            data,
            ..
        } => r.add(msg_id, index, count, data),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembly::new(4, 8, MAX_BYTES);
    // An honest message first, fragmented as a client writes it.
    let honest: Vec<u8> = data.iter().take(3 * 40).copied().collect();
    let cap = payload::fragment_capacity(PAYLOAD, false);
    let count = honest.len().div_ceil(cap).max(1) as u16;
    let honest_id = u64::MAX - 1;
    let mut fragments = Vec::new();
    for (i, chunk) in honest.chunks(cap).enumerate() {
        let mut p = vec![0u8; PAYLOAD];
        payload::write_fragment(&mut p, honest_id, i as u16, count, None, chunk);
        fragments.push(p);
    }
    if honest.is_empty() {
        let mut p = vec![0u8; PAYLOAD];
        payload::write_fragment(&mut p, honest_id, 0, 1, None, &[]);
        fragments.push(p);
    }
    let mut delivered = Vec::new();
    let mut rest = data;
    let mut honest_next = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (item, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        // Junk as an answer item: its packet part as a payload.
        if let Some(loopix_core::formats::wire::Item { packet, .. }) = read_item(item)
            && let Some(Content::Fragment {
                msg_id,
                index,
                count,
                data,
                ..
            }) = payload::read(packet)
            && msg_id != honest_id
            && let Some(m) = r.add(msg_id, index, count, data)
        {
            assert!(m.len() <= usize::from(count) * u16::MAX as usize);
        }
        assert!(r.bytes() <= MAX_BYTES, "{} held", r.bytes());
        // The honest fragments, one after each junk item.
        if let Some(p) = fragments.get(honest_next) {
            honest_next += 1;
            delivered.extend(add_honest(&mut r, p));
        }
    }
    for p in &fragments[honest_next..] {
        delivered.extend(add_honest(&mut r, p));
    }
    // Junk may evict the honest message (bounded state); it may never corrupt or repeat it.
    assert!(delivered.len() <= 1);
    if let Some(m) = delivered.first() {
        assert_eq!(*m, honest);
    }
});
