//! Traffic classes: each travels on its own long-lived unidirectional QUIC stream.
//!
//! Separate streams mean a stalled or lost packet of one class never holds up another (no
//! head-of-line blocking across classes), and quinn's stream priorities let routing upkeep
//! overtake a burst of user data queued on the same connection. The first byte of each class
//! stream is the class tag, so the receiver knows what it is reading without any other
//! negotiation.

use serde::{Deserialize, Serialize};

/// The traffic class of a message; decides its stream, its priority and its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamClass {
    /// Overlay upkeep (routing table maintenance, liveness). Highest priority.
    Routing,
    /// Dissemination tree maintenance and tree traffic.
    Tree,
    /// Application payload. Lowest priority among class streams.
    User,
}

impl StreamClass {
    /// All classes, highest priority first.
    pub const ALL: [StreamClass; 3] = [StreamClass::Routing, StreamClass::Tree, StreamClass::User];

    /// The tag byte that opens a stream of this class.
    pub const fn tag(self) -> u8 {
        match self {
            StreamClass::Routing => 0x01,
            StreamClass::Tree => 0x02,
            StreamClass::User => 0x03,
        }
    }

    /// The class identified by a stream's first byte, if any.
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0x01 => Some(StreamClass::Routing),
            0x02 => Some(StreamClass::Tree),
            0x03 => Some(StreamClass::User),
            _ => None,
        }
    }

    /// quinn send priority of the class stream (higher is sent first).
    pub const fn priority(self) -> i32 {
        match self {
            StreamClass::Routing => 30,
            StreamClass::Tree => 20,
            StreamClass::User => 10,
        }
    }

    /// Dense index 0..3, for per-class tables.
    pub const fn index(self) -> usize {
        match self {
            StreamClass::Routing => 0,
            StreamClass::Tree => 1,
            StreamClass::User => 2,
        }
    }
}

/// quinn send priority given to raw bidirectional streams opened with `open_bi`: below every
/// class stream, so bulk transfers never delay framed messages. Callers may change it with
/// `SendStream::set_priority`.
pub const RAW_STREAM_PRIORITY: i32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_priorities_order() {
        for c in StreamClass::ALL {
            assert_eq!(StreamClass::from_tag(c.tag()), Some(c));
            assert_eq!(StreamClass::ALL[c.index()], c);
        }
        assert_eq!(StreamClass::from_tag(0), None);
        assert_eq!(StreamClass::from_tag(0xff), None);
        assert!(StreamClass::Routing.priority() > StreamClass::Tree.priority());
        assert!(StreamClass::Tree.priority() > StreamClass::User.priority());
        assert!(StreamClass::User.priority() > RAW_STREAM_PRIORITY);
    }
}
