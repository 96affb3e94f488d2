//! Packet processing at a hop: in place on the caller's buffer, no allocation, and every
//! failure a typed [`ProcessError`]. The order of checks is the defence: the header MAC
//! is verified before anything else is decrypted, and a replay is rejected before the
//! costly re-blinding and payload work.

use core::fmt;
use core::ops::Range;

use ctr::cipher::StreamCipher;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::command::{Command, MalformedCommand};
use crate::key_phase::KeyPhase;
use crate::keys::{HopKeys, ReplayTag, SecretKey};
use crate::lanes::{Kernel, MAX_LANES, Points};
use crate::lioness;
use crate::params::{
    ALPHA_LEN, BETA_LEN, COMMAND_LEN, HEADER_LEN, MAC_LEN, PAYLOAD_TAG_LEN, Params, ROUTING_LEN,
};
use crate::primitives::{compress, decompress, header_mac, mul, stream_cipher};

/// Why a packet was rejected. Each is a drop reason a node counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessError {
    /// The datagram is not exactly one packet long.
    WrongLength { expected: usize, got: usize },
    /// α is not a canonical, non-identity Ristretto encoding.
    InvalidGroupElement,
    /// The header MAC does not match: tampered, corrupted, or not for this key.
    MacMismatch,
    /// The MAC matched but the routing command is not one we know.
    MalformedCommand,
    /// The replay check said this shared secret was seen before.
    Replayed,
    /// A final hop found the payload's zero tag broken: the body was tampered with.
    PayloadTampered,
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { expected, got } => {
                write!(f, "packet of {got} bytes; expected {expected}")
            }
            Self::InvalidGroupElement => f.write_str("invalid group element"),
            Self::MacMismatch => f.write_str("header MAC mismatch"),
            Self::MalformedCommand => f.write_str("malformed routing command"),
            Self::Replayed => f.write_str("replayed packet"),
            Self::PayloadTampered => f.write_str("payload integrity check failed"),
        }
    }
}

impl std::error::Error for ProcessError {}

impl From<MalformedCommand> for ProcessError {
    fn from(_: MalformedCommand) -> Self {
        Self::MalformedCommand
    }
}

/// The outcome of processing one packet. The buffer now holds the packet for the next
/// hop (relay, deliver) or the readable payload (loop return, final).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Processed {
    /// What this hop must do next.
    pub command: Command,
    /// The packet's replay tag at this hop.
    pub tag: ReplayTag,
}

/// Unwraps packets addressed to one key.
#[derive(Debug)]
pub struct Processor {
    key: SecretKey,
    /// `key` / 2, for the batched path.
    halved: SecretKey,
    params: Params,
    /// Whether batches go through the lane kernel ([`crate::lanes`]).
    kernel: Kernel,
}

/// Packets per batched compression: the size of the stack arrays of one chunk.
const CHUNK: usize = 32;
/// A lone packet goes the single way; from two on the batched path is cheaper per packet
/// (`cargo bench -p loopix-benches --bench sphinx -- packet/process`: 48.0 µs alone, 45.7 /
/// 43.6 / 42.6 / 41.0 µs per packet in batches of 2 / 3 / 4 / 32). A shard's batches are
/// small exactly when it is lightly loaded or one of several sharing the traffic.
const BATCHED_FROM: usize = 2;

/// What is left to do to a packet once its keys are known: nothing, or re-blind α (by
/// this factor, marking it with the next node's key phase).
enum Rest {
    Done(Processed),
    Reblind(Processed, Scalar, KeyPhase),
}

impl Processor {
    /// A processor for packets of `params` under `key`.
    pub fn new(key: SecretKey, params: Params) -> Self {
        let halved = key.halved();
        Self {
            key,
            halved,
            params,
            kernel: Kernel::detect(),
        }
    }

    /// The same processor with batches on `kernel` (the portable one, to compare; a kernel
    /// this CPU does not run falls back to it).
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// The kernel batches run on.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Packets in one run of the lane kernel: what a batch holds to be unwrapped at the
    /// kernel's best cost per packet (1 where this CPU unwraps one at a time).
    pub fn lanes(&self) -> usize {
        if self.kernel.runs_here() {
            self.kernel.lanes()
        } else {
            1
        }
    }

    /// The network parameters this processor expects.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Processes one packet in place.
    pub fn process(&self, packet: &mut [u8]) -> Result<Processed, ProcessError> {
        self.process_unless_replayed(packet, |_| false)
    }

