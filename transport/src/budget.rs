//! Memory budgets of the receive path: what a peer can make this node hold.
//!
//! [`MemoryLimits`] are the knobs. Received bytes sit in three places, each bounded:
//!
//! * **quinn's receive buffers**: data that arrived but was not read yet, at most the QUIC
//!   flow-control windows ([`MemoryLimits::connection_receive_window`] per connection, which
//!   bounds all its streams together; quinn's own default is unlimited);
//! * **frame reassembly**: partial frames in the stream readers' decoders, charged to a
//!   `ByteBudget` of the connection and one of the node through a `Reservation` per stream.
//!   A stream whose next bytes would exceed either budget is stopped (its partial frame is
//!   dropped), so memory stays bounded without stalling other streams;
//! * **the event queue**: decoded messages waiting for the application, charged by their frame
//!   size to [`MemoryLimits::event_queue_bytes`]; readers wait for room, which applies QUIC flow
//!   control to the senders.
//!
//! All of it is released when a stream or connection ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bounds on the memory peers can make this node hold. Every field's default is in its
/// documentation; see also `TransportConfig::peer_queue_bytes` for the send side. Start from
/// `MemoryLimits::default()` and change what you need with the `with_*` setters or by
/// assigning the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryLimits {
    /// Bytes of partial frames buffered for one connection, all its streams together. A
    /// stream whose next bytes do not fit is stopped. Default 4 MiB; at least twice
    /// `max_frame_size`, so that a largest frame always fits beside other traffic.
    pub connection_buffer_bytes: usize,
    /// Bytes of partial frames buffered for all connections together. Default 32 MiB; at least
    /// `connection_buffer_bytes`.
    pub node_buffer_bytes: usize,
    /// Bytes of received messages (counted by frame size) waiting for the application to read
    /// them from `Events`, all peers together; readers wait beyond it. Default 16 MiB; at least
    /// `max_frame_size`.
    pub event_queue_bytes: usize,
    /// QUIC flow-control window of one received stream: bytes a peer may send ahead of what
    /// this node has read. Default 512 KiB.
    pub stream_receive_window: u32,
    /// QUIC flow-control window of one connection, all its streams together: what quinn may
    /// buffer for the connection. Default 2 MiB; at least `stream_receive_window`.
    pub connection_receive_window: u32,
    /// Bytes quinn keeps in flight (sent, not yet acknowledged) on one connection. Default
    /// 4 MiB.
    pub send_window: u64,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            connection_buffer_bytes: 4 * 1024 * 1024,
            node_buffer_bytes: 32 * 1024 * 1024,
            event_queue_bytes: 16 * 1024 * 1024,
            stream_receive_window: 512 * 1024,
            connection_receive_window: 2 * 1024 * 1024,
            send_window: 4 * 1024 * 1024,
        }
    }
}

impl MemoryLimits {
    /// Sets [`connection_buffer_bytes`](Self::connection_buffer_bytes).
    #[must_use]
    pub fn with_connection_buffer_bytes(mut self, connection_buffer_bytes: usize) -> Self {
        self.connection_buffer_bytes = connection_buffer_bytes;
        self
    }

    /// Sets [`node_buffer_bytes`](Self::node_buffer_bytes).
    #[must_use]
    pub fn with_node_buffer_bytes(mut self, node_buffer_bytes: usize) -> Self {
        self.node_buffer_bytes = node_buffer_bytes;
        self
    }

    /// Sets [`event_queue_bytes`](Self::event_queue_bytes).
    #[must_use]
    pub fn with_event_queue_bytes(mut self, event_queue_bytes: usize) -> Self {
        self.event_queue_bytes = event_queue_bytes;
        self
    }

    /// Sets [`stream_receive_window`](Self::stream_receive_window).
    #[must_use]
    pub fn with_stream_receive_window(mut self, stream_receive_window: u32) -> Self {
        self.stream_receive_window = stream_receive_window;
        self
    }

    /// Sets [`connection_receive_window`](Self::connection_receive_window).
    #[must_use]
    pub fn with_connection_receive_window(mut self, connection_receive_window: u32) -> Self {
        self.connection_receive_window = connection_receive_window;
        self
    }

    /// Sets [`send_window`](Self::send_window).
    #[must_use]
    pub fn with_send_window(mut self, send_window: u64) -> Self {
        self.send_window = send_window;
        self
    }
}

/// Which budget a [`Reservation`] could not grow in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OverBudget {
    #[error("the connection's buffer budget ({0} bytes) is used up")]
    Connection(usize),
    #[error("the node's buffer budget ({0} bytes) is used up")]
    Node(usize),
}

/// A count of bytes in use against a fixed limit, shared by the streams it covers.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes in use.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The bytes one stream reader holds, charged to its connection's budget and the node's.
/// Released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    connection: Arc<ByteBudget>,
    node: Arc<ByteBudget>,
    held: usize,
}

impl Reservation {
    pub(crate) fn new(connection: Arc<ByteBudget>, node: Arc<ByteBudget>) -> Self {
        Self {
            connection,
            node,
            held: 0,
        }
    }

    /// Makes the reservation exactly `bytes`: grows it if both budgets have room (otherwise it
    /// is left as it was), shrinks it always.
    pub(crate) fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.held {
            let more = bytes - self.held;
            if !self.connection.try_take(more) {
                return Err(OverBudget::Connection(self.connection.limit));
            }
            if !self.node.try_take(more) {
                self.connection.give(more);
                return Err(OverBudget::Node(self.node.limit));
            }
        } else {
            let less = self.held - bytes;
            self.connection.give(less);
            self.node.give(less);
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.connection.give(self.held);
        self.node.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_connection_and_node_budgets() {
        let node = Arc::new(ByteBudget::new(100));
        let c1 = Arc::new(ByteBudget::new(60));
        let c2 = Arc::new(ByteBudget::new(60));
        let mut a = Reservation::new(c1.clone(), node.clone());
        let mut b = Reservation::new(c1.clone(), node.clone());
        a.resize(40).unwrap();
        assert_eq!(b.resize(30), Err(OverBudget::Connection(60)));
        b.resize(20).unwrap();
        assert_eq!((c1.used(), node.used()), (60, 60));
        // The node's budget runs out before the second connection's does.
        let mut c = Reservation::new(c2.clone(), node.clone());
        assert_eq!(c.resize(50), Err(OverBudget::Node(100)));
        // A failed grow leaves nothing taken.
        assert_eq!((c2.used(), node.used()), (0, 60));
        c.resize(40).unwrap();
        // Shrinking and dropping give everything back.
        a.resize(10).unwrap();
        assert_eq!((c1.used(), node.used()), (30, 70));
        drop(a);
        drop(b);
        drop(c);
        assert_eq!((c1.used(), c2.used(), node.used()), (0, 0, 0));
    }

    #[test]
    fn defaults_are_consistent() {
        let m = MemoryLimits::default();
        assert!(m.connection_buffer_bytes <= m.node_buffer_bytes);
        assert!(m.stream_receive_window <= m.connection_receive_window);
    }
}
