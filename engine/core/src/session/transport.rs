//! One end of an established session, as both the client and the provider hold it: snow's
//! stateless transport, the peer's index our frames name, our next nonce, and the window
//! of nonces taken from the peer. Sealing and opening a transport frame are the same at
//! both ends; only what a refusal is called differs.

use snow::StatelessTransportState;

use super::frame::{self, HEADER_LEN};
use super::replay_window::ReplayWindow;

/// Why a transport frame did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its nonce was seen before, or is older than the window.
    Replay,
    /// It did not decrypt to a whole plaintext: forged, changed, or not for this session.
    Unauthenticated,
}

pub struct Transport {
    state: StatelessTransportState,
    /// The peer's index: our frames name it.
    peer_index: u32,
    next_nonce: u64,
    window: ReplayWindow,
}

impl Transport {
    /// A transport fresh from its handshake, to the peer that chose `peer_index`.
    pub fn new(state: StatelessTransportState, peer_index: u32) -> Self {
        Self {
            state,
            peer_index,
            next_nonce: 0,
            window: ReplayWindow::default(),
        }
    }

    /// Seals `plain` into a frame of `len` bytes at the start of `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8], len: usize) -> Option<usize> {
        let out = out.get_mut(..len)?;
        let nonce = self.next_nonce;
        let n = self
            .state
            .write_message(nonce, plain, &mut out[HEADER_LEN..])
            .ok()?;
        debug_assert_eq!(HEADER_LEN + n, len);
        frame::write_header(out, self.peer_index, nonce);
        self.next_nonce += 1;
        Some(len)
    }

    /// Opens a frame under `nonce` into `plain`, which must come out `plain_len` bytes;
    /// its nonce is taken (a second copy is a replay) only once it authenticated.
    pub fn open(
        &mut self,
        nonce: u64,
        frame: &[u8],
        plain: &mut [u8],
        plain_len: usize,
    ) -> Result<(), Refusal> {
        if !self.window.may_accept(nonce) {
            return Err(Refusal::Replay);
        }
        let read = self.state.read_message(nonce, &frame[HEADER_LEN..], plain);
        if read != Ok(plain_len) {
            return Err(Refusal::Unauthenticated);
        }
        if !self.window.accept(nonce) {
            return Err(Refusal::Replay);
        }
        Ok(())
    }
}
