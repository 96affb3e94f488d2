//! Packet creation, on the sender's side (client, or a mix building its own loop).
//!
//! The sender picks one random scalar `x`; hop `i` sees `α_i = x_i·G` with
//! `x_{i+1} = x_i·b_i`, and the sender reaches every shared secret `s_i = x_i·pk_i`
//! without ever computing `α_i` past the first. The header is then built back to front
//! with the Sphinx filler, and the body is wrapped in one LIONESS layer per hop.

use core::fmt;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::command::Command;
use crate::key_phase::KeyPhase;
use crate::keys::{HopKeys, PublicKey, random_scalar};
use crate::lanes::{Kernel, MAX_LANES, mul_base_encoded};
use crate::lioness;
use crate::params::{
    ALPHA_LEN, BETA_LEN, COMMAND_LEN, HEADER_LEN, MAC_LEN, MAX_HOPS, PAYLOAD_TAG_LEN, Params,
    ROUTING_LEN,
};
use crate::primitives::{aes_ctr_xor, compress, header_mac, mul, xor};

/// One hop of a path: whose key unwraps it, and what that hop is told to do.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    /// The hop's public key.
    pub key: PublicKey,
    /// The parity of the epoch `key` belongs to, which the α reaching this hop carries
    /// (see [`KeyPhase`]); [`KeyPhase::Even`] for keys without epochs (clients).
    pub phase: KeyPhase,
    /// The routing command the hop will read.
    pub command: Command,
}

impl Hop {
    /// A hop under a key without epochs (or of an even epoch).
    pub fn new(key: PublicKey, command: Command) -> Self {
        Self {
            key,
            phase: KeyPhase::Even,
            command,
        }
    }
}

