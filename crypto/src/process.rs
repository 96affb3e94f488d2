//! Packet processing at a hop: in place on the caller's buffer, no allocation, and every
//! failure a typed [`ProcessError`]. The order of checks is the defence: the header MAC
//! is verified before anything else is decrypted, and a replay is rejected before the
//! costly re-blinding and payload work.

use core::fmt;

use ctr::cipher::StreamCipher;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::command::{Command, MalformedCommand};
use crate::keys::{HopKeys, ReplayTag, SecretKey};
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
    params: Params,
}

impl Processor {
    /// A processor for packets of `params` under `key`.
    pub fn new(key: SecretKey, params: Params) -> Self {
        Self { key, params }
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
        let expected = self.params.packet_len();
        let got = packet.len();
        let (header, body) = match packet.split_first_chunk_mut::<HEADER_LEN>() {
            Some((h, b)) if got == expected => (h, b),
            _ => return Err(ProcessError::WrongLength { expected, got }),
        };
        let alpha_bytes = alpha_of(header);
        let alpha = decompress(&alpha_bytes).ok_or(ProcessError::InvalidGroupElement)?;
        let secret = Zeroizing::new(compress(&mul(&alpha, self.key.scalar())));
        let keys = HopKeys::derive(&secret);
        check_mac(&keys, header)?;
        let tag = keys.tag();
        if is_replay(&tag) {
            return Err(ProcessError::Replayed);
        }
        let command = unwrap_routing(&keys, header)?;
        match command {
            Command::Drop => {}
            c if c.reads_payload() => open_body(&keys, body)?,
            _ => {
                header[..ALPHA_LEN].copy_from_slice(&compress(&mul(&alpha, &keys.blinding())));
                lioness::decrypt(&keys.payload, body);
            }
        }
        Ok(Processed { command, tag })
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

    /// [`Processor::process_batch`] with the replay check of
    /// [`Processor::process_unless_replayed`], asked in packet order.
    pub fn process_batch_unless_replayed<B: AsMut<[u8]>>(
        &self,
        packets: &mut [B],
        results: &mut [Result<Processed, ProcessError>],
        mut is_replay: impl FnMut(&ReplayTag) -> bool,
    ) -> usize {
        let n = packets.len().min(results.len());
        for (p, r) in packets.iter_mut().zip(results.iter_mut()) {
            *r = self.process_unless_replayed(p.as_mut(), &mut is_replay);
        }
        n
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
) -> Result<Command, MalformedCommand> {
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
    Command::decode(&command)
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
