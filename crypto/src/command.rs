//! The Loopix routing command each hop finds in its slice of the header.
//!
//! Layout (16 bytes): `flag u8 | next_phase u8 | reserved [u8; 2] = 0 | delay_us u32 LE |
//! address u64 LE`. `next_phase` is the [`KeyPhase`] of the key the next node unwraps the
//! packet with (0 even, 1 odd); only a relay has one. Parsed once into [`Command`] and
//! that phase; anything that does not fit is [`MalformedCommand`].

use core::fmt;

use crate::key_phase::KeyPhase;
use crate::params::COMMAND_LEN;

/// The 64-bit id every participant (mix, provider or client) has in the topology. Fixed
/// width, so the header length never depends on who is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

/// What a hop must do with the packet it unwrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Hold the packet for `delay_us`, then send it to node `next`.
    Relay { next: NodeId, delay_us: u32 },
    /// Provider: hold for `delay_us`, then store the packet in the inbox of `client`.
    Deliver { client: NodeId, delay_us: u32 },
    /// This hop sent the packet as loop cover; it has come back. Payload is readable.
    LoopReturn,
    /// Provider: drop cover traffic; discard the packet.
    Drop,
    /// This hop is the recipient; the payload is the sender's message.
    Final,
    /// The end of a reply's path, at the client that made the reply block: the body is
    /// left as it came, for the reply block's keys ([`crate::surb`]), which alone can
    /// check and open it.
    Reply { surb_id: u64 },
}

/// A command whose bytes do not encode any [`Command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedCommand;

impl fmt::Display for MalformedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed routing command")
    }
}

impl std::error::Error for MalformedCommand {}

mod flag {
    pub const RELAY: u8 = 1;
    pub const DELIVER: u8 = 2;
    pub const LOOP_RETURN: u8 = 3;
    pub const DROP: u8 = 4;
    pub const FINAL: u8 = 5;
    pub const REPLY: u8 = 6;
}

