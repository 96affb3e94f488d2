//! Single-use reply blocks (SURBs): a client hands one out inside a message, and whoever
//! receives it can send a packet back along a path the client chose, without learning
//! where the client is, while the hops on the way cannot tell the reply from any other
//! packet.
//!
//! The block is the header of a packet along the reply path (built like any header, its
//! last hop `Reply { surb_id }` at the client that made it) and a fresh 32-byte key. The
//! replier writes the body `LIONESS(K̃, 0¹⁶ ‖ payload ‖ zeros)` under the key derived from
//! it and sends header and body to the path's first hop; each hop on the way LIONESS-
//! decrypts the body under its own key as usual; the last hop leaves it for the maker,
//! whose [`SurbOpener`] holds every earlier hop's key and K̃: it encrypts under them in
//! reverse and decrypts under K̃, and the zero prefix proves nothing changed on the way
//! (LIONESS scrambles the whole block on any change).
//!
//! Single use: the header is fixed, so a second packet from the same block carries the
//! same group element and the same replay tag at its first hop, which drops it as a
//! replay. The block names only the first hop; its keys are the hops' keys of the epoch it
//! was made in, so it must be used within that epoch's grace.

use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::build::{BuildError, Hop, check_path, check_sizes, write_header};
use crate::command::Command;
use crate::keys::HopKeys;
use crate::lioness::{self, LionessKey};
use crate::params::{HEADER_LEN, MAX_HOPS, PAYLOAD_TAG_LEN, Params};
use crate::primitives::labelled_hash;
use crate::process::ProcessError;

/// Bytes of the replier's key in a block.
pub const SURB_KEY_LEN: usize = 32;
/// Bytes of a reply block on the wire: the header, then the replier's key.
pub const SURB_LEN: usize = HEADER_LEN + SURB_KEY_LEN;

const REPLY_KEY_LABELS: [&[u8]; 4] = [
    b"loopix-v1 surb pi 1",
    b"loopix-v1 surb pi 2",
    b"loopix-v1 surb pi 3",
    b"loopix-v1 surb pi 4",
];

/// The LIONESS key a replier encrypts under, from the block's key.
fn reply_key(key: &[u8; SURB_KEY_LEN]) -> LionessKey {
    LionessKey::from_round_keys(REPLY_KEY_LABELS.map(|l| labelled_hash(l, key)))
}

/// A reply block, as its maker hands it out. See the module docs.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Surb {
    header: [u8; HEADER_LEN],
    key: [u8; SURB_KEY_LEN],
}

impl Surb {
    /// The block as bytes, [`SURB_LEN`] of them.
    pub fn to_bytes(&self) -> [u8; SURB_LEN] {
        let mut out = [0u8; SURB_LEN];
        out[..HEADER_LEN].copy_from_slice(&self.header);
        out[HEADER_LEN..].copy_from_slice(&self.key);
        out
    }

    /// A block from its bytes; `None` unless exactly [`SURB_LEN`] of them. (Whether it
    /// leads anywhere shows only when it is used: its hops check their MACs.)
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (header, key) = bytes.split_first_chunk::<HEADER_LEN>()?;
        Some(Self {
            header: *header,
            key: (*key).try_into().ok()?,
        })
    }

    /// Writes a reply carrying `payload` into `out` (exactly one packet long), to be sent
    /// to the block's first hop.
    pub fn write_reply(
        &self,
        params: &Params,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), BuildError> {
        check_sizes(params, payload, out.len())?;
        let (header, body) = out.split_at_mut(HEADER_LEN);
        header.copy_from_slice(&self.header);
        body.fill(0);
        body[PAYLOAD_TAG_LEN..PAYLOAD_TAG_LEN + payload.len()].copy_from_slice(payload);
        lioness::encrypt(&reply_key(&self.key), body);
        Ok(())
    }
}

/// What the maker of a block keeps to open the reply: the payload keys of the hops before
/// its own and the replier's key. Wiped when dropped.
#[derive(ZeroizeOnDrop)]
pub struct SurbOpener {
    hops: [LionessKey; MAX_HOPS],
    /// Hops before the maker's own.
    before: usize,
    reply: LionessKey,
    #[zeroize(skip)]
    surb_id: u64,
}

impl SurbOpener {
    /// The id the block's last hop carries (`Reply { surb_id }`).
    pub fn surb_id(&self) -> u64 {
        self.surb_id
    }

    /// Opens a reply's body in `packet` as the maker's own hop left it (after processing
    /// gave `Reply { surb_id }`); returns the payload (zero-padded to the network's
    /// payload size), or [`ProcessError::PayloadTampered`] if anything changed on the way.
    pub fn open<'a>(
        &self,
        params: &Params,
        packet: &'a mut [u8],
    ) -> Result<&'a [u8], ProcessError> {
        let expected = params.packet_len();
        if packet.len() != expected {
            return Err(ProcessError::WrongLength {
                expected,
                got: packet.len(),
            });
        }
        let body = &mut packet[HEADER_LEN..];
        for key in self.hops[..self.before].iter().rev() {
            lioness::encrypt(key, body);
        }
        lioness::decrypt(&self.reply, body);
        // Compared in constant time, as at a final hop: how long the check takes says
        // nothing about which tag byte was changed.
        if !bool::from(body[..PAYLOAD_TAG_LEN].ct_eq(&[0u8; PAYLOAD_TAG_LEN])) {
            return Err(ProcessError::PayloadTampered);
        }
        Ok(&packet[HEADER_LEN + PAYLOAD_TAG_LEN..])
    }
}

/// Makes a reply block along `path`, whose last hop must be `Reply` (at the maker).
pub fn build_surb<R: CryptoRng + ?Sized>(
    path: &[Hop],
    rng: &mut R,
) -> Result<(Surb, SurbOpener), BuildError> {
    check_path(path)?;
    let last = path.len() - 1;
    let Command::Reply { surb_id } = path[last].command else {
        return Err(BuildError::PathShape { hop: last });
    };
    let mut keys: [HopKeys; MAX_HOPS] = Default::default();
    let mut header = [0u8; HEADER_LEN];
    write_header(path, &mut keys, rng, &mut header, None)?;
    let mut key = [0u8; SURB_KEY_LEN];
    rng.fill_bytes(&mut key);
    let mut hops: [LionessKey; MAX_HOPS] = Default::default();
    for (dst, k) in hops.iter_mut().zip(&keys[..last]) {
        *dst = k.payload.clone();
    }
    let opener = SurbOpener {
        hops,
        before: last,
        reply: reply_key(&key),
        surb_id,
    };
    Ok((Surb { header, key }, opener))
}
