//! The packet format as the node logic sees it: build, unwrap, fill a dummy.
//!
//! Every node and client is generic over a [`Codec`] so that the mixing, delay and cover
//! logic can run unchanged over a cheap stand-in when an experiment needs millions of
//! packets (the anonymity analysis of `loopix sim`). Sphinx ([`loopix_crypto::Processor`])
//! is the default everywhere and the only codec the runtime uses. [`Plaintext`] keeps the
//! wire shape (same length, same per-hop commands, a fresh replay tag per hop) and none
//! of the secrecy: it exists for simulations and must never carry traffic.

use loopix_crypto::params::{HEADER_LEN, MAX_HOPS, PAYLOAD_TAG_LEN};
use loopix_crypto::{
    BuildError, BuildJob, Command, Hop, KeyPhase, Params, ProcessError, Processed, Processor,
    REPLAY_TAG_LEN, ReplayTag, SURB_LEN, SecretKey, Surb, SurbOpener,
};
use rand_core::CryptoRng;

/// A packet format: the unwrapping side is a value (it holds the hop's key), building and
/// dummies are associated functions (senders hold only public keys).
/// The bytes of a dummy a codec may make ahead, in batches ([`Codec::fill_dummy_heads`]):
/// a Sphinx packet's group element.
pub const DUMMY_HEAD_LEN: usize = loopix_crypto::params::ALPHA_LEN;

/// The most packets one [`Codec::build_batch_into`] builds.
pub const MAX_BUILD_BATCH: usize = 32;

pub trait Codec: Sized + 'static {
    /// How outputs name the codec they ran with.
    const NAME: &'static str;

    /// Whether links between nodes carry real tags. The stand-in for experiments frames
    /// them the same (trailer, counters, windows, adjacency) but skips the MAC, which
    /// would otherwise cost it more than its whole hop.
    const AUTHENTICATES_LINKS: bool = true;

    /// The unwrapping side for `key`.
    fn new(key: SecretKey, params: Params) -> Self;

    fn params(&self) -> &Params;

    /// Unwraps in place, asking `is_replay` about the packet's tag before the costly work.
    fn unwrap(
        &self,
        packet: &mut [u8],
        is_replay: impl FnOnce(&ReplayTag) -> bool,
    ) -> Result<Processed, ProcessError>;

    /// [`Codec::unwrap`] over a batch, the replay check asked in packet order.
    fn unwrap_batch<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        mut is_replay: impl FnMut(&ReplayTag) -> bool,
    ) -> usize {
        let n = packets.len().min(results.len());
        for (p, r) in packets.iter_mut().zip(results.iter_mut()) {
            *r = self.unwrap(p.as_mut(), &mut is_replay);
        }
        n
    }

    /// How many packets of a batch of `n` [`Codec::unwrap_batch`] unwraps in vector lanes
    /// (none unless the codec has lanes).
    fn lanes_taken(&self, n: usize) -> usize {
        let _ = n;
        0
    }

    /// Packets in one run of the codec's vector lanes (1: it has none). What a hop lets
    /// packets wait for ([`crate::pipeline::gather`]).
    fn lanes(&self) -> usize {
        1
    }

    /// Writes a packet along `path` carrying `payload` into `out`.
    fn build_into<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(), BuildError>;

    /// Builds one packet per job into `outs` (each one packet long), the packets
    /// [`Codec::build_into`] would build for the jobs in turn from the same `rng`, sharing
    /// what work the codec can: Sphinx multiplies every packet's hops in vector lanes
    /// ([`loopix_crypto::build_batch`]), about half the cost of building them one by one.
    /// On an error nothing is built.
    fn build_batch_into<R: CryptoRng + ?Sized>(
        params: &Params,
        jobs: &[BuildJob<'_>],
        rng: &mut R,
        outs: &mut [&mut [u8]],
    ) -> Result<(), BuildError> {
        if outs.len() != jobs.len() {
            return Err(BuildError::BatchLength {
                jobs: jobs.len(),
                outs: outs.len(),
                macs: jobs.len(),
            });
        }
        for (job, out) in jobs.iter().zip(outs.iter_mut()) {
            Self::build_into(params, job.path, job.payload, rng, out)?;
        }
        Ok(())
    }

    /// [`Codec::build_into`], drawn until `accept` takes the first bytes of the packet as
    /// its last hop receives them (how a sharded node steers its own loops back to the
    /// shard that sent them; see [`loopix_crypto::build_into_steered`]).
    fn build_into_steered<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
        accept: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), BuildError>;

    /// What the maker of a reply block keeps to open the reply.
    type SurbOpener;

    /// A reply block along `path` (ending in `Reply { surb_id }`), as the bytes a message
    /// carries, and what opens the reply (see [`loopix_crypto::surb`]).
    fn build_surb<R: CryptoRng + ?Sized>(
        path: &[Hop],
        rng: &mut R,
    ) -> Result<([u8; SURB_LEN], Self::SurbOpener), BuildError>;

    /// Writes a reply carrying `payload` from block `surb` into `out` (one packet).
    fn write_reply(
        params: &Params,
        surb: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), BuildError>;

    /// The payload of a reply in `packet`, as this client's unwrap (`Reply`) left it.
    fn open_reply<'a>(
        params: &Params,
        opener: &Self::SurbOpener,
        packet: &'a mut [u8],
    ) -> Result<&'a [u8], ProcessError>;

    /// The key phase a packet was built for, read before any crypto (see [`KeyPhase`]).
    fn key_phase(packet: &[u8]) -> KeyPhase {
        KeyPhase::of_packet(packet).unwrap_or_default()
    }

    /// Fills `out` with bytes no observer can tell from a packet of this codec.
    fn fill_dummy<R: CryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]);

    /// Writes the first [`DUMMY_HEAD_LEN`] bytes of `heads.len()` dummies at once (what
    /// [`Codec::fill_dummy`] writes first; the rest of a dummy is random bytes): where a
    /// codec can make them cheaper together (Sphinx: one field inversion for the lot).
    fn fill_dummy_heads<R: CryptoRng + ?Sized>(rng: &mut R, heads: &mut [[u8; DUMMY_HEAD_LEN]]) {
        for head in heads {
            Self::fill_dummy(rng, head);
        }
    }

    /// An id that stays the same on every hop of one packet's path, so a simulator can
    /// tell an experiment which datagram is which (its ground truth). Sphinx makes every
    /// hop's bytes unlinkable, so it has none.
    fn trace_id(_packet: &[u8]) -> Option<u64> {
        None
    }
}

