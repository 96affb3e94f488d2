//! A node's key upload: the public keys it will unwrap with in the coming epochs and its
//! session key, signed with its long-term identity key, so an authority publishes only
//! keys the registered operator's node made.
//!
//! Format (text; everything before the signature line is signed):
//! ```text
//! loopix-keys v1
//! node 3
//! issued 1768798800              unix seconds: a newer upload replaces an older one
//! session <64 hex digits>        its X25519 session key (links, client sessions)
//! first_epoch 1474000
//! key <64 hex digits>            the key of first_epoch, then of each next epoch
//! key <64 hex digits>
//! signature <128 hex digits>
//! ```

use loopix_crypto::{
    EpochSeed, IdentityPublic, IdentitySecret, NodeId, PublicKey, SIGNATURE_LEN, SessionPublic,
};

use crate::network::topology::EpochKeys;

const LABEL: &[u8] = b"loopix-keys v1";
const MAGIC: &str = "loopix-keys v1";

/// Most epoch keys one upload carries.
pub const MAX_UPLOAD_KEYS: usize = 16;

/// The largest upload accepted (16 keys are ~1.5 KB).
pub const MAX_UPLOAD_BYTES: usize = 4096;

/// What a node says about its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUpload {
    pub node: NodeId,
    /// Unix s.
    pub issued_s: u64,
    pub session_key: SessionPublic,
    pub keys: EpochKeys,
}

/// An upload with its signature, as received (signature not yet checked).
#[derive(Clone, Debug)]
pub struct SignedUpload {
    pub upload: KeyUpload,
    signed_len: usize,
    signature: [u8; SIGNATURE_LEN],
    /// The whole text, kept to be stored and served as is.
    pub text: String,
}

/// Why an upload could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadFormatError {
    TooLarge { bytes: usize },
    Malformed(String),
}

impl std::fmt::Display for UploadFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { bytes } => write!(f, "{bytes} bytes: larger than {MAX_UPLOAD_BYTES}"),
            Self::Malformed(what) => write!(f, "not a key upload: {what}"),
        }
    }
}

impl KeyUpload {
    /// The upload of the keys of `count` epochs from `first` that `seed` gives.
    pub fn from_seed(
        node: NodeId,
        issued_s: u64,
        session_key: SessionPublic,
        seed: &EpochSeed,
        first: u64,
        count: usize,
    ) -> Self {
        let keys = (first..first + count.min(MAX_UPLOAD_KEYS) as u64)
            .filter_map(|e| seed.secret_key(e))
            .map(|k| k.public_key())
            .collect();
        Self {
            node,
            issued_s,
            session_key,
            keys: EpochKeys::new(first.max(seed.epoch()), keys),
        }
    }

    fn signed_text(&self) -> String {
        let mut text = format!(
            "{MAGIC}\nnode {}\nissued {}\nsession {}\nfirst_epoch {}\n",
            self.node.0,
            self.issued_s,
            hex::encode(self.session_key.0),
            self.keys.first()
        );
        for (_, k) in self.keys.iter() {
            text.push_str(&format!("key {}\n", hex::encode(k.to_bytes())));
        }
        text
    }

    /// The upload signed by the node's identity key.
    pub fn sign(&self, identity: &IdentitySecret) -> String {
        let mut text = self.signed_text();
        let sig = identity.sign(LABEL, text.as_bytes());
        text.push_str(&format!("signature {}\n", hex::encode(sig)));
        text
    }
}

