//! Watching a key: every change (and expiry) of a key streamed to the watcher.
//!
//! The watcher routes a `Watch` to the key; the node responsible for it keeps the watch for a
//! lease and sends the watcher the record it holds at once, then again whenever the record it
//! holds changes (a write, a repair, a read repair) or expires. The watcher renews the watch
//! every third of the lease; a renewal reaches whichever node is responsible by then, so a
//! watch follows the key when its primary changes, and the record sent on renewal covers
//! changes that happened meanwhile (intermediate versions may be skipped, the latest is not).
//! The watcher checks every record (signed by its writer, of the watched key) and reports a
//! version once, newest first. Watches are bounded per watcher and per node.

use crate::record::{DictKey, Record};
use crate::service::{Dict, DictEvent};
use crate::store::Store;
use crate::wire::{DictError, Wire};
use p2ps_overlay::service::{encode, Context};
use p2ps_overlay::{PeerId, RingId, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a watch holds at the holder without renewal.
pub(crate) const LEASE: Duration = Duration::from_secs(30);
/// Watches one watcher may hold at one node.
const PER_WATCHER: usize = 256;
/// Watches a node holds for others in all.
const PER_NODE: usize = 16_384;

/// A key this node watches.
#[derive(Debug)]
pub(crate) struct Watching<P: PeerId> {
    key: DictKey<P>,
    /// The newest version reported and whether the key held a value then (`None`: nothing
    /// reported yet).
    last: Option<(u64, bool)>,
    renew: Time,
}

/// A watch this node holds for a watcher.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    key: RingId,
    until: Time,
}

/// The watches of a node, both ways.
#[derive(Debug)]
pub(crate) struct Watches<P: PeerId> {
    /// Keys this node's application watches, by watch id.
    pub(crate) mine: BTreeMap<u64, Watching<P>>,
    /// Watches held for others: (watcher, watch id) -> key and lease end.
    pub(crate) held: BTreeMap<(P, u64), Held>,
    /// When records of keys watched here expire, so that their watchers hear of it then and
    /// not at the next repair (entries of records replaced since only cost an early look).
    pub(crate) expiries: BTreeSet<(Time, RingId)>,
}

impl<P: PeerId> Default for Watches<P> {
    fn default() -> Self {
        Watches {
            mine: BTreeMap::new(),
            held: BTreeMap::new(),
            expiries: BTreeSet::new(),
        }
    }
}

impl<P: PeerId> Watches<P> {
    /// The earliest renewal of a watch of this node's.
    pub(crate) fn next_renewal(&self) -> Option<Time> {
        self.mine.values().map(|w| w.renew).min()
    }

