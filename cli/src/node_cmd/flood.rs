//! Keeps `p2ps node`'s text output readable when messages come faster than a person can read:
//! in each second the first [`SHOWN_PER_SEC`] messages are printed, the rest only counted, and
//! one line then says how many were not shown and from how many senders. A peer flooding the
//! node so fills neither the terminal nor a log file. `--json` output, for programs, prints
//! every message.

use p2ps::NodeId;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Messages printed per second before the rest are only counted.
pub(super) const SHOWN_PER_SEC: u32 = 20;

/// The window messages are counted over.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Senders told apart in one summary (more count as "at least").
const MAX_SENDERS: usize = 1024;

/// What was held back in a window.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Hidden {
    /// Messages not printed.
    pub(super) messages: u64,
    /// Their senders (at most [`MAX_SENDERS`] counted).
    pub(super) senders: usize,
}

/// The count of messages in the current window.
#[derive(Debug)]
pub(super) struct FloodGate {
    start: Instant,
    shown: u32,
    hidden: u64,
    senders: BTreeSet<NodeId>,
}

impl FloodGate {
    /// A gate whose first window starts at `now`.
    pub(super) fn new(now: Instant) -> Self {
        FloodGate {
            start: now,
            shown: 0,
            hidden: 0,
            senders: BTreeSet::new(),
        }
    }

    /// Whether a message from `from` arriving at `now` is printed; if not, it is counted. A
    /// window that ended gives its summary first (see [`FloodGate::summary`]).
    pub(super) fn admit(&mut self, now: Instant, from: NodeId) -> (bool, Option<Hidden>) {
        let ended = self.summary(now);
        if self.shown < SHOWN_PER_SEC {
            self.shown += 1;
            return (true, ended);
        }
        self.hidden += 1;
        if self.senders.len() < MAX_SENDERS {
            self.senders.insert(from);
        }
        (false, ended)
    }

    /// If the window ended by `now`: what it held back (if anything), and a new window.
    pub(super) fn summary(&mut self, now: Instant) -> Option<Hidden> {
        if now.duration_since(self.start) < WINDOW {
            return None;
        }
        let hidden = (self.hidden > 0).then_some(Hidden {
            messages: self.hidden,
            senders: self.senders.len(),
        });
        *self = FloodGate::new(now);
        hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_not_printed() {
        let t0 = Instant::now();
        let mut g = FloodGate::new(t0);
        let (a, b) = (
            NodeId::from_public_key(&[1; 32]),
            NodeId::from_public_key(&[2; 32]),
        );
        let shown = (0..1000)
            .filter(|i| g.admit(t0, if i % 2 == 0 { a } else { b }).0)
            .count();
        assert_eq!(shown, SHOWN_PER_SEC as usize);
        assert_eq!(g.summary(t0 + Duration::from_millis(500)), None);
        assert_eq!(
            g.summary(t0 + WINDOW),
            Some(Hidden {
                messages: 1000 - u64::from(SHOWN_PER_SEC),
                senders: 2
            })
        );
        // A quiet window says nothing; the next messages are printed again.
        assert_eq!(g.summary(t0 + WINDOW * 3), None);
        assert!(g.admit(t0 + WINDOW * 3, a).0);
    }
}
