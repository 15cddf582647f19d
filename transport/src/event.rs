//! What the transport tells the application, and the codes it closes connections and streams with.
//!
//! Events go through one bounded channel ([`Events`]) so the application sees connections,
//! disconnections and messages in a single ordered feed, and a slow application slows its peers
//! down (through QUIC flow control) instead of growing memory. The channel is bounded in events
//! and, for messages, in bytes (`MemoryLimits::event_queue_bytes`): each queued message holds
//! its share of the byte budget until the application reads it.

use std::net::SocketAddr;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::class::StreamClass;
use crate::error::ConnectError;
use crate::identity::NodeId;
use crate::relay::CircuitEnd;

/// Something that happened on the transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<M> {
    /// A peer is now connected (first connection to it; replacing a duplicate connection by
    /// another is invisible). The peer's identity has been authenticated.
    Connected {
        /// The authenticated peer.
        peer: NodeId,
        /// Its address as seen by us.
        remote_addr: SocketAddr,
        /// Whether we dialed it.
        outbound: bool,
        /// The relay carrying the connection, `None` for a direct one. A relayed connection's
        /// `remote_addr` is synthetic (see [`crate::is_relayed`]): do not advertise or dial it.
        relay: Option<NodeId>,
    },
    /// The peer is no longer connected. Messages still queued for it were dropped.
    Disconnected {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A framed message arrived on a class stream.
    Message {
        /// The sender (authenticated).
        peer: NodeId,
        /// The class stream it came on.
        class: StreamClass,
        /// The decoded message.
        msg: M,
    },
    /// The peer opened a raw bidirectional stream (see `Transport::open_bi`). Streams the
    /// transport uses internally (relay circuits) never appear here.
    IncomingStream {
        /// The peer.
        peer: NodeId,
        /// Our sending half.
        send: quinn::SendStream,
        /// Our receiving half.
        recv: quinn::RecvStream,
    },
    /// A dial started on demand by `send`/`try_send`/`open_bi` (or by `connect`) failed; messages
    /// queued for the peer were dropped.
    DialFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: ConnectError,
    },
}

/// Why a peer was disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// We closed the connection (`disconnect` or `shutdown`).
    Local {
        /// The code we sent.
        code: CloseCode,
        /// The reason we sent.
        reason: String,
    },
    /// The peer closed the connection.
    Remote {
        /// The peer's code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// Nothing was heard from the peer within the idle timeout (crash, network loss).
    TimedOut,
    /// A transport or protocol error ended the connection.
    Error(String),
    /// The relay circuit carrying the connection ended (for example on a relay limit).
    Relay {
        /// The relay.
        relay: NodeId,
        /// Why the circuit ended.
        end: CircuitEnd,
    },
}

/// Application close codes carried in QUIC CONNECTION_CLOSE frames between P2PS nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// `Transport::disconnect`.
    Normal,
    /// The node is shutting down.
    Shutdown,
    /// Another connection between the same two nodes was kept (simultaneous dial).
    Duplicate,
    /// The node has too many connections.
    TooManyConnections,
    /// The dialer reached another node than it wanted.
    PeerIdMismatch,
    /// The peer broke the protocol (for example no ALPN).
    ProtocolViolation,
    /// The peer sent no message within the first-frame timeout after connecting
    /// (`AdmissionLimits::first_frame_timeout`).
    Silent,
    /// The peer sent no valid network proof: it has no key for this private network or another
    /// one (see `NetworkKey`).
    NetworkKey,
    /// Another process holding the same key (node id) has a live connection to this node: the
    /// new connection is refused (see `connections`).
    IdInUse,
    /// A code this version does not know.
    Other(u64),
}

impl CloseCode {
    /// The numeric code on the wire.
    pub fn to_u64(self) -> u64 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Shutdown => 1,
            CloseCode::Duplicate => 2,
            CloseCode::TooManyConnections => 3,
            CloseCode::PeerIdMismatch => 4,
            CloseCode::ProtocolViolation => 5,
            CloseCode::Silent => 6,
            CloseCode::NetworkKey => 7,
            CloseCode::IdInUse => 8,
            CloseCode::Other(n) => n,
        }
    }

    /// Decodes a numeric code.
    pub fn from_u64(n: u64) -> Self {
        match n {
            0 => CloseCode::Normal,
            1 => CloseCode::Shutdown,
            2 => CloseCode::Duplicate,
            3 => CloseCode::TooManyConnections,
            4 => CloseCode::PeerIdMismatch,
            5 => CloseCode::ProtocolViolation,
            6 => CloseCode::Silent,
            7 => CloseCode::NetworkKey,
            8 => CloseCode::IdInUse,
            n => CloseCode::Other(n),
        }
    }

    pub(crate) fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u64(self.to_u64()).unwrap_or(quinn::VarInt::MAX)
    }
}