    /// Processes one packet in place, asking `is_replay` about its tag as soon as the MAC
    /// has matched; a `true` answer stops the work there with [`ProcessError::Replayed`].
    pub fn process_unless_replayed(
        &self,
        packet: &mut [u8],
        is_replay: impl FnOnce(&ReplayTag) -> bool,
    ) -> Result<Processed, ProcessError> {
        let (header, body, alpha) = self.open(packet)?;
        let secret = Zeroizing::new(compress(&mul(&alpha, self.key.scalar())));
        let keys = HopKeys::derive(&secret);
        match finish(&keys, header, body, is_replay)? {
            Rest::Done(p) => Ok(p),
            Rest::Reblind(p, _, phase) => {
                header[..ALPHA_LEN].copy_from_slice(&compress(&mul(&alpha, &keys.blinding())));
                phase.mark(&mut header[..ALPHA_LEN]);
                Ok(p)
            }
        }
    }

    /// The packet's header and body, and α, if its length is right and α is valid. α's
    /// key phase bit is ignored: choosing the key by it is the caller's business.
    fn open<'a>(
        &self,
        packet: &'a mut [u8],
    ) -> Result<(&'a mut [u8; HEADER_LEN], &'a mut [u8], RistrettoPoint), ProcessError> {
        let (header, body, encoded) = self.open_encoded(packet)?;
        let alpha = decompress(&encoded).ok_or(ProcessError::InvalidGroupElement)?;
        Ok((header, body, alpha))
    }

    /// [`Self::open`] without decoding α: its bytes, key phase bit cleared.
    #[allow(clippy::type_complexity)]
    fn open_encoded<'a>(
        &self,
        packet: &'a mut [u8],
    ) -> Result<(&'a mut [u8; HEADER_LEN], &'a mut [u8], [u8; ALPHA_LEN]), ProcessError> {
        let expected = self.params.packet_len();
        let got = packet.len();
        let (header, body) = match packet.split_first_chunk_mut::<HEADER_LEN>() {
            Some((h, b)) if got == expected => (h, b),
            _ => return Err(ProcessError::WrongLength { expected, got }),
        };
        let mut encoded = alpha_of(header);
        KeyPhase::clear(&mut encoded);
        Ok((header, body, encoded))
    }

    /// One run of the lane kernel (`self.kernel.lanes()` packets at most): every α decoded
    /// once in its lane, the shared secrets `key·α` in one run, and the re-blinded `b·α`
    /// in another. Lanes without a packet carry the base point and are ignored.
    fn process_lanes<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        is_replay: &mut impl FnMut(&ReplayTag) -> bool,
    ) {
        let lanes = self.kernel.lanes();
        let filler = RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
        let mut encoded = [filler; MAX_LANES];
        let mut used = [false; MAX_LANES];
        for (i, (p, r)) in packets.iter_mut().zip(results.iter_mut()).enumerate() {
            match self.open_encoded(p.as_mut()) {
                Ok((_, _, alpha)) => (encoded[i], used[i]) = (alpha, true),
                Err(e) => *r = Err(e),
            }
        }
        let Some(points) = Points::decode(self.kernel, &encoded[..lanes]) else {
            // No kernel on this CPU after all: the one-at-a-time path.
            return self.process_chunk(packets, results, is_replay);
        };
        let mut secrets = Zeroizing::new([[0u8; 32]; MAX_LANES]);
        // The key once per lane, wiped when the batch is done like every copy of it.
        let key = Zeroizing::new([*self.key.scalar(); MAX_LANES]);
        points.mul_encode(&key[..lanes], &mut secrets[..lanes]);
        let mut blinding = [Scalar::ONE; MAX_LANES];
        let mut reblind = [None; MAX_LANES];
        for i in 0..packets.len().min(lanes) {
            if !used[i] {
                continue;
            }
            if !points.valid(i) {
                results[i] = Err(ProcessError::InvalidGroupElement);
                continue;
            }
            let keys = HopKeys::derive(&secrets[i]);
            secrets[i].zeroize();
            let (header, body) = packets[i].as_mut().split_at_mut(HEADER_LEN);
            let header: &mut [u8; HEADER_LEN] = header.try_into().expect("opened above");
            results[i] = match finish(&keys, header, body, &mut *is_replay) {
                Ok(Rest::Done(p)) => Ok(p),
                Ok(Rest::Reblind(p, _, phase)) => {
                    blinding[i] = keys.blinding();
                    reblind[i] = Some(phase);
                    Ok(p)
                }
                Err(e) => Err(e),
            };
        }
        if reblind.iter().all(Option::is_none) {
            return;
        }
        let mut next = [[0u8; 32]; MAX_LANES];
        points.mul_encode(&blinding[..lanes], &mut next[..lanes]);
        blinding.zeroize();
        for (i, phase) in reblind.iter().enumerate() {
            if let Some(phase) = phase {
                let out = &mut packets[i].as_mut()[..ALPHA_LEN];
                out.copy_from_slice(&next[i]);
                phase.mark(out);
            }
        }
    }

    /// Up to [`CHUNK`] packets with their compressions batched: the shared secrets
    /// `compress(key·α)` come out of one `double_and_compress_batch` over `(key/2)·α`,
    /// and so do the re-blinded `compress(b·α)` over `(b/2)·α`. A batched compression needs
    /// one field inversion for all the points instead of an inverse square root for each.
    fn process_chunk<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        is_replay: &mut impl FnMut(&ReplayTag) -> bool,
    ) {
        let none = RistrettoPoint::identity();
        let (mut alphas, mut halves, mut which) = ([none; CHUNK], [none; CHUNK], [0; CHUNK]);
        let mut m = 0;
        for (i, (p, r)) in packets.iter_mut().zip(results.iter_mut()).enumerate() {
            match self.open(p.as_mut()) {
                Ok((_, _, alpha)) => {
                    alphas[i] = alpha;
                    halves[m] = mul(&alpha, self.halved.scalar());
                    which[m] = i;
                    m += 1;
                }
                Err(e) => *r = Err(e),
            }
        }
        let mut secrets = RistrettoPoint::double_and_compress_batch(&halves[..m]);
        let (mut reblind, mut reblind_which, mut b) =
            ([none; CHUNK], [(0, KeyPhase::Even); CHUNK], 0);
        for (secret, &i) in secrets.iter_mut().zip(&which[..m]) {
            let keys = HopKeys::derive(&secret.0);
            secret.0.zeroize();
            let (header, body) = packets[i].as_mut().split_at_mut(HEADER_LEN);
            let header: &mut [u8; HEADER_LEN] = header.try_into().expect("opened above");
            results[i] = match finish(&keys, header, body, &mut *is_replay) {
                Ok(Rest::Done(p)) => Ok(p),
                Ok(Rest::Reblind(p, half_blinding, phase)) => {
                    reblind[b] = mul(&alphas[i], &half_blinding);
                    reblind_which[b] = (i, phase);
                    b += 1;
                    Ok(p)
                }
                Err(e) => Err(e),
            };
        }
        let next = RistrettoPoint::double_and_compress_batch(&reblind[..b]);
        for (alpha, &(i, phase)) in next.iter().zip(&reblind_which[..b]) {
            let out = &mut packets[i].as_mut()[..ALPHA_LEN];
            out.copy_from_slice(alpha.as_bytes());
            phase.mark(out);
        }
    }

    /// Processes `packets[i]` into `results[i]` for every `i` both slices have, and returns
    /// how many that was. Gives exactly the results of single calls, in order; it is the
    /// entry point that batched arithmetic across packets plugs into.
    pub fn process_batch<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
    ) -> usize {
        self.process_batch_unless_replayed(packets, results, |_| false)
    }

    /// How many packets of a batch of `n` [`Processor::process_batch`] unwraps in vector
    /// lanes (the rest one at a time). What a node counts to show how full its batches
    /// are.
    pub fn lanes_taken(&self, n: usize) -> usize {
        self.runs(n)
            .filter(|(_, in_lanes)| *in_lanes)
            .map(|(run, _)| run.len())
            .sum()
    }

    /// How [`Processor::process_batch`] splits a batch of `n`: where the CPU runs the
    /// kernel and the batch holds at least `kernel.lanes_from()` packets, runs of
    /// `kernel.lanes()`, each through the lanes (`true`) if it holds that many; otherwise
    /// chunks of [`CHUNK`], one at a time.
    fn runs(&self, n: usize) -> impl Iterator<Item = (Range<usize>, bool)> {
        let (lanes, from) = (self.kernel.lanes(), self.kernel.lanes_from());
        let lanes_at_all = n >= from && self.kernel.runs_here();
        let step = if lanes_at_all { lanes } else { CHUNK };
        (0..n).step_by(step).map(move |start| {
            let run = start..(start + step).min(n);
            let in_lanes = lanes_at_all && run.len() >= from;
            (run, in_lanes)
        })
    }

    /// [`Processor::process_batch`] with the replay check of
    /// [`Processor::process_unless_replayed`], asked in packet order.
    pub fn process_batch_unless_replayed<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        mut is_replay: impl FnMut(&ReplayTag) -> bool,
    ) -> usize {
        let n = packets.len().min(results.len());
        for (run, in_lanes) in self.runs(n) {
            let (p, r) = (&mut packets[run.clone()], &mut results[run]);
            if in_lanes {
                self.process_lanes(p, r, &mut is_replay);
            } else {
                self.process_small(p, r, &mut is_replay);
            }
        }
        n
    }

    /// Up to [`CHUNK`] packets without lanes: one at a time, or from [`BATCHED_FROM`] on
    /// with batched compressions.
    fn process_small<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        is_replay: &mut impl FnMut(&ReplayTag) -> bool,
    ) {
        if packets.len() < BATCHED_FROM {
            for (p, r) in packets.iter_mut().zip(results.iter_mut()) {
                *r = self.process_unless_replayed(p.as_mut(), &mut *is_replay);
            }
        } else {
            self.process_chunk(packets, results, is_replay);
        }
    }
}

