//! Which of two consecutive key epochs a packet was built for, readable before any crypto.
//!
//! A node holds two keys around an epoch boundary (the previous one for packets still in
//! flight, or the next one for senders whose clocks run ahead). Trying both would cost a
//! second scalar multiplication for every packet under the other key, and for every
//! forgery. Instead the sender writes the epoch's parity into the top bit of α, a bit a
//! canonical Ristretto encoding always leaves zero: the node reads it, picks the key, and
//! clears it before decoding. Later hops' parities travel inside the routing commands
//! (see [`crate::Command`] and `SPEC.md`), and each hop writes the next one into the α it
//! forwards. A flipped bit only selects the other key, whose MAC check then fails.
//!
//! The bit is the same for every packet processed in one epoch, so it tells an observer
//! nothing the public epoch schedule does not, except, around a boundary, which side of
//! it the sender expected the hop to fall on.

use crate::params::ALPHA_LEN;

/// The byte of α that carries the phase bit, and the bit.
const PHASE_BYTE: usize = ALPHA_LEN - 1;
const PHASE_BIT: u8 = 0x80;

/// The parity of a key epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyPhase {
    /// An even epoch (and every key that has no epochs, such as a client's).
    #[default]
    Even,
    /// An odd epoch.
    Odd,
}

impl KeyPhase {
    /// The phase of epoch `epoch`.
    pub fn of_epoch(epoch: u64) -> Self {
        if epoch.is_multiple_of(2) {
            Self::Even
        } else {
            Self::Odd
        }
    }

    /// The phase a packet's α carries; `None` if the buffer is shorter than α.
    pub fn of_packet(packet: &[u8]) -> Option<Self> {
        packet
            .get(PHASE_BYTE)
            .map(|b| Self::from_bit(b & PHASE_BIT != 0))
    }

    /// 0 for even, 1 for odd: an index into a pair of per-phase states.
    pub fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_bit(odd: bool) -> Self {
        if odd { Self::Odd } else { Self::Even }
    }

    /// Sets the phase bit of an encoded α (whose canonical encoding has it clear).
    pub(crate) fn mark(self, alpha: &mut [u8]) {
        alpha[PHASE_BYTE] = (alpha[PHASE_BYTE] & !PHASE_BIT) | self.bit();
    }

    /// Clears the phase bit of an encoded α, giving the canonical encoding back.
    pub(crate) fn clear(alpha: &mut [u8; ALPHA_LEN]) {
        alpha[PHASE_BYTE] &= !PHASE_BIT;
    }

    /// The wire byte of the phase in a routing command.
    pub(crate) fn byte(self) -> u8 {
        self as u8
    }

    fn bit(self) -> u8 {
        match self {
            Self::Even => 0,
            Self::Odd => PHASE_BIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_alternate_and_round_trip_through_alpha() {
        assert_eq!(KeyPhase::of_epoch(0), KeyPhase::Even);
        assert_eq!(KeyPhase::of_epoch(7), KeyPhase::Odd);
        let mut alpha = [0x11u8; ALPHA_LEN];
        KeyPhase::Odd.mark(&mut alpha);
        assert_eq!(KeyPhase::of_packet(&alpha), Some(KeyPhase::Odd));
        KeyPhase::clear(&mut alpha);
        assert_eq!(alpha, [0x11u8; ALPHA_LEN]);
        assert_eq!(KeyPhase::of_packet(&alpha), Some(KeyPhase::Even));
        assert_eq!(KeyPhase::of_packet(&alpha[..4]), None);
    }
}
