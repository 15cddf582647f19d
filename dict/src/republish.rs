//! Republishing by the writer: a value written with [`PutOptions::republish`] is written again
//! by its writer before it expires, with the same version and a new expiry, for as long as the
//! writer runs (libp2p-kad's republishing, OpenDHT's permanent puts). A renewal replaces the
//! record it renews wherever it lands (same version, same writer, later expiry: see
//! [`Record::renews`]), so readers and compare-and-swap see no new version, and it brings the
//! value back to replica sets that lost every copy meanwhile.
//!
//! It stops when the writer's own write of the key fails, when the writer writes the key
//! again without asking for it (or deletes it), when it calls [`Dict::stop_republishing`], or
//! when a renewal finds a newer version (another writer's) in place. A node republishes at
//! most `DictConfig::max_republished` keys.
//!
//! [`PutOptions::republish`]: crate::PutOptions::republish
//! [`Record::renews`]: crate::Record::renews

use crate::record::{DictKey, Record};
use crate::service::{Asked, Dict};
use crate::store::Store;
use crate::wire::DictError;
use bytes::Bytes;
use p2ps_overlay::service::Context;
use p2ps_overlay::{PeerId, RingId, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long after a failed renewal the writer tries again.
const RETRY: Duration = Duration::from_secs(10);

/// A key its writer republishes.
#[derive(Debug)]
struct Kept<P> {
    key: DictKey<P>,
    value: Option<Bytes>,
    version: u64,
    ttl: Duration,
    w: u8,
    /// The write or renewal in flight (its request id).
    req: u64,
    /// When it is renewed next.
    at: Time,
}

/// The keys a node republishes, and when.
#[derive(Debug)]
pub(crate) struct Republishing<P> {
    kept: BTreeMap<RingId, Kept<P>>,
    schedule: BTreeSet<(Time, RingId)>,
}

impl<P> Default for Republishing<P> {
    fn default() -> Self {
        Republishing {
            kept: BTreeMap::new(),
            schedule: BTreeSet::new(),
        }
    }
}

/// When a record written now with `ttl` is renewed: after three quarters of it.
fn renewal(now: Time, ttl: Duration) -> Time {
    now + ttl * 3 / 4
}

impl<P: PeerId> Republishing<P> {
    /// How many keys are republished.
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether `key` is republished.
    pub(crate) fn contains(&self, key: RingId) -> bool {
        self.kept.contains_key(&key)
    }

    /// The next renewal.
    pub(crate) fn next(&self) -> Option<Time> {
        self.schedule.first().map(|(t, _)| *t)
    }

    fn set_at(&mut self, pos: RingId, at: Time) {
        if let Some(k) = self.kept.get_mut(&pos) {
            self.schedule.remove(&(k.at, pos));
            k.at = at;
            self.schedule.insert((at, pos));
        }
    }

    /// Stops republishing `pos`; whether it was.
    pub(crate) fn forget(&mut self, pos: RingId) -> bool {
        match self.kept.remove(&pos) {
            Some(k) => {
                self.schedule.remove(&(k.at, pos));
                true
            }
            None => false,
        }
    }

    /// The write `req` of `record`, to `w` replicas, was sent: renew it before it expires.
    fn keep(&mut self, now: Time, req: u64, record: &Record<P>, ttl: Duration, w: u8) {
        let pos = record.position();
        self.forget(pos);
        let at = renewal(now, ttl);
        self.kept.insert(
            pos,
            Kept {
                key: record.key(),
                value: record.value.clone(),
                version: record.version,
                ttl,
                w,
                req,
                at,
            },
        );
        self.schedule.insert((at, pos));
    }

    /// The writer's own write `req` failed: nothing to republish.
    pub(crate) fn write_failed(&mut self, req: u64) {
        let pos = self
            .kept
            .iter()
            .find(|(_, k)| k.req == req)
            .map(|(p, _)| *p);
        if let Some(pos) = pos {
            self.forget(pos);
        }
    }

    /// Renewal `req` of `pos` ended with `result`.
    pub(crate) fn renewed(
        &mut self,
        now: Time,
        pos: RingId,
        req: u64,
        result: Result<(), DictError>,
    ) {
        if self.kept.get(&pos).is_none_or(|k| k.req != req) {
            return;
        }
        match result {
            Ok(()) => {}
            // A newer version (another writer's) is in place: this one is over.
            Err(DictError::Stale { .. } | DictError::Forged | DictError::Conflict { .. }) => {
                self.forget(pos);
            }
            // Not now: try again soon.
            Err(_) => self.set_at(pos, now + RETRY),
        }
    }
}

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// After the writer's write `req` of `record` was sent: keeps republishing it if asked
    /// (`republish`), else stops republishing the key.
    pub(crate) fn after_write(
        &mut self,
        now: Time,
        req: u64,
        record: &Record<P>,
        (ttl, w, republish): (Duration, u8, bool),
    ) {
        if republish {
            self.republishing.keep(now, req, record, ttl, w);
        } else {
            self.republishing.forget(record.position());
        }
    }

    /// Whether a write of `key` asking to be republished is refused for want of room.
    pub(crate) fn republish_full(&self, key: RingId) -> bool {
        !self.republishing.contains(key) && self.republishing.len() >= self.cfg.max_republished
    }

    /// Stops republishing `key` (the record stays until it expires); whether it was.
    pub fn stop_republishing(&mut self, key: &DictKey<P>) -> bool {
        self.republishing.forget(key.position())
    }

    /// How many keys this node republishes.
    pub fn republished(&self) -> usize {
        self.republishing.len()
    }

    /// Sends the renewals that are due: the same value and version, signed again with a new
    /// expiry.
    pub(crate) fn renew_due(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        let me = ctx.me().id;
        while let Some(&(t, pos)) = self.republishing.schedule.first() {
            if t > now {
                break;
            }
            let Some(k) = self.republishing.kept.get(&pos) else {
                self.republishing.schedule.pop_first();
                continue;
            };
            if !ctx.is_joined() || self.pending.len() >= self.cfg.max_pending {
                // Not now: the renewal waits.
                self.republishing.set_at(pos, now + RETRY);
                continue;
            }
            let (key, value, version, ttl, w) =
                (k.key.clone(), k.value.clone(), k.version, k.ttl, k.w);
            let record = Record::new(&key, me, version, now + ttl, value, |domain, content| {
                ctx.sign(domain, content)
            });
            let req = self.send_put(ctx, pos, w, None, record, Asked::Renewal(pos));
            self.stats.renewals += 1;
            if let Some(k) = self.republishing.kept.get_mut(&pos) {
                k.req = req;
            }
            self.republishing.set_at(pos, renewal(now, ttl));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::tests::record;

    #[test]
    fn renewals_are_scheduled_and_end_when_a_newer_version_is_found() {
        let mut r = Republishing::default();
        let rec = record(1, "a", 5, b"x", 600);
        let pos = rec.position();
        r.keep(Time::from_secs(0), 1, &rec, Duration::from_secs(600), 2);
        assert_eq!(r.next(), Some(Time::from_secs(450)));
        // A renewal that failed for want of replicas is tried again soon.
        r.kept.get_mut(&pos).unwrap().req = 2;
        r.renewed(Time::from_secs(450), pos, 2, Err(DictError::Timeout));
        assert_eq!(r.next(), Some(Time::from_secs(460)));
        // An answer to an older request changes nothing.
        r.renewed(
            Time::from_secs(460),
            pos,
            1,
            Err(DictError::Stale { current: 9 }),
        );
        assert!(r.contains(pos));
        r.renewed(
            Time::from_secs(460),
            pos,
            2,
            Err(DictError::Stale { current: 9 }),
        );
        assert!(!r.contains(pos));
        assert_eq!(r.next(), None);
        // The writer's own write failed: nothing is kept.
        r.keep(Time::from_secs(0), 7, &rec, Duration::from_secs(600), 2);
        r.write_failed(7);
        assert_eq!(r.len(), 0);
    }
}