impl Codec for Processor {
    const NAME: &'static str = "sphinx";

    fn new(key: SecretKey, params: Params) -> Self {
        Processor::new(key, params)
    }

    fn params(&self) -> &Params {
        Processor::params(self)
    }

    fn unwrap(
        &self,
        packet: &mut [u8],
        is_replay: impl FnOnce(&ReplayTag) -> bool,
    ) -> Result<Processed, ProcessError> {
        self.process_unless_replayed(packet, is_replay)
    }

    fn unwrap_batch<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        is_replay: impl FnMut(&ReplayTag) -> bool,
    ) -> usize {
        self.process_batch_unless_replayed(packets, results, is_replay)
    }

    fn lanes_taken(&self, n: usize) -> usize {
        Processor::lanes_taken(self, n)
    }

    fn lanes(&self) -> usize {
        Processor::lanes(self)
    }

    fn build_into<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(), BuildError> {
        loopix_crypto::build_into(params, path, payload, rng, out)
    }

    fn build_batch_into<R: CryptoRng + ?Sized>(
        params: &Params,
        jobs: &[BuildJob<'_>],
        rng: &mut R,
        outs: &mut [&mut [u8]],
    ) -> Result<(), BuildError> {
        // Each packet's second-hop MAC is written beside it; a sender has no use for it.
        let mut macs = [[0u8; loopix_crypto::params::MAC_LEN]; MAX_BUILD_BATCH];
        let Some(macs) = macs.get_mut(..jobs.len()) else {
            return Err(BuildError::BatchLength {
                jobs: jobs.len(),
                outs: outs.len(),
                macs: MAX_BUILD_BATCH,
            });
        };
        let kernel = loopix_crypto::lanes::Kernel::detect();
        loopix_crypto::build_batch(params, kernel, jobs, rng, outs, macs)
    }

    fn build_into_steered<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
        accept: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), BuildError> {
        loopix_crypto::build_into_steered(params, path, payload, rng, out, &|alpha| accept(alpha))
    }

    fn fill_dummy<R: CryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) {
        loopix_crypto::fill_dummy(rng, out)
    }

    fn fill_dummy_heads<R: CryptoRng + ?Sized>(rng: &mut R, heads: &mut [[u8; DUMMY_HEAD_LEN]]) {
        loopix_crypto::fill_dummy_alphas(rng, heads)
    }

    type SurbOpener = SurbOpener;

    fn build_surb<R: CryptoRng + ?Sized>(
        path: &[Hop],
        rng: &mut R,
    ) -> Result<([u8; SURB_LEN], SurbOpener), BuildError> {
        let (surb, opener) = loopix_crypto::build_surb(path, rng)?;
        Ok((surb.to_bytes(), opener))
    }

    fn write_reply(
        params: &Params,
        surb: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), BuildError> {
        let surb = Surb::from_bytes(surb).ok_or(BuildError::BufferLength {
            expected: SURB_LEN,
            got: surb.len(),
        })?;
        surb.write_reply(params, payload, out)
    }

    fn open_reply<'a>(
        params: &Params,
        opener: &SurbOpener,
        packet: &'a mut [u8],
    ) -> Result<&'a [u8], ProcessError> {
        opener.open(params, packet)
    }
}

