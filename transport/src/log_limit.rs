//! Rate limits on log lines that peers can cause.
//!
//! A garbage frame, a refused stream or a refused connection is something any peer can make
//! happen thousands of times a second; a log line for each would turn the log into a flood
//! vector (disk, terminal, log shipping). So each such call site owns a [`LogLimit`]: at most
//! `per_interval` lines per interval in all and at most `per_key` of them for one key (a peer,
//! an address), so that one noisy peer cannot hide the others. The lines held back are counted
//! and the next line logged says how many (`suppressed`), so nothing goes unseen, only unsaid.
//!
//! ```
//! use p2ps_transport::log_limit::LogLimit;
//! use std::time::Duration;
//!
//! static BAD_THINGS: LogLimit<u32> = LogLimit::new(Duration::from_secs(10), 10, 3);
//! for peer in [1, 1, 1, 1, 2] {
//!     if let Some(suppressed) = BAD_THINGS.check(peer) {
//!         eprintln!("peer {peer} did a bad thing ({suppressed} similar lines suppressed)");
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A log line budget for one call site: `per_interval` lines per `interval`, `per_key` of
/// them for one key. Its state is bounded: keys are remembered only for the lines logged in
/// the current interval.
#[derive(Debug)]
pub struct LogLimit<K = ()> {
    interval: Duration,
    per_interval: u32,
    per_key: u32,
    window: Mutex<Window<K>>,
}

#[derive(Debug)]
struct Window<K> {
    /// When the current interval started (`None`: nothing logged yet).
    start: Option<Instant>,
    /// Lines logged in it.
    lines: u32,
    /// Lines logged in it per key (at most `per_interval` keys).
    keys: BTreeMap<K, u32>,
    /// Lines held back since the last line logged.
    suppressed: u64,
}

impl<K: Ord> LogLimit<K> {
    /// A budget of `per_interval` lines per `interval`, at most `per_key` for one key.
    pub const fn new(interval: Duration, per_interval: u32, per_key: u32) -> Self {
        LogLimit {
            interval,
            per_interval,
            per_key,
            window: Mutex::new(Window {
                start: None,
                lines: 0,
                keys: BTreeMap::new(),
                suppressed: 0,
            }),
        }
    }

    /// Whether a line about `key` may be logged now: `Some(n)` with the number of lines held
    /// back since the last one logged (to be said in this line), or `None` to stay quiet.
    pub fn check(&self, key: K) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    /// [`LogLimit::check`] at `now`.
    pub fn check_at(&self, key: K, now: Instant) -> Option<u64> {
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.interval);
        if expired {
            w.start = Some(now);
            w.lines = 0;
            w.keys.clear();
        }
        let of_key = w.keys.get(&key).copied().unwrap_or(0);
        if w.lines >= self.per_interval || of_key >= self.per_key {
            w.suppressed += 1;
            return None;
        }
        w.lines += 1;
        w.keys.insert(key, of_key + 1);
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_per_interval_and_per_key_then_a_count_of_the_rest() {
        let limit: LogLimit<u8> = LogLimit::new(Duration::from_secs(10), 4, 2);
        let t0 = Instant::now();
        let logged: Vec<Option<u64>> = (0..100).map(|_| limit.check_at(1, t0)).collect();
        // One peer: its 2 lines, then silence however many it causes.
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 2);
        // Another peer still gets its lines, and the first of them says how many were held.
        assert_eq!(limit.check_at(2, t0), Some(98));
        assert_eq!(limit.check_at(2, t0), Some(0));
        assert_eq!(limit.check_at(2, t0), None);
        // The interval's total holds whoever asks.
        assert_eq!(limit.check_at(3, t0), None);
        // The next interval starts afresh and reports what the last one held back.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limit.check_at(1, t1), Some(2));
        assert_eq!(limit.check_at(1, t1), Some(0));
        assert_eq!(limit.check_at(1, t1), None);
    }

    #[test]
    fn state_stays_bounded_under_many_keys() {
        let limit: LogLimit<u32> = LogLimit::new(Duration::from_secs(1), 5, 1);
        let t0 = Instant::now();
        let logged = (0..10_000)
            .filter(|k| limit.check_at(*k, t0).is_some())
            .count();
        assert_eq!(logged, 5);
        let keys = limit
            .window
            .lock()
            .map(|w| w.keys.len())
            .unwrap_or(usize::MAX);
        assert!(keys <= 5, "{keys} keys remembered");
    }
}