impl SignedUpload {
    /// Reads an upload; its signature is checked by [`Self::signed_by`].
    pub fn parse(bytes: &[u8]) -> Result<Self, UploadFormatError> {
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(UploadFormatError::TooLarge { bytes: bytes.len() });
        }
        let bad = |what: &str| UploadFormatError::Malformed(what.to_string());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(MAGIC) {
            return Err(bad(&format!("the first line is not `{MAGIC}`")));
        }
        let mut field = |name: &str| -> Result<&str, UploadFormatError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.strip_prefix(' '))
                .ok_or_else(|| bad(&format!("expected a `{name}` line")))
        };
        let number = |v: &str, name: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(&format!("`{name}` is not a number")))
        };
        let node = NodeId(number(field("node")?, "node")?);
        let issued_s = number(field("issued")?, "issued")?;
        let mut session = [0u8; 32];
        hex::decode_to_slice(field("session")?, &mut session)
            .map_err(|_| bad("`session` is not 64 hex digits"))?;
        let first = number(field("first_epoch")?, "first_epoch")?;
        let mut keys = Vec::new();
        let mut signature = None;
        let mut signed_len = 0;
        let mut offset = 0;
        for l in text.split_terminator('\n') {
            let start = offset;
            offset += l.len() + 1;
            if let Some(k) = l.strip_prefix("key ") {
                if signature.is_some() {
                    return Err(bad("a key after the signature"));
                }
                if keys.len() == MAX_UPLOAD_KEYS {
                    return Err(bad(&format!("more than {MAX_UPLOAD_KEYS} keys")));
                }
                let mut b = [0u8; 32];
                hex::decode_to_slice(k, &mut b).map_err(|_| bad("a key is not 64 hex digits"))?;
                keys.push(PublicKey::from_bytes(b).map_err(|_| bad("a key is not a public key"))?);
            } else if let Some(s) = l.strip_prefix("signature ") {
                if signature.is_some() {
                    return Err(bad("two signatures"));
                }
                let mut b = [0u8; SIGNATURE_LEN];
                hex::decode_to_slice(s, &mut b)
                    .map_err(|_| bad("the signature is not 128 hex digits"))?;
                signature = Some(b);
                signed_len = start;
            } else if signature.is_some() {
                return Err(bad("a line after the signature"));
            }
        }
        let signature = signature.ok_or_else(|| bad("no signature"))?;
        if keys.is_empty() {
            return Err(bad("no key"));
        }
        let upload = KeyUpload {
            node,
            issued_s,
            session_key: SessionPublic(session),
            keys: EpochKeys::new(first, keys),
        };
        // The signed part must be exactly what this upload writes: nothing unsigned can
        // ride along, and stored uploads are canonical.
        if upload.signed_text().as_bytes() != &bytes[..signed_len] {
            return Err(bad("not in the canonical layout"));
        }
        Ok(Self {
            upload,
            signed_len,
            signature,
            text: text.to_string(),
        })
    }

    /// Whether `identity` signed this upload.
    pub fn signed_by(&self, identity: &IdentityPublic) -> bool {
        identity.verify(
            LABEL,
            &self.text.as_bytes()[..self.signed_len],
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::SessionSecret;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    pub(crate) fn upload(seed: u64) -> (KeyUpload, IdentitySecret) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentitySecret::generate(&mut rng);
        let epochs = EpochSeed::generate(&mut rng, 10);
        let session = SessionSecret::generate(&mut rng).public();
        (
            KeyUpload::from_seed(NodeId(3), 5000, session, &epochs, 10, 3),
            identity,
        )
    }

    #[test]
    fn an_upload_round_trips_and_verifies_only_under_its_key() {
        let (u, id) = upload(1);
        let text = u.sign(&id);
        let parsed = SignedUpload::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.upload, u);
        assert_eq!(parsed.upload.keys.iter().count(), 3);
        assert!(parsed.signed_by(&id.public()));
        assert!(
            !parsed.signed_by(&upload(2).1.public()),
            "another node's key"
        );
    }

    #[test]
    fn a_changed_byte_fails_the_signature_or_the_format() {
        let (u, id) = upload(1);
        let text = u.sign(&id);
        for i in 0..text.len() {
            let mut bent = text.clone().into_bytes();
            bent[i] ^= 0x01;
            if let Ok(p) = SignedUpload::parse(&bent) {
                assert!(
                    !p.signed_by(&id.public()),
                    "byte {i} changed and still signed"
                );
            }
        }
    }

    #[test]
    fn oversized_and_malformed_uploads_are_refused() {
        let (u, id) = upload(1);
        let text = u.sign(&id);
        assert!(matches!(
            SignedUpload::parse(&vec![b'k'; MAX_UPLOAD_BYTES + 1]),
            Err(UploadFormatError::TooLarge { .. })
        ));
        let unsigned = text
            .lines()
            .filter(|l| !l.starts_with("signature"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(SignedUpload::parse(unsigned.as_bytes()).is_err());
        let extra = format!("{text}key {}\n", "00".repeat(32));
        assert!(
            SignedUpload::parse(extra.as_bytes()).is_err(),
            "unsigned key after"
        );
        let spaced = text.replacen("node 3", "node  3", 1);
        assert!(SignedUpload::parse(spaced.as_bytes()).is_err());
        let many = KeyUpload {
            keys: EpochKeys::new(0, vec![u.keys.get(10).unwrap(); MAX_UPLOAD_KEYS + 1]),
            ..u
        };
        assert!(SignedUpload::parse(many.sign(&id).as_bytes()).is_err());
    }
}