/// Bytes one hop takes in a [`Plaintext`] header: its replay tag and its command.
const HOP_FIELD_LEN: usize = REPLAY_TAG_LEN + loopix_crypto::params::COMMAND_LEN;
const _: () = assert!(HOP_FIELD_LEN * MAX_HOPS <= HEADER_LEN);
/// Where a [`Plaintext`] header keeps the phase of the key its next hop unwraps it with.
const PHASE_AT: usize = HOP_FIELD_LEN * MAX_HOPS;
const _: () = assert!(PHASE_AT < HEADER_LEN);
/// Bytes of a [`Plaintext`] packet's trace id, in the body's first (tag) bytes.
const TRACE_LEN: usize = 8;
const _: () = assert!(TRACE_LEN <= PAYLOAD_TAG_LEN);

/// A stand-in codec for simulations: the header is the path's commands in the clear, each
/// with a random replay tag, shifted one field per hop; the body is the payload as is.
/// Costs a memmove per hop instead of ~50 µs of curve arithmetic. No secrecy, no
/// integrity: never for a network.
#[derive(Debug)]
pub struct Plaintext {
    params: Params,
}

impl Codec for Plaintext {
    const NAME: &'static str = "plaintext";
    const AUTHENTICATES_LINKS: bool = false;

    fn new(_key: SecretKey, params: Params) -> Self {
        Self { params }
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn unwrap(
        &self,
        packet: &mut [u8],
        is_replay: impl FnOnce(&ReplayTag) -> bool,
    ) -> Result<Processed, ProcessError> {
        let expected = self.params.packet_len();
        if packet.len() != expected {
            return Err(ProcessError::WrongLength {
                expected,
                got: packet.len(),
            });
        }
        let tag = ReplayTag(packet[..REPLAY_TAG_LEN].try_into().expect("tag length"));
        let command_bytes = packet[REPLAY_TAG_LEN..HOP_FIELD_LEN]
            .try_into()
            .expect("command length");
        let (command, next_phase) =
            Command::decode_routed(command_bytes).map_err(|_| ProcessError::MalformedCommand)?;
        if is_replay(&tag) {
            return Err(ProcessError::Replayed);
        }
        let header = &mut packet[..HOP_FIELD_LEN * MAX_HOPS];
        header.copy_within(HOP_FIELD_LEN.., 0);
        header[HOP_FIELD_LEN * (MAX_HOPS - 1)..].fill(0);
        packet[PHASE_AT] = next_phase.index() as u8;
        Ok(Processed { command, tag })
    }

    fn build_into<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(), BuildError> {
        if path.is_empty() || path.len() > MAX_HOPS {
            return Err(BuildError::PathLength { hops: path.len() });
        }
        loopix_crypto::check_sizes(params, payload, out.len())?;
        out.fill(0);
        let next_phases = path[1..].iter().map(|h| h.phase).chain([KeyPhase::Even]);
        for ((field, hop), next_phase) in out[..HOP_FIELD_LEN * MAX_HOPS]
            .chunks_exact_mut(HOP_FIELD_LEN)
            .zip(path)
            .zip(next_phases)
        {
            rng.fill_bytes(&mut field[..REPLAY_TAG_LEN]);
            field[REPLAY_TAG_LEN..].copy_from_slice(&hop.command.encode_routed(next_phase));
        }
        out[PHASE_AT] = path[0].phase.index() as u8;
        // The bytes Sphinx keeps for its zero tag carry the trace id here.
        rng.fill_bytes(&mut out[HEADER_LEN..HEADER_LEN + TRACE_LEN]);
        let body = HEADER_LEN + PAYLOAD_TAG_LEN;
        out[body..body + payload.len()].copy_from_slice(payload);
        Ok(())
    }

    fn build_into_steered<R: CryptoRng + ?Sized>(
        params: &Params,
        path: &[Hop],
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
        accept: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), BuildError> {
        // The last hop's packet begins with its field's replay tag.
        let last_field = HOP_FIELD_LEN * path.len().saturating_sub(1);
        for _ in 0..loopix_crypto::MAX_STEER_TRIES {
            Self::build_into(params, path, payload, rng, out)?;
            if accept(&out[last_field..last_field + REPLAY_TAG_LEN]) {
                return Ok(());
            }
        }
        Err(BuildError::Unsteerable {
            tries: loopix_crypto::MAX_STEER_TRIES,
        })
    }

    /// A plaintext reply block is the header of a plaintext packet along its path; the
    /// reply's body is its payload as is.
    type SurbOpener = ();

    fn build_surb<R: CryptoRng + ?Sized>(
        path: &[Hop],
        rng: &mut R,
    ) -> Result<([u8; SURB_LEN], ()), BuildError> {
        // Any payload size holds an empty payload; only the header is kept.
        let params = Params::new(loopix_crypto::params::MIN_PAYLOAD_BYTES)
            .map_err(|_| BuildError::PathLength { hops: path.len() })?;
        let mut packet = vec![0u8; params.packet_len()];
        Self::build_into(&params, path, &[], rng, &mut packet)?;
        let mut surb = [0u8; SURB_LEN];
        surb[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
        Ok((surb, ()))
    }

    fn write_reply(
        params: &Params,
        surb: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), BuildError> {
        if surb.len() != SURB_LEN {
            return Err(BuildError::BufferLength {
                expected: SURB_LEN,
                got: surb.len(),
            });
        }
        loopix_crypto::check_sizes(params, payload, out.len())?;
        out.fill(0);
        out[..HEADER_LEN].copy_from_slice(&surb[..HEADER_LEN]);
        let body = HEADER_LEN + PAYLOAD_TAG_LEN;
        out[body..body + payload.len()].copy_from_slice(payload);
        Ok(())
    }

    fn open_reply<'a>(
        params: &Params,
        _: &(),
        packet: &'a mut [u8],
    ) -> Result<&'a [u8], ProcessError> {
        params.payload(packet).ok_or(ProcessError::WrongLength {
            expected: params.packet_len(),
            got: packet.len(),
        })
    }

