//! The network document: one epoch's topology (network parameters, every node with its
//! epoch keys, every client), signed by directory authorities. Nodes and clients take
//! their topology from it instead of a file copied by hand, and refuse one that is not
//! signed by enough authorities they trust, is for another epoch, or is out of date.
//!
//! Format (text; the first five lines and the body are what is signed):
//! ```text
//! loopix-document v1
//! epoch 1474000
//! valid_from 1768798800          unix seconds
//! valid_until 1768801260
//! body 5321                      the body's length in bytes
//! <the body: a topology in the TOML format of `topology.rs`>
//! signature <authority key, 64 hex digits> <Ed25519 signature, 128 hex digits>
//! signature ...                  one line per authority that signed
//! ```
//! Several authorities sign the same bytes; a reader needs `threshold` distinct authorities
//! of its own list, by default more than half of them ([`Threshold::Majority`]), so no
//! minority of authorities can sign a forged network alone. The document for epoch `e` lists each node's keys for `e` and `e + 1`
//! (what its authority had), so a sender can build packets whose later hops fall after
//! the boundary; it is valid from when it is published until `grace` after its epoch ends.

use std::collections::BTreeSet;

use loopix_crypto::{IdentityPublic, IdentitySecret, SIGNATURE_LEN};

use crate::field_error::FieldError;
use crate::network::topology::Topology;

/// What every document signature is made under (see [`IdentitySecret::sign`]).
const LABEL: &[u8] = b"loopix-document v1";
const MAGIC: &str = "loopix-document v1";

/// The largest document accepted: about 40,000 clients and nodes. A fetch reads no more.
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;

/// Most signatures a document may carry (more authorities than any network runs).
pub const MAX_SIGNATURES: usize = 64;

/// Whom a reader trusts: the authorities' keys, and how many must have signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    authorities: Vec<IdentityPublic>,
    threshold: usize,
}

/// How many of the authorities a reader names must have signed a document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threshold {
    /// More than half of them (the default).
    #[default]
    Majority,
    /// At least this many, which must be more than half.
    AtLeast(usize),
    /// At least this many, fewer than half allowed: any that many authorities together (one,
    /// at 1) can then sign a forged network document, and the reader takes it.
    AllowMinority(usize),
}

impl Threshold {
    /// From a reader's options: a count if one was given, and whether it may be a minority.
    pub fn from_options(count: Option<usize>, allow_minority: bool) -> Self {
        match (count, allow_minority) {
            (None, _) => Self::Majority,
            (Some(k), false) => Self::AtLeast(k),
            (Some(k), true) => Self::AllowMinority(k),
        }
    }
}

/// A trust setting that cannot be met or means nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustError {
    NoAuthorities,
    /// The threshold must be in `1..=authorities`.
    Threshold {
        threshold: usize,
        authorities: usize,
    },
    /// Not more than half of the authorities, and a minority was not allowed.
    Minority {
        threshold: usize,
        authorities: usize,
    },
    /// The same key twice would count one authority twice.
    Duplicate,
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAuthorities => f.write_str("no authority is named"),
            Self::Threshold {
                threshold,
                authorities,
            } => write!(
                f,
                "threshold {threshold} must be in 1..={authorities} (the authorities named)"
            ),
            Self::Minority {
                threshold,
                authorities,
            } => write!(
                f,
                "threshold {threshold} of {authorities} authorities is not a majority: any \
                 {threshold} of them could sign a forged network document alone; leave the \
                 threshold out for a majority ({}), or allow a minority explicitly",
                authorities / 2 + 1
            ),
            Self::Duplicate => f.write_str("an authority key is named twice"),
        }
    }
}

impl Trust {
    /// Trust in `threshold` of `authorities`.
    pub fn new(authorities: Vec<IdentityPublic>, threshold: Threshold) -> Result<Self, TrustError> {
        if authorities.is_empty() {
            return Err(TrustError::NoAuthorities);
        }
        if authorities.iter().collect::<BTreeSet<_>>().len() != authorities.len() {
            return Err(TrustError::Duplicate);
        }
        let majority = authorities.len() / 2 + 1;
        let threshold = match threshold {
            Threshold::Majority => majority,
            Threshold::AtLeast(k) if k < majority && (1..=authorities.len()).contains(&k) => {
                return Err(TrustError::Minority {
                    threshold: k,
                    authorities: authorities.len(),
                });
            }
            Threshold::AtLeast(k) | Threshold::AllowMinority(k) => k,
        };
        if !(1..=authorities.len()).contains(&threshold) {
            return Err(TrustError::Threshold {
                threshold,
                authorities: authorities.len(),
            });
        }
        Ok(Self {
            authorities,
            threshold,
        })
    }