/// Codes with which a receiver stops (STOP_SENDING) a class stream it will not read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamStopCode {
    /// A frame header announced a body above the maximum frame size.
    FrameTooLarge,
    /// A frame body did not decode as one message.
    MalformedFrame,
    /// The stream's first byte is not a known traffic class.
    UnknownClass,
    /// The stream's partial frame would have exceeded the receiver's buffer budget for the
    /// connection or the node (`MemoryLimits`); the frame was dropped.
    OverBudget,
}

impl StreamStopCode {
    /// The numeric code on the wire.
    pub fn to_u32(self) -> u32 {
        match self {
            StreamStopCode::FrameTooLarge => 1,
            StreamStopCode::MalformedFrame => 2,
            StreamStopCode::UnknownClass => 3,
            StreamStopCode::OverBudget => 4,
        }
    }

    pub(crate) fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.to_u32())
    }
}

/// An event in the channel, with the share of the event byte budget it holds (released when
/// the application takes the event).
#[derive(Debug)]
pub(crate) struct Queued<M> {
    event: Event<M>,
    _charge: Option<OwnedSemaphorePermit>,
}

/// The application has dropped its [`Events`].
#[derive(Debug)]
pub(crate) struct EventsClosed;

/// The transport's sending end of the event channel.
#[derive(Debug)]
pub(crate) struct EventSender<M> {
    tx: mpsc::Sender<Queued<M>>,
}

impl<M> EventSender<M> {
    /// Queues `event`, waiting for room.
    pub(crate) async fn send(&self, event: Event<M>) -> Result<(), EventsClosed> {
        self.send_charged(event, None).await
    }

    /// Queues `event` holding `charge` until the application reads it.
    pub(crate) async fn send_charged(
        &self,
        event: Event<M>,
        charge: Option<OwnedSemaphorePermit>,
    ) -> Result<(), EventsClosed> {
        self.tx
            .send(Queued {
                event,
                _charge: charge,
            })
            .await
            .map_err(|_| EventsClosed)
    }

    /// Queues `event` if there is room.
    pub(crate) fn try_send(&self, event: Event<M>) -> Result<(), EventsClosed> {
        self.tx
            .try_send(Queued {
                event,
                _charge: None,
            })
            .map_err(|_| EventsClosed)
    }
}

/// The event channel: the transport's sending end and the application's [`Events`].
pub(crate) fn channel<M>(
    capacity: usize,
    closed: watch::Receiver<bool>,
) -> (EventSender<M>, Events<M>) {
    let (tx, rx) = mpsc::channel(capacity);
    (EventSender { tx }, Events { rx, closed })
}

/// The receiving end of the transport's events. Dropping it makes the transport drop incoming
/// messages.
#[derive(Debug)]
pub struct Events<M> {
    rx: mpsc::Receiver<Queued<M>>,
    closed: watch::Receiver<bool>,
}

impl<M> Events<M> {
    /// The next event; `None` once the transport is shut down (or every handle dropped) and the
    /// events queued until then were read.
    pub async fn recv(&mut self) -> Option<Event<M>> {
        loop {
            if *self.closed.borrow() {
                return self.rx.try_recv().ok().map(|q| q.event);
            }
            tokio::select! {
                biased;
                queued = self.rx.recv() => return queued.map(|q| q.event),
                changed = self.closed.changed() => {
                    if changed.is_err() {
                        // The transport is gone entirely: drain what is left.
                        return self.rx.try_recv().ok().map(|q| q.event);
                    }
                }
            }
        }
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event<M>> {
        self.rx.try_recv().ok().map(|q| q.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for c in [
            CloseCode::Normal,
            CloseCode::Shutdown,
            CloseCode::Duplicate,
            CloseCode::TooManyConnections,
            CloseCode::PeerIdMismatch,
            CloseCode::ProtocolViolation,
            CloseCode::Silent,
            CloseCode::NetworkKey,
            CloseCode::Other(77),
        ] {
            assert_eq!(CloseCode::from_u64(c.to_u64()), c);
        }
    }
}