    fn key_phase(packet: &[u8]) -> KeyPhase {
        match packet.get(PHASE_AT) {
            Some(1) => KeyPhase::Odd,
            _ => KeyPhase::Even,
        }
    }

    fn trace_id(packet: &[u8]) -> Option<u64> {
        let bytes = packet.get(HEADER_LEN..HEADER_LEN + TRACE_LEN)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn fill_dummy<R: CryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) {
        rng.fill_bytes(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::NodeId;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn path(key: loopix_crypto::PublicKey) -> [Hop; 3] {
        let relay = |n| Command::Relay {
            next: NodeId(n),
            delay_us: 7,
        };
        [
            Hop::new(key, relay(2)),
            Hop::new(key, relay(3)),
            Hop::new(key, Command::Final),
        ]
    }

    /// Both codecs walk the same path to the same commands and the same payload, so a
    /// simulation over the stand-in routes exactly as one over Sphinx.
    fn walk<C: Codec>() -> (Vec<Command>, Vec<u8>) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = SecretKey::generate(&mut rng);
        let params = Params::new(64).unwrap();
        let mut packet = vec![0u8; params.packet_len()];
        C::build_into(
            &params,
            &path(key.public_key()),
            b"hello",
            &mut rng,
            &mut packet,
        )
        .unwrap();
        let codec = C::new(key, params);
        let mut seen = std::collections::HashSet::new();
        let commands = (0..3)
            .map(|_| {
                let p = codec.unwrap(&mut packet, |t| !seen.insert(*t)).unwrap();
                p.command
            })
            .collect();
        (commands, params.payload(&packet).unwrap()[..5].to_vec())
    }

    /// Both codecs steer: the packet reaching the last hop begins with bytes `accept` took.
    fn steered<C: Codec>() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = SecretKey::generate(&mut rng);
        let params = Params::new(64).unwrap();
        let codec = C::new(key.clone(), params);
        for want in 0..3 {
            let mut packet = vec![0u8; params.packet_len()];
            let mine = |head: &[u8]| crate::pipeline::steering::owner_shard(head, 3) == want;
            let path = path(key.public_key());
            C::build_into_steered(&params, &path, b"", &mut rng, &mut packet, &mine).unwrap();
            for _ in 0..2 {
                codec.unwrap(&mut packet, |_| false).unwrap();
            }
            assert_eq!(
                crate::pipeline::steering::owner_shard(&packet, 3),
                want,
                "{}",
                C::NAME
            );
        }
    }