/// Why a packet could not be built. All are the caller's mistakes, never the network's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// Paths have 1 to [`MAX_HOPS`] hops.
    PathLength { hops: usize },
    /// Every hop but the last must relay or deliver, and the last must end the path.
    PathShape { hop: usize },
    /// The payload is longer than the network's payload size.
    PayloadTooLong { len: usize, max: usize },
    /// The output buffer is not exactly one packet long.
    BufferLength { expected: usize, got: usize },
    /// No packet whose last hop's α the caller accepts was found in
    /// [`MAX_STEER_TRIES`] tries (see [`build_into_steered`]).
    Unsteerable { tries: usize },
    /// A batch needs one output buffer and one MAC slot per job
    /// ([`crate::build_batch`]).
    BatchLength {
        jobs: usize,
        outs: usize,
        macs: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PathLength { hops } => write!(f, "path of {hops} hops; 1..={MAX_HOPS} allowed"),
            Self::PathShape { hop } => write!(
                f,
                "hop {hop}: only the last hop may end the path (loop, drop, final), and it must"
            ),
            Self::PayloadTooLong { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the {max}-byte packet payload"
                )
            }
            Self::BufferLength { expected, got } => {
                write!(f, "output buffer of {got} bytes; a packet is {expected}")
            }
            Self::Unsteerable { tries } => {
                write!(f, "no acceptable last-hop group element in {tries} tries")
            }
            Self::BatchLength { jobs, outs, macs } => write!(
                f,
                "a batch of {jobs} jobs with {outs} output buffers and {macs} MAC slots"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Builds a packet into a new buffer. See [`build_into`].
pub fn build<R: CryptoRng + ?Sized>(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, BuildError> {
    let mut out = vec![0u8; params.packet_len()];
    build_into(params, path, payload, rng, &mut out)?;
    Ok(out)
}

/// Builds a packet that travels `path` and carries `payload` (zero-padded to the network's
/// payload size) into `out`, which must be exactly one packet long.
///
/// All randomness comes from `rng`: the same seed gives the same packet.
pub fn build_into<R: CryptoRng + ?Sized>(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    rng: &mut R,
    out: &mut [u8],
) -> Result<(), BuildError> {
    build_into_traced(params, path, payload, rng, out).map(|_| ())
}

/// [`build_into`], also returning the MAC the second hop will check. It is the last
/// [`MAC_LEN`] bytes of the header the first hop forwards, so a load generator that plays
/// the second hop recognises each of its packets without holding any key.
pub fn build_into_traced<R: CryptoRng + ?Sized>(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    rng: &mut R,
    out: &mut [u8],
) -> Result<[u8; MAC_LEN], BuildError> {
    build_with(params, path, payload, rng, out, None)
}

/// What [`build_into_steered`] asks of the α the last hop will receive.
pub type AcceptAlpha<'a> = &'a dyn Fn(&[u8; ALPHA_LEN]) -> bool;

/// The most packets [`build_into_steered`] draws before giving up. An `accept` that takes
/// one α in S (a node's shard) fails all of them with probability (1 - 1/S)^256.
pub const MAX_STEER_TRIES: usize = 256;

/// [`build_into`], drawing the packet's randomness until `accept` takes the α its last hop
/// will receive (as encoded on the wire, key phase bit included). A node sharded by the
/// first bytes of α uses it to build its own loops so that they come back to the shard that
/// sent them. Each try costs the path's key exchanges and one fixed-base multiplication.
/// The α stays uniform within the accepted set, so a packet built this way looks like any
/// other to everyone but its sender.
pub fn build_into_steered<R: CryptoRng + ?Sized>(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    rng: &mut R,
    out: &mut [u8],
    accept: AcceptAlpha<'_>,
) -> Result<(), BuildError> {
    build_with(params, path, payload, rng, out, Some(accept)).map(|_| ())
}

fn build_with<R: CryptoRng + ?Sized>(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    rng: &mut R,
    out: &mut [u8],
    accept: Option<AcceptAlpha<'_>>,
) -> Result<[u8; MAC_LEN], BuildError> {
    check(params, path, payload, out.len())?;
    let mut keys: [HopKeys; MAX_HOPS] = Default::default();
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let second_hop_mac = write_header(path, &mut keys, rng, header, accept)?;
    write_body(&keys[..path.len()], payload, body);
    Ok(second_hop_mac)
}

/// Writes the header (α ‖ β ‖ γ, [`HEADER_LEN`] bytes) of a packet along `path` (checked
/// by the caller) into `header`, and every hop's keys into `keys`; returns the MAC the
/// second hop will check. With `accept`, draws until it takes the last hop's α.
pub(crate) fn write_header<R: CryptoRng + ?Sized>(
    path: &[Hop],
    keys: &mut [HopKeys; MAX_HOPS],
    rng: &mut R,
    header: &mut [u8],
    accept: Option<AcceptAlpha<'_>>,
) -> Result<[u8; MAC_LEN], BuildError> {
    // Without `accept` the first draw is taken.
    let tries = if accept.is_some() { MAX_STEER_TRIES } else { 1 };
    let alpha = (0..tries)
        .find_map(|_| derive_path_keys(path, keys, rng, accept))
        .ok_or(BuildError::Unsteerable { tries })?;
    header[..ALPHA_LEN].copy_from_slice(&alpha);
    path[0].phase.mark(&mut header[..ALPHA_LEN]);
    Ok(write_routing(
        path,
        &keys[..path.len()],
        |pad| rng.fill_bytes(pad),
        &mut header[ALPHA_LEN..HEADER_LEN],
    ))
}

/// Fills `out` with a dummy packet: a valid, random group element followed by random bytes.
/// Without the keys of a hop it cannot be told from a real packet (both are a group element
/// and uniformly random-looking bytes); with them, it fails the MAC check. Providers pad
/// poll answers with these.
pub fn fill_dummy<R: CryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) {
    let mut x = random_scalar(rng);
    let alpha = compress(&RistrettoPoint::mul_base(&x));
    x.zeroize();
    let n = out.len().min(ALPHA_LEN);
    out[..n].copy_from_slice(&alpha[..n]);
    rng.fill_bytes(&mut out[n..]);
}

/// Writes the group elements of `heads.len()` dummy packets at once: each valid and uniformly
/// random, as [`fill_dummy`] writes them (`compress(x·B)` for a random `x`), but up to 16 at
/// a time in the lanes of this process's kernel, or at one field inversion for them all
/// ([`crate::lanes::mul_base_encoded`]). A provider keeps a few ready for its answers.
pub fn fill_dummy_alphas<R: CryptoRng + ?Sized>(rng: &mut R, heads: &mut [[u8; ALPHA_LEN]]) {
    let kernel = Kernel::detect();
    for heads in heads.chunks_mut(MAX_LANES) {
        let mut xs = Zeroizing::new([Scalar::ZERO; MAX_LANES]);
        for x in &mut xs[..heads.len()] {
            *x = random_scalar(rng);
        }
        mul_base_encoded(kernel, &xs[..heads.len()], heads);
    }
}

pub(crate) fn check(
    params: &Params,
    path: &[Hop],
    payload: &[u8],
    out_len: usize,
) -> Result<(), BuildError> {
    check_path(path)?;
    check_sizes(params, payload, out_len)
}

/// A payload that fits the network's packets, and an output buffer exactly one packet
/// long: what every way of writing a packet checks first.
pub fn check_sizes(params: &Params, payload: &[u8], out_len: usize) -> Result<(), BuildError> {
    if payload.len() > params.payload_bytes() {
        return Err(BuildError::PayloadTooLong {
            len: payload.len(),
            max: params.payload_bytes(),
        });
    }
    if out_len != params.packet_len() {
        return Err(BuildError::BufferLength {
            expected: params.packet_len(),
            got: out_len,
        });
    }
    Ok(())
}

/// 1 to [`MAX_HOPS`] hops, only the last one terminal.
pub(crate) fn check_path(path: &[Hop]) -> Result<(), BuildError> {
    if path.is_empty() || path.len() > MAX_HOPS {
        return Err(BuildError::PathLength { hops: path.len() });
    }
    let last = path.len() - 1;
    if let Some(hop) = (0..path.len()).find(|&i| path[i].command.is_terminal() != (i == last)) {
        return Err(BuildError::PathShape { hop });
    }
    Ok(())
}

/// Fills `keys` with every hop's keys and returns the first hop's α; with `accept`, `None`
/// if it does not take the α the last hop will receive.
fn derive_path_keys<R: CryptoRng + ?Sized>(
    path: &[Hop],
    keys: &mut [HopKeys; MAX_HOPS],
    rng: &mut R,
    accept: Option<AcceptAlpha<'_>>,
) -> Option<[u8; ALPHA_LEN]> {
    let mut x = random_scalar(rng);
    let alpha = compress(&RistrettoPoint::mul_base(&x));
    let last = path.len() - 1;
    let mut accepted = true;
    for (i, (hop, k)) in path.iter().zip(keys.iter_mut()).enumerate() {
        if i == last
            && let Some(accept) = accept
        {
            let mut last_alpha = compress(&RistrettoPoint::mul_base(&x));
            hop.phase.mark(&mut last_alpha);
            accepted = accept(&last_alpha);
            if !accepted {
                break;
            }
        }
        let secret = Zeroizing::new(compress(&mul(hop.key.point(), &x)));
        *k = HopKeys::derive(&secret);
        x *= k.blinding();
    }
    x.zeroize();
    accepted.then_some(alpha)
}

/// The header keystream of one hop: β's length plus the one routing field a hop appends.
fn header_keystream(k: &HopKeys) -> Zeroizing<[u8; BETA_LEN + ROUTING_LEN]> {
    let mut stream = Zeroizing::new([0u8; BETA_LEN + ROUTING_LEN]);
    aes_ctr_xor(&k.header_stream, &mut stream[..]);
    stream
}

/// Random bytes the innermost β carries after the last hop's routing field, for a path of
/// `hops` hops: the rest of β, less the filler. [`write_routing`] asks `pad` for exactly
/// this many.
pub(crate) fn padding_len(hops: usize) -> usize {
    BETA_LEN - hops * ROUTING_LEN
}

/// Writes β and γ for the first hop into `routing` (`BETA_LEN + MAC_LEN` bytes), the
/// innermost β's random padding written by `pad` ([`padding_len`] bytes; a sender's RNG,
/// or bytes drawn from it before, in a batch). Returns the MAC the second hop will check
/// (zeros for a one-hop path).
pub(crate) fn write_routing(
    path: &[Hop],
    keys: &[HopKeys],
    pad: impl FnOnce(&mut [u8]),
    routing: &mut [u8],
) -> [u8; MAC_LEN] {
    let n = path.len();
    let filler_len = (n - 1) * ROUTING_LEN;
    let head_len = BETA_LEN - filler_len;
    let mut beta = [0u8; BETA_LEN];
    beta[..COMMAND_LEN].copy_from_slice(&path[n - 1].command.encode());
    pad(&mut beta[ROUTING_LEN..head_len]);
    xor(
        &mut beta[..head_len],
        &header_keystream(&keys[n - 1])[..head_len],
    );
    filler(&keys[..n - 1], &mut beta[head_len..]);
    let mut gamma = header_mac(&keys[n - 1].header_mac, &beta);
    let mut second_hop_mac = [0u8; MAC_LEN];
    for ((hop, next), k) in path.iter().zip(&path[1..]).zip(&keys[..n - 1]).rev() {
        second_hop_mac = gamma;
        beta.copy_within(..BETA_LEN - ROUTING_LEN, ROUTING_LEN);
        beta[..COMMAND_LEN].copy_from_slice(&hop.command.encode_routed(next.phase));
        beta[COMMAND_LEN..ROUTING_LEN].copy_from_slice(&gamma);
        aes_ctr_xor(&k.header_stream, &mut beta);
        gamma = header_mac(&k.header_mac, &beta);
    }
    routing[..BETA_LEN].copy_from_slice(&beta);
    routing[BETA_LEN..].copy_from_slice(&gamma);
    second_hop_mac
}

/// The Sphinx filler: the bytes the hops before the last will have appended to β by the
/// time it reaches the last hop, so that its MAC can cover them. `out` is
/// `keys.len() * ROUTING_LEN` bytes and starts zeroed.
fn filler(keys: &[HopKeys], out: &mut [u8]) {
    for (i, k) in keys.iter().enumerate() {
        let len = (i + 1) * ROUTING_LEN;
        let stream = header_keystream(k);
        xor(&mut out[..len], &stream[stream.len() - len..]);
    }
}

/// Zero tag, payload, zero padding; then one LIONESS layer per hop, last hop innermost.
pub(crate) fn write_body(keys: &[HopKeys], payload: &[u8], body: &mut [u8]) {
    body.fill(0);
    body[PAYLOAD_TAG_LEN..PAYLOAD_TAG_LEN + payload.len()].copy_from_slice(payload);
    for k in keys.iter().rev() {
        lioness::encrypt(&k.payload, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Dummies' group elements made in a batch are valid, all different, and (as one at a
    /// time) never the identity.
    #[test]
    fn dummy_alphas_in_a_batch_are_valid_and_distinct() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut heads = [[0u8; ALPHA_LEN]; 33];
        fill_dummy_alphas(&mut rng, &mut heads);
        let mut seen = std::collections::BTreeSet::new();
        for h in &heads {
            let p = crate::primitives::decompress(h).expect("a valid group element");
            assert_ne!(compress(&p), [0u8; 32], "not the identity");
            assert!(seen.insert(*h), "distinct");
        }
        // One at a time, the same kind of element.
        let mut one = [0u8; 64];
        fill_dummy(&mut rng, &mut one);
        assert!(crate::primitives::decompress(one[..32].try_into().unwrap()).is_some());
    }
}