    /// When the first record of a key watched here expires.
    pub(crate) fn next_expiry(&self) -> Option<Time> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Forgets the expiries due at `now`; whether there were any.
    pub(crate) fn take_due_expiries(&mut self, now: Time) -> bool {
        let mut any = false;
        while self.expiries.first().is_some_and(|(t, _)| *t <= now) {
            self.expiries.pop_first();
            any = true;
        }
        any
    }
}

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// Watches `key`: [`DictEvent::Changed`] follows with the record held now, then with every
    /// change, until [`Dict::unwatch`]. Returns the watch id.
    pub fn watch(&mut self, ctx: &mut Context<'_, P>, key: &DictKey<P>) -> Result<u64, DictError> {
        if !ctx.is_joined() {
            return Err(DictError::NotJoined);
        }
        if self.watches.mine.len() >= PER_WATCHER {
            return Err(DictError::Busy);
        }
        let req = ctx.next_seq();
        self.watches.mine.insert(
            req,
            Watching {
                key: key.clone(),
                last: None,
                renew: ctx.now(),
            },
        );
        self.renew(ctx, req);
        Ok(req)
    }

    /// Stops watch `req`.
    pub fn unwatch(&mut self, ctx: &mut Context<'_, P>, req: u64) {
        if let Some(w) = self.watches.mine.remove(&req) {
            let sealed = ctx.seal(
                w.key.position(),
                None,
                encode(&Wire::<P>::Unwatch { req }, &[]),
            );
            ctx.route(sealed);
        }
    }

    /// Sends (again) the watch `req` to the key's primary.
    fn renew(&mut self, ctx: &mut Context<'_, P>, req: u64) {
        let Some(w) = self.watches.mine.get_mut(&req) else {
            return;
        };
        w.renew = ctx.now() + LEASE / 3;
        let lease_ms = LEASE.as_millis() as u32;
        let msg = encode(&Wire::<P>::Watch { req, lease_ms }, &[]);
        let sealed = ctx.seal(w.key.position(), None, msg);
        ctx.route(sealed);
    }

    /// Renews the watches that are due.
    pub(crate) fn renew_watches(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        let due: Vec<u64> = self
            .watches
            .mine
            .iter()
            .filter(|(_, w)| w.renew <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            self.renew(ctx, req);
        }
        self.watches.held.retain(|_, h| h.until > now);
    }

    /// A watch of `key` from `watcher` reached this node: held for the lease (bounded), and
    /// answered with the record held now.
    pub(crate) fn hold_watch(
        &mut self,
        ctx: &mut Context<'_, P>,
        watcher: P,
        req: u64,
        key: RingId,
        lease_ms: u32,
    ) {
        let lease = Duration::from_millis(u64::from(lease_ms)).min(LEASE);
        let fresh = !self.watches.held.contains_key(&(watcher, req));
        if fresh {
            let theirs = self
                .watches
                .held
                .keys()
                .filter(|(w, _)| *w == watcher)
                .count();
            if theirs >= PER_WATCHER || self.watches.held.len() >= PER_NODE {
                self.stats.refused += 1;
                return;
            }
        }
        self.watches.held.insert(
            (watcher, req),
            Held {
                key,
                until: ctx.now() + lease,
            },
        );
        // A store that cannot read does not answer; the watcher's renewal asks again.
        let Ok(record) = self.held(key) else {
            return;
        };
        if let Some(r) = &record {
            self.watches.expiries.insert((r.expires, key));
        }
        ctx.send_or_route(watcher, encode(&Wire::Notify { req, record }, &[]));
    }

    /// `watcher` no longer watches `req`.
    pub(crate) fn drop_watch(&mut self, watcher: P, req: u64) {
        self.watches.held.remove(&(watcher, req));
    }

    /// The record of `key` changed here (or expired): every watcher of it is told.
    pub(crate) fn notify(&mut self, ctx: &mut Context<'_, P>, key: RingId) {
        let now = ctx.now();
        let Ok(record) = self.held(key) else {
            return;
        };
        let watchers: Vec<(P, u64)> = self
            .watches
            .held
            .iter()
            .filter(|(_, h)| h.key == key && h.until > now)
            .map(|(w, _)| *w)
            .collect();
        if let (Some(r), false) = (&record, watchers.is_empty()) {
            self.watches.expiries.insert((r.expires, key));
        }
        for (watcher, req) in watchers {
            let msg = encode(
                &Wire::Notify {
                    req,
                    record: record.clone(),
                },
                &[],
            );
            ctx.send_or_route(watcher, msg);
        }
    }

    /// A holder says the key of watch `req` holds `record` now.
    pub(crate) fn on_notify(&mut self, req: u64, record: Option<Record<P>>) {
        let Some(w) = self.watches.mine.get_mut(&req) else {
            return;
        };
        let (version, has_value) = match &record {
            // A holder could lie: only the writer's signed record of this key counts.
            Some(r) if !r.verify() || r.position() != w.key.position() => {
                self.stats.refused += 1;
                return;
            }
            Some(r) => (r.version, r.value.is_some()),
            None => (0, false),
        };
        let report = match w.last {
            // The first word: the state the key is in.
            None => true,
            // A newer version, or the key emptied (expired).
            Some((last, held)) => version > last || (record.is_none() && held),
        };
        if !report {
            return;
        }
        let last = w.last.map_or(0, |(v, _)| v);
        w.last = Some((version.max(last), has_value));
        self.events.push_back(DictEvent::Changed { req, record });
    }
}
