//! Secret key files: a client's key, and a node's epoch seed (see
//! [`loopix_crypto::EpochSeed`]). Both are created with mode 0600 before any secret byte
//! is written, never silently overwritten, and refused when the group or others can read
//! them. A seed file is rewritten only to move it forward (`ratchet`): written to a new
//! file beside it, synced, then renamed over it, so a crash leaves either the old or the
//! new seed, never neither.
//!
//! Formats (text):
//! ```text
//! <64 hex digits>                          a client key
//! loopix-epoch-seed v1                     a node's seed
//! epoch <the seed's epoch>
//! seed <64 hex digits>
//! session <64 hex digits>                  its session key (X25519; providers need one)
//! identity <64 hex digits>                 its identity key (Ed25519; signs key uploads)
//! loopix-identity v1                       a directory authority's key
//! identity <64 hex digits>
//! ```
//! A client's session key is derived from its key; a node's session and identity keys
//! are their own lines, kept as they are when the seed moves forward.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use loopix_crypto::{EpochSeed, IdentitySecret, SecretKey, SessionSecret};
use zeroize::Zeroizing;

const SEED_MAGIC: &str = "loopix-epoch-seed v1";
const IDENTITY_MAGIC: &str = "loopix-identity v1";

/// Writes a client's `key` to a new file readable by its owner only.
pub fn write_client_key(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    let mut text = Zeroizing::new(hex_of(&key.to_bytes()[..]));
    text.push('\n');
    write_new(path, text.as_bytes())
}

/// Reads a client key file written by [`write_client_key`].
pub fn read_client_key(path: &Path) -> Result<SecretKey, String> {
    let text = read_private(path)?;
    let bytes = parse_hex32(text.trim()).ok_or_else(|| at(path, "not 64 hex digits"))?;
    SecretKey::from_bytes(*bytes).map_err(|e| at(path, &e.to_string()))
}

/// Writes a node's `seed`, session key and identity key to a new file readable by its
/// owner only.
pub fn write_seed(
    path: &Path,
    seed: &EpochSeed,
    session: &SessionSecret,
    identity: Option<&IdentitySecret>,
) -> std::io::Result<()> {
    write_new(path, seed_text(seed, Some(session), identity).as_bytes())
}

/// Writes a directory authority's identity key to a new file readable by its owner only.
pub fn write_identity_key(path: &Path, key: &IdentitySecret) -> std::io::Result<()> {
    let text = Zeroizing::new(format!(
        "{IDENTITY_MAGIC}\nidentity {}\n",
        *Zeroizing::new(hex_of(key.as_bytes()))
    ));
    write_new(path, text.as_bytes())
}

/// Reads a directory authority's key file.
pub fn read_identity_key(path: &Path) -> Result<IdentitySecret, String> {
    let text = read_private(path)?;
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some(IDENTITY_MAGIC) {
        return Err(at(
            path,
            &format!("not an authority key file (no `{IDENTITY_MAGIC}` line)"),
        ));
    }
    lines
        .next()
        .and_then(|l| l.strip_prefix("identity "))
        .and_then(|s| parse_hex32(s.trim()))
        .map(|b| IdentitySecret::from_bytes(*b))
        .ok_or_else(|| at(path, "second line must be `identity <64 hex digits>`"))
}

/// Reads a node's identity key from its seed file; `None` if the file has none (written
/// before directories existed: make a new key file to use one).
pub fn read_node_identity(path: &Path) -> Result<Option<IdentitySecret>, String> {
    read_node_keys(path).map(|k| k.identity)
}

/// Reads a node's seed file.
pub fn read_seed(path: &Path) -> Result<EpochSeed, String> {
    read_node_keys(path).map(|k| k.seed)
}

/// Reads a node's session key from its seed file; `None` if the file has none (written
/// before sessions existed: a mix does without, a provider needs a new key file).
pub fn read_session_key(path: &Path) -> Result<Option<SessionSecret>, String> {
    read_node_keys(path).map(|k| k.session)
}

/// What a node's key file holds (session and identity keys: `None` in files from before
/// they existed).
pub struct NodeKeys {
    pub seed: EpochSeed,
    pub session: Option<SessionSecret>,
    pub identity: Option<IdentitySecret>,
}

/// Reads all of a node's key file at once.
pub fn read_node_keys(path: &Path) -> Result<NodeKeys, String> {
    let text = read_private(path)?;
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some(SEED_MAGIC) {
        return Err(at(
            path,
            &format!("not a node key file (no `{SEED_MAGIC}` line; client keys are not node keys)"),
        ));
    }
    let epoch = lines
        .next()
        .and_then(|l| l.strip_prefix("epoch "))
        .and_then(|e| e.trim().parse().ok())
        .ok_or_else(|| at(path, "second line must be `epoch <number>`"))?;
    let seed = lines
        .next()
        .and_then(|l| l.strip_prefix("seed "))
        .and_then(|s| parse_hex32(s.trim()))
        .ok_or_else(|| at(path, "third line must be `seed <64 hex digits>`"))?;
    // Later lines are optional (files from before they existed), in this order.
    let mut optional = |which: &str, name: &str| match lines.next().filter(|l| !l.is_empty()) {
        None => Ok(None),
        Some(l) => l
            .strip_prefix(name)
            .and_then(|s| s.strip_prefix(' '))
            .and_then(|s| parse_hex32(s.trim()))
            .map(Some)
            .ok_or_else(|| {
                at(
                    path,
                    &format!("{which} line must be `{name} <64 hex digits>`"),
                )
            }),
    };
    let session = optional("fourth", "session")?.map(|b| SessionSecret::from_bytes(*b));
    let identity = optional("fifth", "identity")?.map(|b| IdentitySecret::from_bytes(*b));
    Ok(NodeKeys {
        seed: EpochSeed::from_bytes(epoch, *seed),
        session,
        identity,
    })
}