    /// How many authorities must have signed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The authorities' keys.
    pub fn authorities(&self) -> &[IdentityPublic] {
        &self.authorities
    }
}

/// A verified document.
#[derive(Clone, Debug)]
pub struct Document {
    pub epoch: u64,
    /// Unix µs.
    pub valid_from_us: u64,
    pub valid_until_us: u64,
    pub topology: Topology,
    /// The trusted authorities whose signatures verified.
    pub signers: Vec<IdentityPublic>,
}

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum DocumentError {
    /// Not in the format (which line, what is wrong).
    Malformed(String),
    TooLarge {
        bytes: usize,
    },
    /// No signature at all.
    Unsigned,
    /// Signed, but by no authority the reader trusts.
    UnknownSigner(IdentityPublic),
    /// A trusted authority's signature that does not verify (the document or the
    /// signature was changed).
    BadSignature(IdentityPublic),
    /// Fewer trusted authorities signed than the reader requires.
    TooFewSignatures {
        valid: usize,
        needed: usize,
    },
    /// Its validity ended (unix s).
    Expired {
        epoch: u64,
        valid_until_s: u64,
        now_s: u64,
    },
    /// Not valid yet (unix s).
    NotYetValid {
        epoch: u64,
        valid_from_s: u64,
        now_s: u64,
    },
    /// For another epoch than the one asked for.
    WrongEpoch {
        asked: u64,
        got: u64,
    },
    /// The signed topology itself is invalid.
    Topology(FieldError),
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &IdentityPublic| hex::encode(k.to_bytes());
        match self {
            Self::Malformed(what) => write!(f, "not a network document: {what}"),
            Self::TooLarge { bytes } => {
                write!(f, "{bytes} bytes: larger than {MAX_DOCUMENT_BYTES}")
            }
            Self::Unsigned => f.write_str("unsigned"),
            Self::UnknownSigner(k) => {
                write!(f, "signed only by keys not trusted here ({})", key(k))
            }
            Self::BadSignature(k) => write!(
                f,
                "the signature of authority {} does not verify: the document was changed",
                key(k)
            ),
            Self::TooFewSignatures { valid, needed } => write!(
                f,
                "signed by {valid} trusted authorities; {needed} are required"
            ),
            Self::Expired {
                epoch,
                valid_until_s,
                now_s,
            } => write!(
                f,
                "the document of epoch {epoch} expired {} s ago (valid until {valid_until_s})",
                now_s.saturating_sub(*valid_until_s)
            ),
            Self::NotYetValid {
                epoch,
                valid_from_s,
                now_s,
            } => write!(
                f,
                "the document of epoch {epoch} is valid only in {} s (from {valid_from_s})",
                valid_from_s.saturating_sub(*now_s)
            ),
            Self::WrongEpoch { asked, got } => {
                write!(
                    f,
                    "asked for epoch {asked}, got the document of epoch {got}"
                )
            }
            Self::Topology(e) => write!(f, "its topology: {e}"),
        }
    }
}

impl std::error::Error for DocumentError {}

/// The signed part of a document: header and body.
pub struct Unsigned {
    pub epoch: u64,
    /// Unix s.
    pub valid_from_s: u64,
    pub valid_until_s: u64,
    pub body: String,
}

impl Unsigned {
    /// The bytes every authority signs.
    pub fn signed_text(&self) -> String {
        format!(
            "{MAGIC}\nepoch {}\nvalid_from {}\nvalid_until {}\nbody {}\n{}",
            self.epoch,
            self.valid_from_s,
            self.valid_until_s,
            self.body.len(),
            self.body
        )
    }

    /// The document signed by `key`: more authorities add theirs with [`cosign`].
    pub fn sign(&self, key: &IdentitySecret) -> String {
        let mut text = self.signed_text();
        push_signature(&mut text, key);
        text
    }
}

fn push_signature(text: &mut String, key: &IdentitySecret) {
    let sig = key.sign(LABEL, text.as_bytes());
    text.push_str(&signature_line(&key.public(), &sig));
}

/// One `signature <key> <signature>` line.
fn signature_line(key: &IdentityPublic, sig: &[u8; SIGNATURE_LEN]) -> String {
    format!(
        "signature {} {}\n",
        hex::encode(key.to_bytes()),
        hex::encode(sig)
    )
}

