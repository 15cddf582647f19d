//! Diagnostics: a bounded copy of the bytes a relay forwards.
//!
//! It exists to *show* what a relay can see of the traffic it carries (tests assert that
//! plaintext sent between the two ends never appears in it). It holds at most its capacity, is
//! off unless configured, and is never needed for relaying.

use std::sync::{Arc, Mutex};

use crate::connections::lock;

/// A bounded capture of the bytes a relay forwards, in the order it forwards them (both
/// directions of every circuit, interleaved). Clone it into `RelayConfig::tap` and read it with
/// [`RelayTap::captured`].
#[derive(Debug, Clone)]
pub struct RelayTap {
    inner: Arc<Mutex<Capture>>,
}

#[derive(Debug)]
struct Capture {
    bytes: Vec<u8>,
    capacity: usize,
    seen: u64,
}

impl RelayTap {
    /// A tap keeping the first `capacity` forwarded bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Capture {
                bytes: Vec::new(),
                capacity,
                seen: 0,
            })),
        }
    }

    /// The bytes captured so far (at most the capacity).
    pub fn captured(&self) -> Vec<u8> {
        lock(&self.inner).bytes.clone()
    }

    /// All bytes forwarded while the tap was installed, captured or not.
    pub fn bytes_seen(&self) -> u64 {
        lock(&self.inner).seen
    }

    pub(crate) fn record(&self, chunk: &[u8]) {
        let mut c = lock(&self.inner);
        c.seen += chunk.len() as u64;
        let room = c.capacity.saturating_sub(c.bytes.len());
        let n = room.min(chunk.len());
        c.bytes.extend_from_slice(&chunk[..n]);
    }
}
