//! A bounded memory of recently seen message ids, so that a message reaching a node twice (a
//! re-sent broadcast piece, a tree edge changing under a group message) is delivered once.

use crate::time::Time;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Ids seen in the last `ttl`, at most `cap` of them (the oldest are forgotten first).
#[derive(Debug)]
pub struct Seen<K> {
    at: BTreeMap<K, Time>,
    order: VecDeque<(Time, K)>,
    ttl: Duration,
    cap: usize,
}

impl<K: Ord + Copy> Seen<K> {
    /// An empty memory.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Seen {
            at: BTreeMap::new(),
            order: VecDeque::new(),
            ttl,
            cap: cap.max(1),
        }
    }

    /// Records `key`; returns whether it is new.
    pub fn insert(&mut self, key: K, now: Time) -> bool {
        self.expire(now);
        if self.at.contains_key(&key) {
            return false;
        }
        while self.at.len() >= self.cap {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.at.remove(&old);
                }
                None => break,
            }
        }
        self.at.insert(key, now);
        self.order.push_back((now, key));
        true
    }

    /// Whether `key` is remembered (expired ids may still count until the next insert).
    pub fn contains(&self, key: &K) -> bool {
        self.at.contains_key(key)
    }

    /// Forgets ids older than the time to live.
    pub fn expire(&mut self, now: Time) {
        while let Some(&(t, k)) = self.order.front() {
            if now.since(t) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.at.remove(&k);
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_ttl_and_cap() {
        let mut s = Seen::new(Duration::from_secs(10), 2);
        let t = Time::ZERO;
        assert!(s.insert(1, t));
        assert!(!s.insert(1, t));
        assert!(s.insert(2, t));
        assert!(s.insert(3, t)); // evicts 1
        assert_eq!(s.len(), 2);
        assert!(s.insert(1, t));
        let later = t + Duration::from_secs(11);
        assert!(s.insert(3, later)); // expired
        assert_eq!(s.len(), 1);
    }
}