/// Everything after the shared secret, common to the single and batched paths: MAC, replay
/// check, routing, body. Re-blinding α is left to the caller, which may batch it.
fn finish(
    keys: &HopKeys,
    header: &mut [u8; HEADER_LEN],
    body: &mut [u8],
    is_replay: impl FnOnce(&ReplayTag) -> bool,
) -> Result<Rest, ProcessError> {
    check_mac(keys, header)?;
    let tag = keys.tag();
    if is_replay(&tag) {
        return Err(ProcessError::Replayed);
    }
    let (command, next_phase) = unwrap_routing(keys, header)?;
    let done = Processed { command, tag };
    match command {
        // A reply's body is for its reply block's keys alone to open (`surb`).
        Command::Drop | Command::Reply { .. } => Ok(Rest::Done(done)),
        c if c.reads_payload() => open_body(keys, body).map(|()| Rest::Done(done)),
        _ => {
            lioness::decrypt(&keys.payload, body);
            Ok(Rest::Reblind(done, keys.half_blinding(), next_phase))
        }
    }
}

fn alpha_of(header: &[u8; HEADER_LEN]) -> [u8; ALPHA_LEN] {
    let mut alpha = [0u8; ALPHA_LEN];
    alpha.copy_from_slice(&header[..ALPHA_LEN]);
    alpha
}