/// Adds `key`'s signature to a document (another authority's), after checking it is one.
/// Its earlier signatures are kept as they are; signing twice changes nothing.
pub fn cosign(document: &[u8], key: &IdentitySecret) -> Result<String, DocumentError> {
    let parsed = parse(document)?;
    if parsed.signatures.iter().any(|(k, _)| *k == key.public()) {
        return Ok(String::from_utf8_lossy(document).into_owned());
    }
    let mut text = String::from_utf8_lossy(parsed.signed).into_owned();
    let sig = key.sign(LABEL, parsed.signed);
    for (k, s) in &parsed.signatures {
        text.push_str(&signature_line(k, s));
    }
    text.push_str(&signature_line(&key.public(), &sig));
    Ok(text)
}

/// Why another authority's signatures could not be added to a document.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeError {
    /// One of the two is not a document.
    Document(DocumentError),
    /// The other authority signed a different document (other nodes, keys or times):
    /// their signatures do not count for this one.
    Differs,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Document(e) => e.fmt(f),
            Self::Differs => f.write_str("the other authority signed a different document"),
        }
    }
}

/// Adds to `ours` the signatures in `theirs` (the same document as another authority
/// serves it) made by one of `peers` that verify and that `ours` lacks; returns the
/// document with them and how many were added. Signatures by anyone else are left out.
pub fn merge_signatures(
    ours: &str,
    theirs: &[u8],
    peers: &[IdentityPublic],
) -> Result<(String, usize), MergeError> {
    let mine = parse(ours.as_bytes()).map_err(MergeError::Document)?;
    let other = parse(theirs).map_err(MergeError::Document)?;
    if mine.signed != other.signed {
        return Err(MergeError::Differs);
    }
    let mut text = ours.to_string();
    let mut added = 0;
    for (key, sig) in &other.signatures {
        let have = mine.signatures.iter().any(|(k, _)| k == key);
        if peers.contains(key) && !have && key.verify(LABEL, mine.signed, sig) {
            text.push_str(&signature_line(key, sig));
            added += 1;
        }
    }
    Ok((text, added))
}

/// A document's body and the keys its signature lines name, nothing verified: for an
/// authority reading back what it stored itself.
pub(crate) fn unverified(bytes: &[u8]) -> Result<(&str, Vec<IdentityPublic>), DocumentError> {
    let p = parse(bytes)?;
    Ok((p.body, p.signatures.into_iter().map(|(k, _)| k).collect()))
}

/// What a document says, signatures not yet checked.
struct Parsed<'a> {
    epoch: u64,
    valid_from_s: u64,
    valid_until_s: u64,
    body: &'a str,
    signed: &'a [u8],
    signatures: Vec<(IdentityPublic, [u8; SIGNATURE_LEN])>,
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, DocumentError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge { bytes: bytes.len() });
    }
    let bad = |what: &str| DocumentError::Malformed(what.to_string());
    let mut at = 0;
    let mut line = |name: &str| -> Result<&str, DocumentError> {
        let rest = &bytes[at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad(&format!("no `{name}` line")))?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| bad("not UTF-8"))?;
        at += end + 1;
        Ok(text)
    };
    if line("loopix-document v1")? != MAGIC {
        return Err(bad(&format!("the first line is not `{MAGIC}`")));
    }
    let mut number = |name: &str| -> Result<u64, DocumentError> {
        line(name)?
            .strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("expected `{name} <number>`")))
    };
    let epoch = number("epoch")?;
    let valid_from_s = number("valid_from")?;
    let valid_until_s = number("valid_until")?;
    let body_len = number("body")?;
    let header_end = at;
    let body_len = usize::try_from(body_len).map_err(|_| bad("body too long"))?;
    let body_end = header_end
        .checked_add(body_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("shorter than its body length"))?;
    let body =
        std::str::from_utf8(&bytes[header_end..body_end]).map_err(|_| bad("body not UTF-8"))?;
    let signed = &bytes[..body_end];
    let tail = std::str::from_utf8(&bytes[body_end..]).map_err(|_| bad("signatures not UTF-8"))?;
    let mut signatures = Vec::new();
    for l in tail.split_terminator('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(bad(&format!("more than {MAX_SIGNATURES} signatures")));
        }
        let mut parts = l.strip_prefix("signature ").unwrap_or("").split(' ');
        let (Some(key), Some(sig), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "after the body, only `signature <key> <signature>` lines",
            ));
        };
        let mut k = [0u8; 32];
        let mut s = [0u8; SIGNATURE_LEN];
        hex::decode_to_slice(key, &mut k)
            .map_err(|_| bad("a signature's key is not 64 hex digits"))?;
        hex::decode_to_slice(sig, &mut s).map_err(|_| bad("a signature is not 128 hex digits"))?;
        let k = IdentityPublic::from_bytes(k).map_err(|_| bad("a signature's key is not a key"))?;
        signatures.push((k, s));
    }
    Ok(Parsed {
        epoch,
        valid_from_s,
        valid_until_s,
        body,
        signed,
        signatures,
    })
}

