//! Sphinx packets with the Loopix routing commands.
//!
//! A packet is `α ‖ β ‖ γ ‖ body`: a Ristretto group element re-blinded at every hop, the
//! onion-encrypted routing information (one 32-byte field per hop, eight fields always), a
//! truncated HMAC-SHA256 over β, and a LIONESS-encrypted body. Every packet has the same
//! length at every hop and hides its hop count and position. The byte layout, the key
//! derivation and the measurements behind the choice of curve arithmetic are in
//! `SPEC.md` beside this crate.
//!
//! * [`build()`] / [`build_into`] make a packet; the caller passes the RNG.
//! * [`Processor`] unwraps one (or a batch) in place on the caller's buffer and returns a
//!   [`Processed`] (the [`Command`] and the [`ReplayTag`]) or a typed [`ProcessError`].
//! * [`primitives`] exposes exactly the calls a hop makes, so `loopix speed` can measure the
//!   crypto floor that processing is compared against.
//!
//! ```
//! use loopix_crypto::{build, NodeId, Command, Hop, Params, Processor, SecretKey};
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//!
//! let params = Params::default();
//! let (mix, bob) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
//! let bob_public = bob.public_key();
//! let path = [
//!     Hop::new(mix.public_key(), Command::Relay { next: NodeId(7), delay_us: 800 }),
//!     Hop::new(bob_public, Command::Final),
//! ];
//! let mut packet = build(&params, &path, b"hello", &mut rng)?; // the caller's RNG
//! let hop = Processor::new(mix, params).process(&mut packet)?; // in place
//! assert_eq!(hop.command, Command::Relay { next: NodeId(7), delay_us: 800 });
//! let last = Processor::new(bob, params).process(&mut packet)?;
//! assert_eq!(last.command, Command::Final);
//! assert_eq!(&params.payload(&packet).unwrap()[..5], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod build;
pub mod build_batch;
pub mod command;
pub mod epoch_seed;
pub mod handshake_mac;
pub mod identity_key;
pub mod key_phase;
pub mod keys;
pub mod lanes;
pub mod link_key;
pub mod lioness;
pub mod params;
pub mod primitives;
pub mod process;
pub mod session_key;
pub mod stack_position;
pub mod surb;

pub use build::{
    BuildError, Hop, MAX_STEER_TRIES, build, build_into, build_into_steered, build_into_traced,
    check_sizes, fill_dummy, fill_dummy_alphas,
};
pub use build_batch::{BuildJob, build_batch};
pub use command::{Command, MalformedCommand, NodeId};
pub use epoch_seed::EpochSeed;
pub use identity_key::{IdentityPublic, IdentitySecret, InvalidIdentityKey, SIGNATURE_LEN};
pub use key_phase::KeyPhase;
pub use keys::{HopKeys, InvalidKey, PublicKey, REPLAY_TAG_LEN, ReplayTag, SecretKey};
pub use link_key::{LINK_TAG_LEN, LinkKey, LinkSecret, WeakPeerKey};
pub use params::{DEFAULT_PAYLOAD_BYTES, HEADER_LEN, MAX_HOPS, Params, PayloadSizeError};
pub use process::{ProcessError, Processed, Processor};
pub use session_key::{SessionPublic, SessionSecret};
pub use surb::{SURB_LEN, Surb, SurbOpener, build_surb};
