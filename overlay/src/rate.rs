//! Token buckets keyed by peer: how the overlay bounds what one peer may make a node do per
//! second (messages over a link, casts started by an origin).
//!
//! Each key gets `burst` tokens after a quiet while and `per_sec` more a second; one token pays
//! for one unit of work. The number of keys tracked at once is bounded: when that many keys are
//! busy, the ones whose buckets have filled up again are forgotten (a full bucket is the same as
//! no entry); if none has, new keys are refused until one does, so that fresh ids cannot push
//! busy honest peers out.

use crate::time::Time;
use std::collections::BTreeMap;

/// A rate: `burst` units at once, then `per_sec` a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Units a second, in the long run.
    pub per_sec: u32,
    /// Units at once, after a quiet while; 0 refuses everything.
    pub burst: u32,
}

/// A token bucket per key, at most `max_keys` of them.
#[derive(Clone, Debug)]
pub struct TokenBuckets<K> {
    rate: Rate,
    max_keys: usize,
    /// Key -> (tokens in thousandths, when they were counted).
    buckets: BTreeMap<K, (u64, Time)>,
}

impl<K: Ord + Copy> TokenBuckets<K> {
    /// Buckets for `rate`, tracking at most `max_keys` keys at once.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        TokenBuckets {
            rate,
            max_keys,
            buckets: BTreeMap::new(),
        }
    }

    /// The rate every key gets.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn full(&self) -> u64 {
        u64::from(self.rate.burst) * 1000
    }

    /// The tokens (in thousandths) of a bucket last counted at `at` with `tokens`, at `now`.
    fn refill(&self, tokens: u64, at: Time, now: Time) -> u64 {
        let ms = u64::try_from(now.since(at).as_millis()).unwrap_or(u64::MAX);
        tokens
            .saturating_add(ms.saturating_mul(u64::from(self.rate.per_sec)))
            .min(self.full())
    }

    /// Takes one token from `key`'s bucket at `now`: `false` if it has none (or `key` is new
    /// and `max_keys` busy keys are tracked), and the unit of work must be refused.
    pub fn take(&mut self, key: K, now: Time) -> bool {
        if self.rate.burst == 0 {
            return false;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            // Forget the keys that have been quiet long enough to be full again.
            self.prune(now);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let (tokens, at) = self
            .buckets
            .get(&key)
            .copied()
            .unwrap_or((self.full(), now));
        let tokens = self.refill(tokens, at, now);
        if tokens < 1000 {
            self.buckets.insert(key, (tokens, now));
            return false;
        }
        self.buckets.insert(key, (tokens - 1000, now));
        true
    }

    /// Forgets `key` if its bucket is full at `now` (nothing is lost then). A key that has
    /// spent tokens stays until they are back, so that closing a link and opening a new one
    /// does not refill its bucket.
    pub fn release(&mut self, key: &K, now: Time) {
        if let Some(&(t, at)) = self.buckets.get(key) {
            if self.refill(t, at, now) >= self.full() {
                self.buckets.remove(key);
            }
        }
    }

    /// Forgets every key whose bucket is full again at `now`.
    pub fn prune(&mut self, now: Time) {
        let full = self.full();
        let kept: BTreeMap<K, (u64, Time)> = std::mem::take(&mut self.buckets)
            .into_iter()
            .filter(|(_, (t, at))| self.refill(*t, *at, now) < full)
            .collect();
        self.buckets = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_key_gets_its_burst_then_its_rate() {
        let mut b = TokenBuckets::new(
            Rate {
                per_sec: 10,
                burst: 5,
            },
            16,
        );
        let t0 = Time::from_secs(100);
        assert_eq!((0..8).filter(|_| b.take(1u32, t0)).count(), 5);
        // Another key is not held back by the first.
        assert!(b.take(2, t0));
        // 10 a second: one more after 100 ms, none before.
        assert!(!b.take(1, t0 + Duration::from_millis(50)));
        assert!(b.take(1, t0 + Duration::from_millis(150)));
        // After a long quiet, the burst again, not more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(1, later)).count(), 5);
        // Releasing a key that spent its tokens does not refill it…
        b.release(&1, later);
        assert!(!b.take(1, later));
        // …but once it is full again it is forgotten.
        b.release(&1, later + Duration::from_secs(1));
        b.prune(later + Duration::from_secs(1));
        assert!(b.is_empty());
    }

    #[test]
    fn new_keys_cannot_push_out_busy_ones() {
        let rate = Rate {
            per_sec: 1,
            burst: 2,
        };
        let mut b = TokenBuckets::new(rate, 3);
        let t0 = Time::from_secs(1);
        for k in 0..3u32 {
            assert!(b.take(k, t0));
        }
        // Three busy keys tracked: a fourth is refused…
        assert!(!b.take(9, t0));
        assert_eq!(b.len(), 3);
        // …until the others have been quiet long enough to be forgotten.
        assert!(b.take(9, t0 + Duration::from_secs(5)));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_zero_burst_refuses_everything() {
        let mut b = TokenBuckets::new(
            Rate {
                per_sec: 100,
                burst: 0,
            },
            4,
        );
        assert!(!b.take(1u8, Time::from_secs(1)));
        assert!(b.is_empty());
    }
}
