//! `loopix keygen`: keys for a client, or a node's seed of epoch keys.
//!
//! - `loopix keygen --out client.key` writes a client's secret key and prints the
//!   `public_key` and `session_key` lines of its topology `[[clients]]` entry (its session
//!   key, for authenticating to its provider, derives from the same secret).
//! - `loopix keygen --epochs N --out node.key [--first-epoch E]` writes a node's epoch
//!   seed (see `loopix_crypto::EpochSeed`) and a session key, and prints the
//!   `first_epoch`, `epoch_keys` and `session_key` lines that publish its public keys for
//!   epochs E..E+N in the topology's `[[nodes]]` entry, and, as a comment (the lines
//!   paste into a topology as they are), the `identity_key` an
//!   authority's registry lists for it (Ed25519: its uploads to the directory are signed
//!   with it). E defaults to the oldest epoch whose key is in use now on
//!   `--epoch-s`/`--epoch-start`/`--epoch-grace-s` (the topology defaults) and this
//!   machine's clock: the current one, or in the first grace of an epoch the one before.
//! - `loopix keygen --epochs N --publish node.key [--first-epoch E]` prints those lines
//!   again, for more epochs, from an existing seed file (which it does not change).
//!
//! Secret files are created with mode 0600 before any secret byte is written, and an
//! existing file is never overwritten.

use std::path::PathBuf;

use clap::Args;
use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::topology::{
    DEFAULT_EPOCH_GRACE_S, DEFAULT_EPOCH_S, EpochKeys, client_keys_toml, node_keys_toml,
};
use loopix_crypto::{EpochSeed, IdentitySecret, SecretKey, SessionSecret};
use loopix_runtime::clock::NetworkClock;
use loopix_runtime::key_file::{
    read_node_identity, read_seed, read_session_key, write_client_key, write_seed,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

/// Options of `loopix keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the new secret key or seed (created with mode 0600; must not exist).
    #[arg(long, required_unless_present = "publish", conflicts_with = "publish")]
    out: Option<PathBuf>,
    /// Also write the client's topology lines (`public_key`, `session_key`) to this file.
    #[arg(long, conflicts_with = "epochs")]
    public_out: Option<PathBuf>,
    /// A node key: publish this many epochs' public keys (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: Option<u32>,
    /// Print the epoch keys of this existing node key file instead of making one.
    #[arg(long, requires = "epochs")]
    publish: Option<PathBuf>,
    /// The first epoch to publish (and, for a new seed, the seed's epoch).
    #[arg(long)]
    first_epoch: Option<u64>,
    /// Epoch length the topology uses, s (to find the current epoch).
    #[arg(long, default_value_t = DEFAULT_EPOCH_S)]
    epoch_s: u64,
    /// The topology's `epoch_start` (unix s).
    #[arg(long, default_value_t = 0)]
    epoch_start: u64,
    /// The topology's `epoch_grace_s`: in the first this many seconds of an epoch the
    /// previous epoch's key is still in use, and a new key file starts there.
    #[arg(long, default_value_t = DEFAULT_EPOCH_GRACE_S)]
    epoch_grace_s: u64,
}

/// Makes the key (or prints the published keys) `args` asks for.
pub fn run(args: &KeygenArgs) -> Result<(), String> {
    let first = match args.first_epoch {
        Some(e) => e,
        None => {
            // The oldest epoch whose key is in use now: a node refuses a key file without
            // it (within a grace the previous epoch's packets are still arriving).
            let schedule =
                EpochSchedule::from_secs(args.epoch_start, args.epoch_s, args.epoch_grace_s)
                    .map_err(|e| format!("--epoch-s, --epoch-grace-s: {e}"))?;
            schedule.oldest_live(NetworkClock::start().now_us())
        }
    };
    if let Some(path) = &args.publish {
        let seed = read_seed(path)?;
        if first < seed.epoch() {
            return Err(format!(
                "{}: the seed is at epoch {}; keys before it are gone",
                path.display(),
                seed.epoch()
            ));
        }
        let session = read_session_key(path)?.map(|s| s.public());
        let epochs = EpochKeys::derive(&seed, first, args.epochs.unwrap_or(1));
        let mut text = node_keys_toml(&epochs, session);
        if let Some(identity) = read_node_identity(path)? {
            text += &identity_line(&identity);
        }
        return emit(&text);
    }
    let out = args.out.as_ref().ok_or("--out: where to write the key")?;
    let mut rng = os_rng()?;
    match args.epochs {
        Some(n) => {
            let seed = EpochSeed::generate(&mut rng, first);
            let session = SessionSecret::generate(&mut rng);
            let identity = IdentitySecret::generate(&mut rng);
            write_seed(out, &seed, &session, Some(&identity))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let epochs = EpochKeys::derive(&seed, first, n);
            let mut text = node_keys_toml(&epochs, Some(session.public()));
            text += &identity_line(&identity);
            emit(&text)?;
        }
        None => {
            let key = SecretKey::generate(&mut rng);
            write_client_key(out, &key).map_err(|e| format!("{}: {e}", out.display()))?;
            let session = SessionSecret::derive_from(&key).public();
            let lines = client_keys_toml(&key.public_key(), &session);
            if let Some(p) = &args.public_out {
                std::fs::write(p, &lines).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            emit(&lines)?;
        }
    }
    Ok(())
}

/// The registry's `identity_key` line, as a comment (the other lines paste into a topology).
fn identity_line(identity: &IdentitySecret) -> String {
    format!(
        "# identity_key = \"{}\"  (its directory registry entry; a comment in a topology)\n",
        hex::encode(identity.public().to_bytes())
    )
}

/// Writes `text` to stdout. A reader that closed the pipe early (`| head -1`) took what it
/// wanted: that is no error (the key file is written by then).
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

fn os_rng() -> Result<ChaCha20Rng, String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}