    #[test]
    fn both_codecs_steer_the_last_hop() {
        steered::<Processor>();
        steered::<Plaintext>();
    }

    /// A batch is the packets built one by one from the same randomness, in either codec;
    /// mismatched or oversized batches are refused before anything is drawn.
    fn batch_matches_singles<C: Codec>() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let key = SecretKey::generate(&mut rng);
        let params = Params::new(64).unwrap();
        let path = path(key.public_key());
        let payloads: [&[u8]; 3] = [b"", b"loop", b"third"];
        let jobs = payloads.map(|payload| BuildJob {
            path: &path,
            payload,
        });
        let mut batch = vec![vec![0u8; params.packet_len()]; 3];
        let mut outs: Vec<&mut [u8]> = batch.iter_mut().map(Vec::as_mut_slice).collect();
        C::build_batch_into(
            &params,
            &jobs,
            &mut ChaCha20Rng::seed_from_u64(5),
            &mut outs,
        )
        .unwrap();
        let mut singles_rng = ChaCha20Rng::seed_from_u64(5);
        for (job, built) in jobs.iter().zip(&batch) {
            let mut one = vec![0u8; params.packet_len()];
            C::build_into(&params, job.path, job.payload, &mut singles_rng, &mut one).unwrap();
            assert_eq!(&one, built, "{}", C::NAME);
        }
    }

    #[test]
    fn a_batch_builds_what_single_builds_would() {
        batch_matches_singles::<Processor>();
        batch_matches_singles::<Plaintext>();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let key = SecretKey::generate(&mut rng);
        let params = Params::new(64).unwrap();
        let path = path(key.public_key());
        let jobs = vec![
            BuildJob {
                path: &path,
                payload: b"",
            };
            MAX_BUILD_BATCH + 1
        ];
        let mut bufs = vec![vec![0u8; params.packet_len()]; MAX_BUILD_BATCH + 1];
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(matches!(
            Processor::build_batch_into(&params, &jobs, &mut rng, &mut outs),
            Err(BuildError::BatchLength { .. })
        ));
    }

    #[test]
    fn plaintext_routes_like_sphinx() {
        let sphinx = walk::<Processor>();
        assert_eq!(walk::<Plaintext>(), sphinx);
        assert_eq!(sphinx.1, b"hello");
    }

    #[test]
    fn plaintext_tags_are_per_hop_and_replays_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = SecretKey::generate(&mut rng);
        let params = Params::new(64).unwrap();
        let mut packet = vec![0u8; params.packet_len()];
        Plaintext::build_into(&params, &path(key.public_key()), b"", &mut rng, &mut packet)
            .unwrap();
        let copy = packet.clone();
        let codec = Plaintext::new(key, params);
        let trace = Plaintext::trace_id(&packet);
        let first = codec.unwrap(&mut packet, |_| false).unwrap();
        assert!(trace.is_some() && Plaintext::trace_id(&packet) == trace);
        assert_eq!(Processor::trace_id(&packet), None);
        let second = codec.unwrap(&mut packet, |_| false).unwrap();
        assert_ne!(first.tag, second.tag);
        let mut again = copy;
        assert_eq!(
            codec.unwrap(&mut again, |t| *t == first.tag),
            Err(ProcessError::Replayed)
        );
        assert!(matches!(
            codec.unwrap(&mut [0u8; 3], |_| false),
            Err(ProcessError::WrongLength { .. })
        ));
    }
}