/// Moves the seed file at `path` forward to `epoch`, deleting every earlier epoch's key
/// from it; returns the seed it now holds. Does nothing if the file is already there.
pub fn ratchet(path: &Path, epoch: u64) -> Result<EpochSeed, String> {
    let NodeKeys {
        mut seed,
        session,
        identity,
    } = read_node_keys(path)?;
    if seed.epoch() >= epoch {
        return Ok(seed);
    }
    seed.advance_to(epoch);
    let tmp = sibling(path, ".next");
    let _ = std::fs::remove_file(&tmp);
    write_new(
        &tmp,
        seed_text(&seed, session.as_ref(), identity.as_ref()).as_bytes(),
    )
    .map_err(|e| at(&tmp, &e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| at(path, &e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| at(dir, &e.to_string()))?;
    }
    Ok(seed)
}

fn seed_text(
    seed: &EpochSeed,
    session: Option<&SessionSecret>,
    identity: Option<&IdentitySecret>,
) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!(
        "{SEED_MAGIC}\nepoch {}\nseed {}\n",
        seed.epoch(),
        *Zeroizing::new(hex_of(&seed.to_bytes()[..]))
    ));
    if let Some(s) = session {
        text.push_str(&format!(
            "session {}\n",
            *Zeroizing::new(hex_of(s.as_bytes()))
        ));
    }
    if let Some(i) = identity {
        text.push_str(&format!(
            "identity {}\n",
            *Zeroizing::new(hex_of(i.as_bytes()))
        ));
    }
    text
}

/// Creates `path` with mode 0600 (failing if it exists), writes `bytes` and syncs.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a secret file, refusing one that the group or others may read.
fn read_private(path: &Path) -> Result<Zeroizing<String>, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| at(path, &e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(at(
                path,
                &format!(
                    "readable by others (mode {:o}); a secret key must be mode 0600: chmod 600 it",
                    mode & 0o777
                ),
            ));
        }
    }
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| at(path, &e.to_string()))
}

fn parse_hex32(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    if text.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn at(path: &Path, problem: &str) -> String {
    format!("{}: {problem}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("loopix-keyfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn client_keys_are_owner_only_round_trip_and_are_never_overwritten() {
        let d = dir("client");
        let path = d.join("client.key");
        let key = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(3));
        write_client_key(&path, &key).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            read_client_key(&path).unwrap().public_key(),
            key.public_key()
        );
        assert!(write_client_key(&path, &key).is_err(), "never replaced");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("open");
        let path = d.join("node.key");
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let session = SessionSecret::generate(&mut rng);
        write_seed(&path, &EpochSeed::generate(&mut rng, 4), &session, None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_seed(&path).unwrap_err();
        assert!(e.contains("readable by others (mode 644)"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_seed_file_ratchets_forward_and_forgets() {
        let d = dir("seed");
        let path = d.join("node.key");
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let seed = EpochSeed::generate(&mut rng, 10);
        let session = SessionSecret::generate(&mut rng);
        let identity = IdentitySecret::generate(&mut rng);
        write_seed(&path, &seed, &session, Some(&identity)).unwrap();
        let k12 = seed.secret_key(12).unwrap().public_key();
        assert_eq!(read_seed(&path).unwrap().epoch(), 10);
        let moved = ratchet(&path, 12).unwrap();
        assert_eq!(moved.epoch(), 12);
        let back = read_seed(&path).unwrap();
        assert_eq!(
            (back.epoch(), back.secret_key(12).unwrap().public_key()),
            (12, k12)
        );
        assert!(back.secret_key(11).is_none());
        assert_eq!(
            read_session_key(&path).unwrap().map(|k| k.public()),
            Some(session.public()),
            "the session key is kept"
        );
        assert_eq!(
            read_node_identity(&path).unwrap().map(|k| k.public()),
            Some(identity.public()),
            "and the identity key"
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(ratchet(&path, 11).unwrap().epoch(), 12, "never backwards");
        assert!(!sibling(&path, ".next").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn authority_keys_are_owner_only_and_round_trip() {
        let d = dir("authority");
        let path = d.join("authority.key");
        let key = IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(4));
        write_identity_key(&path, &key).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_identity_key(&path).unwrap().public(), key.public());
        assert!(write_identity_key(&path, &key).is_err(), "never replaced");
        assert!(
            read_seed(&path)
                .unwrap_err()
                .contains("not a node key file")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn garbage_and_client_keys_are_not_node_keys() {
        let d = dir("garbage");
        let path = d.join("bad.key");
        write_new(&path, b"not hex\n").unwrap();
        assert!(
            read_client_key(&path)
                .unwrap_err()
                .contains("not 64 hex digits")
        );
        assert!(
            read_seed(&path)
                .unwrap_err()
                .contains("not a node key file")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