fn check_mac(keys: &HopKeys, header: &[u8; HEADER_LEN]) -> Result<(), ProcessError> {
    let (beta, gamma) = header[ALPHA_LEN..].split_at(BETA_LEN);
    let expected = header_mac(&keys.header_mac, beta);
    if bool::from(expected.ct_eq(gamma)) {
        Ok(())
    } else {
        Err(ProcessError::MacMismatch)
    }
}

/// Decrypts β, takes this hop's command and the next MAC off its front, shifts the rest
/// forward and appends keystream, so the next hop gets a header of the same length.
fn unwrap_routing(
    keys: &HopKeys,
    header: &mut [u8; HEADER_LEN],
) -> Result<(Command, KeyPhase), MalformedCommand> {
    let mut cipher = stream_cipher(&keys.header_stream);
    let (beta, gamma) = header[ALPHA_LEN..].split_at_mut(BETA_LEN);
    cipher.apply_keystream(beta);
    let mut command = [0u8; COMMAND_LEN];
    command.copy_from_slice(&beta[..COMMAND_LEN]);
    gamma.copy_from_slice(&beta[COMMAND_LEN..ROUTING_LEN]);
    beta.copy_within(ROUTING_LEN.., 0);
    let appended = &mut beta[BETA_LEN - ROUTING_LEN..];
    appended.fill(0);
    cipher.apply_keystream(appended);
    debug_assert_eq!(gamma.len(), MAC_LEN);
    Command::decode_routed(&command)
}

/// Removes the last LIONESS layer and checks the zero tag the sender put in front.
fn open_body(keys: &HopKeys, body: &mut [u8]) -> Result<(), ProcessError> {
    lioness::decrypt(&keys.payload, body);
    if bool::from(body[..PAYLOAD_TAG_LEN].ct_eq(&[0u8; PAYLOAD_TAG_LEN])) {
        Ok(())
    } else {
        Err(ProcessError::PayloadTampered)
    }
}
