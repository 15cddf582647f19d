//! Who may start casts (broadcasts and range multicasts) in a network, and how often.
//!
//! One cast costs the network a message per node it reaches, so whoever may start them at will
//! can keep every node busy: a peer once started 466 000 full-ring casts in 30 s as any node it
//! liked (1.8 million messages, every receiver's output flooded). So every node asks its cast
//! policy ([`CastPolicy`]) about each cast it sees for the first time, before it delivers it or
//! passes it on, and about each cast its own application starts. Since every honest node asks
//! the same question of the same origin, a cast refused at the first nodes it reaches goes no
//! further. The default policy ([`RateLimit`]) lets each origin start a burst of casts and then
//! a steady number per second; an application sets its own with
//! [`crate::cast::Casts::with_policy`] (for example: only these signed origins may broadcast).

use crate::cast::CastKind;
use crate::peer::PeerId;
use crate::rate::{Rate, TokenBuckets};
use crate::time::Time;

/// Decides whether a cast from `origin` (whose signature the core checked) may be delivered
/// here and passed on. Asked once per cast a node sees for the first time, and once per cast
/// its own application starts.
pub trait CastPolicy<P: PeerId>: Send + 'static {
    /// Whether the cast may go on; `false` drops it here.
    fn admit(&mut self, origin: P, kind: &CastKind, now: Time) -> bool;
}

/// How many casts one origin may start: `burst` at once, then `per_sec` a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastRate {
    /// Casts a second, in the long run.
    pub per_sec: u32,
    /// Casts at once, after a quiet while.
    pub burst: u32,
}

impl Default for CastRate {
    /// 64 casts a second and bursts of 256 per origin.
    fn default() -> Self {
        CastRate {
            per_sec: 64,
            burst: 256,
        }
    }
}

/// The default policy: a token bucket per origin ([`CastRate`]). At most `max_origins` origins
/// are tracked; when that many are busy, casts of origins not tracked yet are refused until
/// some bucket fills up again (an attacker with fresh ids cannot push honest origins out).
#[derive(Debug)]
pub struct RateLimit<P> {
    buckets: TokenBuckets<P>,
}

impl<P: PeerId> RateLimit<P> {
    /// Origins tracked at once by default.
    pub const MAX_ORIGINS: usize = 4096;

    /// The policy for `rate`.
    pub fn new(rate: CastRate) -> Self {
        Self::with_max_origins(rate, Self::MAX_ORIGINS)
    }

    /// The policy for `rate`, tracking at most `max_origins` origins at once.
    pub fn with_max_origins(rate: CastRate, max_origins: usize) -> Self {
        let rate = Rate {
            per_sec: rate.per_sec,
            burst: rate.burst,
        };
        RateLimit {
            buckets: TokenBuckets::new(rate, max_origins),
        }
    }
}

impl<P: PeerId> CastPolicy<P> for RateLimit<P> {
    fn admit(&mut self, origin: P, _kind: &CastKind, now: Time) -> bool {
        self.buckets.take(origin, now)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::SimId;
    use std::time::Duration;

    #[test]
    fn each_origin_gets_its_burst_then_its_rate() {
        let mut p = RateLimit::new(CastRate {
            per_sec: 10,
            burst: 5,
        });
        let (a, b) = (SimId::new(1, 0), SimId::new(2, 0));
        let k = CastKind::Broadcast;
        let t0 = Time::from_secs(100);
        let admitted = (0..8).filter(|_| p.admit(a, &k, t0)).count();
        assert_eq!(admitted, 5);
        // Another origin is not held back by the first.
        assert!(p.admit(b, &k, t0));
        // 10 a second: one more after 100 ms, none before.
        assert!(!p.admit(a, &k, t0 + Duration::from_millis(50)));
        assert!(p.admit(a, &k, t0 + Duration::from_millis(150)));
        // After a long quiet, the burst again, not more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| p.admit(a, &k, later)).count(), 5);
    }

    #[test]
    fn fresh_ids_cannot_push_out_busy_origins() {
        let mut p = RateLimit::with_max_origins(
            CastRate {
                per_sec: 1,
                burst: 2,
            },
            3,
        );
        let k = CastKind::Broadcast;
        let t0 = Time::from_secs(1);
        for i in 0..3 {
            assert!(p.admit(SimId::new(i, 0), &k, t0));
        }
        // Three busy origins tracked: a fourth is refused…
        assert!(!p.admit(SimId::new(9, 0), &k, t0));
        // …until the others have been quiet long enough to be forgotten.
        assert!(p.admit(SimId::new(9, 0), &k, t0 + Duration::from_secs(5)));
    }
}
