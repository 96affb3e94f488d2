//! `loopix keygen`: a node's or client's key pair.
//!
//! The secret key file holds 64 hex digits and a newline, and is created with mode 0600
//! before any secret byte is written; an existing file is never overwritten. The public
//! key is printed (and optionally written) for the topology file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use loopix_crypto::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

/// Options of `loopix keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Also write the public key (hex) to this file.
    #[arg(long)]
    public_out: Option<PathBuf>,
}

/// Generates a key pair from OS randomness and writes it.
pub fn run(args: &KeygenArgs) -> Result<(), String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| format!("no OS randomness: {e}"))?;
    let key = SecretKey::generate(&mut ChaCha20Rng::from_seed(*seed));
    write_secret(&args.out, &key).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let public = hex::encode(key.public_key().to_bytes());
    if let Some(p) = &args.public_out {
        std::fs::write(p, format!("{public}\n")).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!("{public}");
    Ok(())
}

/// Writes `key` as hex to a new file readable by its owner only.
pub fn write_secret(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut text = Zeroizing::new(hex::encode(&key.to_bytes()[..]));
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Reads a secret key file written by [`write_secret`].
pub fn read_secret(path: &Path) -> Result<SecretKey, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut bytes[..])
        .map_err(|_| format!("{}: not 64 hex digits", path.display()))?;
    SecretKey::from_bytes(*bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_owner_only_round_trips_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("loopix-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let key = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(3));
        write_secret(&path, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_secret(&path).unwrap().public_key(), key.public_key());
        assert!(
            write_secret(&path, &key).is_err(),
            "existing key file must not be replaced"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_key_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("loopix-keygen-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.key");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(
            read_secret(&path)
                .unwrap_err()
                .contains("not 64 hex digits")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