/// Checks a document's signatures against `trust` and its validity at `now_us` (unix µs),
/// and that it is for `epoch` if one was asked for; returns it parsed.
pub fn verify(
    bytes: &[u8],
    trust: &Trust,
    epoch: Option<u64>,
    now_us: u64,
) -> Result<Document, DocumentError> {
    let p = parse(bytes)?;
    let mut valid = BTreeSet::new();
    let mut bad_signer = None;
    let mut unknown = None;
    for (key, sig) in &p.signatures {
        if !trust.authorities.contains(key) {
            unknown.get_or_insert(*key);
        } else if key.verify(LABEL, p.signed, sig) {
            valid.insert(*key);
        } else {
            bad_signer.get_or_insert(*key);
        }
    }
    // A bad signature by a trusted authority is refused even when enough others
    // verified: the document was changed after it signed, or someone signs in its name.
    if let Some(k) = bad_signer {
        return Err(DocumentError::BadSignature(k));
    }
    if valid.len() < trust.threshold {
        return Err(match (p.signatures.is_empty(), valid.is_empty(), unknown) {
            (true, _, _) => DocumentError::Unsigned,
            (false, true, Some(k)) => DocumentError::UnknownSigner(k),
            _ => DocumentError::TooFewSignatures {
                valid: valid.len(),
                needed: trust.threshold,
            },
        });
    }
    if let Some(asked) = epoch
        && asked != p.epoch
    {
        return Err(DocumentError::WrongEpoch {
            asked,
            got: p.epoch,
        });
    }
    let now_s = now_us / 1_000_000;
    if now_s > p.valid_until_s {
        return Err(DocumentError::Expired {
            epoch: p.epoch,
            valid_until_s: p.valid_until_s,
            now_s,
        });
    }
    if now_s < p.valid_from_s {
        return Err(DocumentError::NotYetValid {
            epoch: p.epoch,
            valid_from_s: p.valid_from_s,
            now_s,
        });
    }
    let topology = Topology::from_toml(p.body).map_err(DocumentError::Topology)?;
    Ok(Document {
        epoch: p.epoch,
        valid_from_us: p.valid_from_s.saturating_mul(1_000_000),
        valid_until_us: p.valid_until_s.saturating_mul(1_000_000),
        topology,
        signers: valid.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const S: u64 = 1_000_000;

    fn keys(n: u64) -> Vec<IdentitySecret> {
        let mut rng = ChaCha20Rng::seed_from_u64(n);
        (0..n).map(|_| IdentitySecret::generate(&mut rng)).collect()
    }

    fn body() -> String {
        let spec = crate::network::topology::tests::sample();
        Topology::from_toml(&spec).unwrap().to_toml()
    }

    fn unsigned() -> Unsigned {
        Unsigned {
            epoch: 7,
            valid_from_s: 1000,
            valid_until_s: 2000,
            body: body(),
        }
    }

    /// Trust in `threshold` of `keys` (a minority allowed: tests count signatures).
    fn trust(keys: &[IdentitySecret], threshold: usize) -> Trust {
        let keys = keys.iter().map(IdentitySecret::public).collect();
        Trust::new(keys, Threshold::AllowMinority(threshold)).unwrap()
    }

    #[test]
    fn a_document_signed_by_a_trusted_authority_verifies() {
        let k = keys(1);
        let doc = unsigned().sign(&k[0]);
        let d = verify(doc.as_bytes(), &trust(&k, 1), Some(7), 1500 * S).unwrap();
        assert_eq!((d.epoch, d.valid_until_us), (7, 2000 * S));
        assert_eq!(d.signers, vec![k[0].public()]);
        assert_eq!(d.topology.to_toml(), body());
        // Without an epoch asked for, any current one is taken.
        assert!(verify(doc.as_bytes(), &trust(&k, 1), None, 1500 * S).is_ok());
    }

    #[test]
    fn a_modified_byte_anywhere_is_refused() {
        let k = keys(1);
        let doc = unsigned().sign(&k[0]);
        let t = trust(&k, 1);
        let signed_len = unsigned().signed_text().len();
        for i in (0..doc.len()).step_by(7) {
            let mut bent = doc.clone().into_bytes();
            bent[i] ^= 0x01;
            let e = verify(&bent, &t, Some(7), 1500 * S).expect_err(&format!("byte {i}"));
            if i < signed_len {
                // The header and the body are signed: changed, they are refused either as
                // garbage or by the signature, never taken.
                assert!(
                    matches!(
                        e,
                        DocumentError::BadSignature(_) | DocumentError::Malformed(_)
                    ),
                    "byte {i}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_bad_signature_is_refused_even_beside_good_ones() {
        let k = keys(2);
        let doc = cosign(unsigned().sign(&k[0]).as_bytes(), &k[1]).unwrap();
        let t = trust(&k, 1);
        assert!(verify(doc.as_bytes(), &t, Some(7), 1500 * S).is_ok());
        // The last hex digit of the second signature.
        let mut bent = doc.clone().into_bytes();
        let last = bent.len() - 2;
        bent[last] = if bent[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            verify(&bent, &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::BadSignature(k[1].public())
        );
    }

    #[test]
    fn an_unsigned_or_stranger_signed_document_is_refused() {
        let k = keys(2);
        let t = trust(&k[..1], 1);
        let bare = unsigned().signed_text();
        assert_eq!(
            verify(bare.as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::Unsigned
        );
        let by_stranger = unsigned().sign(&k[1]);
        assert_eq!(
            verify(by_stranger.as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::UnknownSigner(k[1].public())
        );
        // The stranger claims a trusted authority's key for its own signature.
        let claimed = by_stranger.replace(
            &hex::encode(k[1].public().to_bytes()),
            &hex::encode(k[0].public().to_bytes()),
        );
        assert_eq!(
            verify(claimed.as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::BadSignature(k[0].public())
        );
    }

    #[test]
    fn too_few_trusted_signatures_are_refused_and_enough_are_taken() {
        let k = keys(3);
        let t = trust(&k, 2);
        let one = unsigned().sign(&k[0]);
        assert_eq!(
            verify(one.as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::TooFewSignatures {
                valid: 1,
                needed: 2
            }
        );
        // The same authority twice counts once.
        let twice = format!("{one}{}", one.lines().last().unwrap());
        assert_eq!(
            verify(format!("{twice}\n").as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::TooFewSignatures {
                valid: 1,
                needed: 2
            }
        );
        // One stranger beside one trusted authority is still one.
        let stranger = keys(4).pop().unwrap();
        let with_stranger = cosign(one.as_bytes(), &stranger).unwrap();
        assert_eq!(
            verify(with_stranger.as_bytes(), &t, Some(7), 1500 * S).unwrap_err(),
            DocumentError::TooFewSignatures {
                valid: 1,
                needed: 2
            }
        );
        let two = cosign(with_stranger.as_bytes(), &k[2]).unwrap();
        let d = verify(two.as_bytes(), &t, Some(7), 1500 * S).unwrap();
        assert_eq!(d.signers.len(), 2);
        assert_eq!(
            cosign(two.as_bytes(), &k[2]).unwrap(),
            two,
            "signing twice adds nothing"
        );
    }

    #[test]
    fn peers_signatures_of_the_same_document_are_merged_and_no_others() {
        let k = keys(3);
        let ours = unsigned().sign(&k[0]);
        let theirs = unsigned().sign(&k[1]);
        let peers = [k[1].public()];
        let (merged, added) = merge_signatures(&ours, theirs.as_bytes(), &peers).unwrap();
        assert_eq!(added, 1);
        let d = verify(merged.as_bytes(), &trust(&k[..2], 2), Some(7), 1500 * S).unwrap();
        assert_eq!(d.signers.len(), 2);
        // Merging again adds nothing.
        assert_eq!(
            merge_signatures(&merged, theirs.as_bytes(), &peers)
                .unwrap()
                .1,
            0
        );
        // A signature by someone not a peer is left out.
        let stranger = unsigned().sign(&k[2]);
        assert_eq!(
            merge_signatures(&ours, stranger.as_bytes(), &peers)
                .unwrap()
                .1,
            0
        );
        // A peer's forged signature (bytes changed) is left out too.
        let mut bent = theirs.clone().into_bytes();
        let last = bent.len() - 2;
        bent[last] = if bent[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(merge_signatures(&ours, &bent, &peers).unwrap().1, 0);
        // Another document's signatures do not count for this one.
        let other = Unsigned {
            epoch: 8,
            ..unsigned()
        }
        .sign(&k[1]);
        assert_eq!(
            merge_signatures(&ours, other.as_bytes(), &peers),
            Err(MergeError::Differs)
        );
    }

    #[test]
    fn a_stale_or_early_or_other_epochs_document_is_refused() {
        let k = keys(1);
        let t = trust(&k, 1);
        let doc = unsigned().sign(&k[0]);
        assert_eq!(
            verify(doc.as_bytes(), &t, Some(7), 2001 * S).unwrap_err(),
            DocumentError::Expired {
                epoch: 7,
                valid_until_s: 2000,
                now_s: 2001
            }
        );
        assert!(matches!(
            verify(doc.as_bytes(), &t, Some(7), 999 * S).unwrap_err(),
            DocumentError::NotYetValid { .. }
        ));
        assert_eq!(
            verify(doc.as_bytes(), &t, Some(8), 1500 * S).unwrap_err(),
            DocumentError::WrongEpoch { asked: 8, got: 7 }
        );
    }

    #[test]
    fn garbage_and_oversized_documents_are_refused_with_a_reason() {
        let t = trust(&keys(1), 1);
        for junk in [
            &b""[..],
            b"loopix-document v1\n",
            b"hello\n",
            b"loopix-document v1\nepoch x\n",
        ] {
            assert!(matches!(
                verify(junk, &t, None, 0).unwrap_err(),
                DocumentError::Malformed(_)
            ));
        }
        let big = vec![b'a'; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            verify(&big, &t, None, 0).unwrap_err(),
            DocumentError::TooLarge { .. }
        ));
        // A body length past the end.
        let mut doc = unsigned().sign(&keys(1)[0]);
        doc = doc.replacen("body ", "body 9", 1);
        assert!(matches!(
            verify(doc.as_bytes(), &t, None, 1500 * S).unwrap_err(),
            DocumentError::Malformed(_) | DocumentError::BadSignature(_)
        ));
    }

    #[test]
    fn trust_settings_that_mean_nothing_are_refused() {
        let k: Vec<_> = keys(2).iter().map(IdentitySecret::public).collect();
        let at_least = Threshold::AtLeast;
        assert_eq!(
            Trust::new(vec![], at_least(1)),
            Err(TrustError::NoAuthorities)
        );
        for bad in [at_least(0), at_least(3), Threshold::AllowMinority(0)] {
            assert!(
                matches!(
                    Trust::new(k.clone(), bad),
                    Err(TrustError::Threshold { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            Trust::new(vec![k[0], k[0]], at_least(1)),
            Err(TrustError::Duplicate)
        );
    }

    #[test]
    fn the_default_threshold_is_a_majority_and_a_minority_must_be_asked_for() {
        let k: Vec<_> = keys(5).iter().map(IdentitySecret::public).collect();
        for (n, majority) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            let t = Trust::new(k[..n].to_vec(), Threshold::Majority).unwrap();
            assert_eq!(t.threshold(), majority, "{n} authorities");
        }
        assert_eq!(
            Trust::new(k[..3].to_vec(), Threshold::AtLeast(1)),
            Err(TrustError::Minority {
                threshold: 1,
                authorities: 3
            })
        );
        assert!(
            TrustError::Minority {
                threshold: 1,
                authorities: 3
            }
            .to_string()
            .contains("forged")
        );
        assert_eq!(
            Trust::new(k[..3].to_vec(), Threshold::AllowMinority(1))
                .unwrap()
                .threshold(),
            1
        );
        assert_eq!(
            Threshold::from_options(None, true),
            Threshold::Majority,
            "allowing a minority alone changes nothing"
        );
    }

    #[test]
    fn a_reader_of_three_authorities_refuses_a_document_one_signed() {
        let ks = keys(3);
        let trust = Trust::new(
            ks.iter().map(IdentitySecret::public).collect(),
            Threshold::Majority,
        )
        .unwrap();
        let one = unsigned().sign(&ks[0]);
        assert_eq!(
            verify(one.as_bytes(), &trust, None, 1500 * S).unwrap_err(),
            DocumentError::TooFewSignatures {
                valid: 1,
                needed: 2
            }
        );
    }
}