impl Command {
    /// True for commands that end a path: nothing is forwarded after them.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::LoopReturn | Self::Drop | Self::Final | Self::Reply { .. }
        )
    }

    /// True for terminal commands whose hop reads the payload.
    pub fn reads_payload(&self) -> bool {
        matches!(self, Self::LoopReturn | Self::Final)
    }

    /// The 16-byte wire form, with an even next phase.
    pub fn encode(&self) -> [u8; COMMAND_LEN] {
        self.encode_routed(KeyPhase::Even)
    }

    /// The 16-byte wire form telling a relay which key phase the next node's α carries.
    /// Other commands have no next node: their phase byte stays zero.
    pub fn encode_routed(&self, next_phase: KeyPhase) -> [u8; COMMAND_LEN] {
        let (f, delay_us, address) = match *self {
            Self::Relay { next, delay_us } => (flag::RELAY, delay_us, next.0),
            Self::Deliver { client, delay_us } => (flag::DELIVER, delay_us, client.0),
            Self::LoopReturn => (flag::LOOP_RETURN, 0, 0),
            Self::Drop => (flag::DROP, 0, 0),
            Self::Final => (flag::FINAL, 0, 0),
            Self::Reply { surb_id } => (flag::REPLY, 0, surb_id),
        };
        let mut out = [0u8; COMMAND_LEN];
        out[0] = f;
        if let Self::Relay { .. } = self {
            out[1] = next_phase.byte();
        }
        out[4..8].copy_from_slice(&delay_us.to_le_bytes());
        out[8..16].copy_from_slice(&address.to_le_bytes());
        out
    }

    /// Parses the wire form of a command with an even (or no) next phase.
    pub fn decode(bytes: &[u8; COMMAND_LEN]) -> Result<Self, MalformedCommand> {
        match Self::decode_routed(bytes)? {
            (command, KeyPhase::Even) => Ok(command),
            (_, KeyPhase::Odd) => Err(MalformedCommand),
        }
    }

    /// Parses the wire form and the next node's key phase. Reserved bytes must be zero,
    /// only a relay has a phase (0 or 1), and terminal commands carry neither delay nor
    /// address: a canonical encoding leaves no room for hidden bits.
    pub fn decode_routed(bytes: &[u8; COMMAND_LEN]) -> Result<(Self, KeyPhase), MalformedCommand> {
        let [f, phase, r1, r2, d0, d1, d2, d3, a @ ..] = *bytes;
        if [r1, r2] != [0; 2] || phase > 1 || (phase == 1 && f != flag::RELAY) {
            return Err(MalformedCommand);
        }
        let delay_us = u32::from_le_bytes([d0, d1, d2, d3]);
        let address = NodeId(u64::from_le_bytes(a));
        let command = match f {
            flag::RELAY => Self::Relay {
                next: address,
                delay_us,
            },
            flag::DELIVER => Self::Deliver {
                client: address,
                delay_us,
            },
            flag::LOOP_RETURN => Self::LoopReturn,
            flag::DROP => Self::Drop,
            flag::FINAL => Self::Final,
            flag::REPLY => Self::Reply { surb_id: address.0 },
            _ => return Err(MalformedCommand),
        };
        let carries_id = matches!(command, Self::Reply { .. });
        if command.is_terminal() && (delay_us != 0 || (address.0 != 0 && !carries_id)) {
            return Err(MalformedCommand);
        }
        Ok((command, KeyPhase::from_bit(phase == 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (any::<u64>(), any::<u32>()).prop_map(|(a, d)| Command::Relay {
                next: NodeId(a),
                delay_us: d
            }),
            (any::<u64>(), any::<u32>()).prop_map(|(a, d)| Command::Deliver {
                client: NodeId(a),
                delay_us: d
            }),
            Just(Command::LoopReturn),
            Just(Command::Drop),
            Just(Command::Final),
            any::<u64>().prop_map(|surb_id| Command::Reply { surb_id }),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(c in any_command()) {
            prop_assert_eq!(Command::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn routed_encode_then_decode_is_identity(c in any_command(), odd in any::<bool>()) {
            let phase = match c {
                Command::Relay { .. } => KeyPhase::from_bit(odd),
                _ => KeyPhase::Even,
            };
            prop_assert_eq!(Command::decode_routed(&c.encode_routed(phase)), Ok((c, phase)));
        }

        #[test]
        fn decode_never_panics_and_accepts_only_canonical_bytes(b in any::<[u8; 16]>()) {
            if let Ok(c) = Command::decode(&b) {
                prop_assert_eq!(c.encode(), b);
            }
            if let Ok((c, phase)) = Command::decode_routed(&b) {
                prop_assert_eq!(c.encode_routed(phase), b);
            }
        }
    }

    #[test]
    fn unknown_flag_and_reserved_bits_are_malformed() {
        let mut b = Command::Drop.encode();
        b[0] = 0;
        assert_eq!(Command::decode(&b), Err(MalformedCommand));
        let mut b = Command::Relay {
            next: NodeId(1),
            delay_us: 2,
        }
        .encode();
        b[2] = 1;
        assert_eq!(Command::decode(&b), Err(MalformedCommand));
        let mut b = Command::Deliver {
            client: NodeId(1),
            delay_us: 2,
        }
        .encode();
        b[1] = 1;
        assert_eq!(
            Command::decode_routed(&b),
            Err(MalformedCommand),
            "a deliver has no next phase"
        );
        let mut b = Command::Relay {
            next: NodeId(1),
            delay_us: 2,
        }
        .encode();
        b[1] = 2;
        assert_eq!(Command::decode_routed(&b), Err(MalformedCommand));
        b[1] = 1;
        assert_eq!(
            Command::decode(&b),
            Err(MalformedCommand),
            "odd needs decode_routed"
        );
        let mut b = Command::Final.encode();
        b[9] = 1;
        assert_eq!(Command::decode(&b), Err(MalformedCommand));
    }
}
