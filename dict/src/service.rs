//! The dictionary service: its settings, its state, what it tells the application, and the
//! requests an application makes (put, delete, compare-and-swap, get).
//!
//! A request travels as an unsigned query (`Context::query`) towards the node responsible for
//! the key (the *primary*); the first node on its way that knows the key's replica set (the
//! origin itself, often) coordinates it (see `coordinate.rs`) and answers back along the links
//! the query came over (`Context::reply`): an operation costs no signature but the record's,
//! and no handshake between nodes that never met.

use crate::record::{DictKey, Record, MAX_NAME};
use crate::store::{PutError, Quotas, StorageError, Store};
use crate::wire::{DictError, Outcome, Wire, KINDS};
use bytes::Bytes;
use p2ps_overlay::service::{
    decode, encode, Answered, Context, Emits, Forwarding, Incoming, NeighbourChange, Queried,
    Service, ServiceId,
};
use p2ps_overlay::{Body, Class, PeerId, Routed, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The service's name.
pub const NAME: &str = "p2ps/dict";

/// The service's id.
pub const DICT: ServiceId = ServiceId::named(NAME);

/// Settings of the dictionary.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DictConfig {
    /// Copies of every key (the primary and the nodes after it). Default: 3.
    pub replicas: usize,
    /// Replicas that must hold a write before it is answered. Default: 2 (a majority of 3).
    pub write_quorum: u8,
    /// Replicas a read asks. Default: 2 (a majority of 3).
    pub read_quorum: u8,
    /// Largest value, in bytes. Default: 64 KiB.
    pub max_value: usize,
    /// Time to live of a value unless the writer says otherwise. Default: 10 min.
    pub default_ttl: Duration,
    /// Longest time to live. Default: 24 h.
    pub max_ttl: Duration,
    /// How long the origin waits for the primary's answer. Default: 5 s.
    pub request_timeout: Duration,
    /// How long the primary waits for its replicas. Default: 2 s.
    pub replica_timeout: Duration,
    /// How often a primary pushes its keys to their replicas again (anti-entropy).
    /// Default: 30 s.
    pub repair_interval: Duration,
    /// After the ring around a node changed, how long it waits (for the changes to settle)
    /// before it brings the replicas of its keys up to date. Default: 200 ms.
    pub repair_delay: Duration,
    /// Requests this node has in flight as origin, and operations as primary. Default: 4096.
    pub max_pending: usize,
    /// Keys this node republishes as their writer ([`PutOptions::republish`]). Default: 4096.
    pub max_republished: usize,
    /// What a node keeps.
    pub quotas: Quotas,
}

impl Default for DictConfig {
    fn default() -> Self {
        DictConfig {
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            max_value: 64 << 10,
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(5),
            replica_timeout: Duration::from_secs(2),
            repair_interval: Duration::from_secs(30),
            repair_delay: Duration::from_millis(200),
            max_pending: 4096,
            max_republished: 4096,
            quotas: Quotas::default(),
        }
    }
}

/// Options of one write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Time to live (default: the configured one).
    pub ttl: Option<Duration>,
    /// Replicas that must hold it before the answer (default: the write quorum).
    pub w: Option<u8>,
    /// Compare-and-swap: write only if the key's version is this now (0: nothing there).
    pub expect: Option<u64>,
    /// Write the value again before it expires, for as long as this node runs (see
    /// `republish.rs`); a write of the key without it stops that.
    pub republish: bool,
}

/// What the dictionary tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DictEvent<P: PeerId> {
    /// A put or delete ended: the version stored, or why not.
    Put {
        /// The request id [`Dict::put`] returned.
        req: u64,
        /// The version stored and the replicas holding it, or the error.
        result: Result<(u64, u8), DictError>,
    },
    /// The replicas of a key, as its primary found them.
    Replicas {
        /// The request id [`Dict::replicas`] returned.
        req: u64,
        /// How many hold the newest version, or why there is no answer.
        result: Result<crate::wire::ReplicaHealth, DictError>,
    },
    /// A watched key changed (or expired: `None`), as the node holding it reported.
    Changed {
        /// The watch id [`Dict::watch`] returned.
        req: u64,
        /// The record now held (checked: signed by its writer, of the key watched).
        record: Option<Record<P>>,
    },
    /// A get ended: the newest record (a deletion is a record without a value), or why not.
    Got {
        /// The request id [`Dict::get`] returned.
        req: u64,
        /// The record (checked: signed by its writer, of the key asked), if any.
        result: Result<Option<Record<P>>, DictError>,
    },
}

/// Counters of the dictionary on one node.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct DictStats {
    /// Records refused: forged, too large, stale, over quota, not ours to hold.
    pub refused: u64,
    /// Records written back to replicas that lacked them during reads.
    pub read_repairs: u64,
    /// Records pushed to replicas by repair and hand-over.
    pub pushed: u64,
    /// Malformed messages dropped.
    pub dropped: u64,
    /// Reads and writes of the store that failed (its disk).
    pub storage_failures: u64,
    /// Keys this node is primary for that fewer replicas than the ring has room for (at most
    /// r, this node included) held current at its last check of them (made every
    /// `repair_interval` and after the ring around it changed, and repaired then).
    pub under_replicated: u64,
    /// Renewals of republished keys sent.
    pub renewals: u64,
}

/// A request this node made, waiting for the primary's answer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) deadline: Time,
    pub(crate) kind: Asked,
}

/// What a request asked.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Asked {
    /// A write.
    Put,
    /// A read of the key at this position.
    Get(p2ps_overlay::RingId),
    /// The health of the replicas of a key.
    Replicas,
    /// A renewal of the republished key at this position (answered to no one).
    Renewal(p2ps_overlay::RingId),
}

/// The replicated dictionary, on one node, keeping its records in `S`.
pub struct Dict<P: PeerId, S: Store<P>> {
    pub(crate) cfg: DictConfig,
    pub(crate) store: S,
    /// Requests of this node's application, by request id.
    pub(crate) pending: BTreeMap<u64, Pending>,
    /// Operations this node coordinates as primary, by operation id.
    pub(crate) ops: BTreeMap<u64, crate::coordinate::Op<P>>,
    /// Deadlines of requests and operations.
    pub(crate) deadlines: BTreeSet<(Time, u64)>,
    /// When the replicas of this node's keys are brought up to date next.
    pub(crate) repair_at: Option<Time>,
    /// The last version this node wrote (versions of one writer increase).
    pub(crate) last_version: u64,
    pub(crate) events: VecDeque<DictEvent<P>>,
    pub(crate) stats: DictStats,
    /// Keys this node watches, and watches it holds for others.
    pub(crate) watches: crate::watch::Watches<P>,
    /// The last failure of the store not taken yet by [`Dict::take_storage_error`].
    pub(crate) storage_error: Option<StorageError>,
    /// The checks of its replicas this node makes as primary (anti-entropy).
    pub(crate) checks: crate::sync::Checks<P>,
    /// The keys this node republishes as their writer.
    pub(crate) republishing: crate::republish::Republishing<P>,
}

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// The dictionary with settings `cfg`, keeping its records in `store`.
    pub fn new(cfg: DictConfig, store: S) -> Self {
        Dict {
            cfg,
            store,
            pending: BTreeMap::new(),
            ops: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            repair_at: None,
            last_version: 0,
            events: VecDeque::new(),
            stats: DictStats::default(),
            watches: crate::watch::Watches::default(),
            storage_error: None,
            checks: crate::sync::Checks::default(),
            republishing: crate::republish::Republishing::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DictConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to change it from outside the protocol (tools, and tests that take records
    /// away to see them repaired). Anti-entropy brings replicas back in line with it.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Counters.
    pub fn stats(&self) -> DictStats {
        DictStats {
            under_replicated: self.checks.under_replicated,
            ..self.stats
        }
    }

    /// The last failure of the store (its disk), if one happened since the last call: the
    /// request it failed was refused with [`DictError::Storage`], and the node went on. For
    /// the runtime to log it with its causes.
    pub fn take_storage_error(&mut self) -> Option<StorageError> {
        self.storage_error.take()
    }

    /// Counts and keeps a failure of the store; the error to answer with.
    pub(crate) fn storage_failed(&mut self, e: StorageError) -> DictError {
        self.stats.storage_failures += 1;
        self.storage_error = Some(e);
        DictError::Storage
    }

    /// The record held for `key`, if any; a failure of the store is kept (see
    /// [`Dict::take_storage_error`]) and answered as [`DictError::Storage`].
    pub(crate) fn held(
        &mut self,
        key: p2ps_overlay::RingId,
    ) -> Result<Option<Record<P>>, DictError> {
        self.store.get(key).map_err(|e| self.storage_failed(e))
    }

    /// Keeps `record` for `key` in the store; a quota is answered by its name, a failure of
    /// the store as in [`Dict::held`].
    pub(crate) fn store_put(
        &mut self,
        key: p2ps_overlay::RingId,
        record: Record<P>,
    ) -> Result<(), DictError> {
        match self.store.put(key, record) {
            Ok(()) => Ok(()),
            Err(PutError::Quota(q)) => Err(DictError::Quota(q)),
            Err(PutError::Storage(e)) => Err(self.storage_failed(e)),
        }
    }

    /// Forgets `key`; a failure of the store is kept as in [`Dict::held`] (the record stays).
    pub(crate) fn store_remove(&mut self, key: p2ps_overlay::RingId) {
        if let Err(e) = self.store.remove(key) {
            self.storage_failed(e);
        }
    }

    /// Writes `value` under `key` as this node (for an owned key, this node must be its
    /// owner). Returns the request id of the [`DictEvent::Put`] that follows.
    pub fn put(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: &DictKey<P>,
        value: Bytes,
        opts: PutOptions,
    ) -> Result<u64, DictError> {
        if value.len() > self.cfg.max_value {
            return Err(DictError::TooLarge {
                len: value.len(),
                max: self.cfg.max_value,
            });
        }
        self.write(ctx, key, Some(value), opts)
    }

    /// Deletes `key` (writes a deletion that wins over the values before it).
    pub fn delete(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: &DictKey<P>,
        opts: PutOptions,
    ) -> Result<u64, DictError> {
        self.write(ctx, key, None, opts)
    }

    fn write(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: &DictKey<P>,
        value: Option<Bytes>,
        opts: PutOptions,
    ) -> Result<u64, DictError> {
        self.may_request(ctx, key)?;
        let me = ctx.me().id;
        if key.owner.is_some_and(|o| o != me) {
            // Signed by this node, it would land on this node's own key of that name.
            return Err(DictError::Forged);
        }
        let ttl = opts.ttl.unwrap_or(self.cfg.default_ttl);
        if ttl.is_zero() || ttl > self.cfg.max_ttl {
            return Err(DictError::BadExpiry);
        }
        if opts.republish && self.republish_full(key.position()) {
            return Err(DictError::TooManyRepublished {
                max: self.cfg.max_republished,
            });
        }
        // Versions of one writer increase; without compare-and-swap, they follow the clock, so
        // that the last writer wins among open writers.
        let version = match opts.expect {
            Some(v) => v.saturating_add(1),
            None => (ctx.now().as_micros()).max(self.last_version.saturating_add(1)),
        };
        self.last_version = self.last_version.max(version);
        let expires = ctx.now() + ttl;
        let record = Record::new(key, me, version, expires, value, |domain, content| {
            ctx.sign(domain, content)
        });
        let w = opts.w.unwrap_or(self.cfg.write_quorum).max(1);
        let pos = key.position();
        let req = self.send_put(ctx, pos, w, opts.expect, record.clone(), Asked::Put);
        self.after_write(ctx.now(), req, &record, (ttl, w, opts.republish));
        Ok(req)
    }

    /// Sends `record` to the primary of `pos`, to be held by `w` replicas (if the key is at
    /// version `expect`, when given); the request id.
    pub(crate) fn send_put(
        &mut self,
        ctx: &mut Context<'_, P>,
        pos: p2ps_overlay::RingId,
        w: u8,
        expect: Option<u64>,
        record: Record<P>,
        kind: Asked,
    ) -> u64 {
        let req = ctx.next_seq();
        let msg = Wire::Put {
            req,
            w,
            expect,
            record,
        };
        self.send_request(ctx, pos, req, msg, kind);
        req
    }

    /// Asks the key's primary how many of its replicas hold its newest version (every replica
    /// is asked; those that lack it get it). Returns the request id of the
    /// [`DictEvent::Replicas`] that follows.
    pub fn replicas(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: &DictKey<P>,
    ) -> Result<u64, DictError> {
        self.may_request(ctx, key)?;
        let req = ctx.next_seq();
        self.send_request(
            ctx,
            key.position(),
            req,
            Wire::Replicas { req },
            Asked::Replicas,
        );
        Ok(req)
    }

    /// Reads `key` from `r` replicas (default: the read quorum); the newest record wins.
    /// Returns the request id of the [`DictEvent::Got`] that follows.
    pub fn get(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: &DictKey<P>,
        r: Option<u8>,
    ) -> Result<u64, DictError> {
        self.may_request(ctx, key)?;
        let req = ctx.next_seq();
        let r = r.unwrap_or(self.cfg.read_quorum).max(1);
        self.send_request(
            ctx,
            key.position(),
            req,
            Wire::Get { req, r },
            Asked::Get(key.position()),
        );
        Ok(req)
    }

    fn may_request(&self, ctx: &Context<'_, P>, key: &DictKey<P>) -> Result<(), DictError> {
        if !ctx.is_joined() {
            return Err(DictError::NotJoined);
        }
        if key.name.len() > MAX_NAME {
            return Err(DictError::NameTooLong {
                len: key.name.len(),
                max: MAX_NAME,
            });
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Err(DictError::Busy);
        }
        Ok(())
    }

    fn send_request(
        &mut self,
        ctx: &mut Context<'_, P>,
        pos: p2ps_overlay::RingId,
        req: u64,
        msg: Wire<P>,
        kind: Asked,
    ) {
        let deadline = ctx.now() + self.cfg.request_timeout;
        self.pending.insert(req, Pending { deadline, kind });
        self.deadlines.insert((deadline, req));
        // Unsigned: the write's record is its writer's signed word, a read's answer too.
        ctx.query(pos, encode(&msg, &[]));
    }

    /// A request that reached this node as a query (`passing`: on its way to the node
    /// responsible): coordinated here if this node is responsible, or if it is passing and
    /// this node knows the key's replica set and may coordinate it (reads and plain writes);
    /// whether it was taken.
    fn on_query(&mut self, ctx: &mut Context<'_, P>, q: &Queried<P>, passing: bool) -> bool {
        let Ok((msg, _)) = decode::<Wire<P>>(&q.data) else {
            self.stats.dropped += 1;
            return !passing;
        };
        // On the way, only a node that knows the whole replica set (the lists can reach just
        // the first few nodes after a key near their end).
        let r = self.cfg.replicas;
        let here = !passing || ctx.replica_set(q.key, r).is_some_and(|set| set.len() >= r);
        let back = q.back.clone();
        match msg {
            Wire::Put {
                req,
                w,
                expect,
                record,
            } if here && (expect.is_none() || !passing) => {
                self.coordinate_put(ctx, back, req, q.key, (w, expect), record)
            }
            Wire::Get { req, r } if here => self.coordinate_get(ctx, back, req, q.key, r, false),
            Wire::Replicas { req } if !passing => {
                let r = u8::try_from(self.cfg.replicas).unwrap_or(u8::MAX);
                self.coordinate_get(ctx, back, req, q.key, r, true)
            }
            Wire::Put { .. } | Wire::Get { .. } | Wire::Replicas { .. } if passing => return false,
            _ => self.stats.dropped += 1,
        }
        true
    }

    /// The primary answered request `req` (sent by `from`).
    fn on_reply(&mut self, now: Time, req: u64, outcome: Outcome<P>) {
        let Some(p) = self.pending.remove(&req) else {
            // Not asked, or answered already (or after its deadline).
            self.stats.dropped += 1;
            return;
        };
        self.deadlines.remove(&(p.deadline, req));
        let event = match (p.kind, outcome) {
            (Asked::Renewal(pos), Outcome::Stored { .. }) => {
                return self.republishing.renewed(now, pos, req, Ok(()));
            }
            (Asked::Renewal(pos), Outcome::Refused(e)) => {
                return self.republishing.renewed(now, pos, req, Err(e));
            }
            (Asked::Put, Outcome::Stored { version, acks }) => DictEvent::Put {
                req,
                result: Ok((version, acks)),
            },
            (Asked::Replicas, Outcome::Replicas(h)) => DictEvent::Replicas { req, result: Ok(h) },
            (Asked::Replicas, Outcome::Refused(e)) => DictEvent::Replicas {
                req,
                result: Err(e),
            },
            (Asked::Get(key), Outcome::Found(record)) => {
                // The primary could lie about the value: it must be the writer's, of this key.
                let result = match record {
                    Some(r) if !r.verify() || r.position() != key => Err(DictError::Forged),
                    other => Ok(other),
                };
                DictEvent::Got { req, result }
            }
            (Asked::Put, Outcome::Refused(e)) => {
                self.republishing.write_failed(req);
                DictEvent::Put {
                    req,
                    result: Err(e),
                }
            }
            (Asked::Get(_), Outcome::Refused(e)) => DictEvent::Got {
                req,
                result: Err(e),
            },
            // An answer of another kind: a confused or lying primary.
            _ => {
                self.stats.dropped += 1;
                return;
            }
        };
        self.events.push_back(event);
    }

    /// Deadlines passed: requests without an answer fail, operations answer with what came.
    fn on_deadlines(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                let result = Err(DictError::Timeout);
                let event = match p.kind {
                    Asked::Renewal(pos) => {
                        self.republishing
                            .renewed(now, pos, id, Err(DictError::Timeout));
                        continue;
                    }
                    Asked::Put => {
                        self.republishing.write_failed(id);
                        DictEvent::Put { req: id, result }
                    }
                    Asked::Get(_) => DictEvent::Got {
                        req: id,
                        result: Err(DictError::Timeout),
                    },
                    Asked::Replicas => DictEvent::Replicas {
                        req: id,
                        result: Err(DictError::Timeout),
                    },
                };
                self.events.push_back(event);
            } else if self.ops.contains_key(&id) {
                self.op_timed_out(ctx, id);
            }
        }
    }
}

impl<P: PeerId, S: Store<P>> Emits for Dict<P, S> {
    type Event = DictEvent<P>;

    fn poll_event(&mut self) -> Option<DictEvent<P>> {
        self.events.pop_front()
    }
}

impl<P: PeerId, S: Store<P>> Service<P> for Dict<P, S> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn class(&self) -> Class {
        Class::User
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let usage = self.store.usage();
        vec![
            ("keys", usage.keys as u64),
            ("bytes", usage.bytes as u64),
            ("refused", self.stats.refused),
            ("read_repairs", self.stats.read_repairs),
            ("pushed", self.stats.pushed),
            ("dropped", self.stats.dropped),
            ("storage_failures", self.stats.storage_failures),
            ("under_replicated", self.checks.under_replicated),
            ("renewals", self.stats.renewals),
            ("republished", self.republishing.len() as u64),
            // Keys this node's application watches, and watches it holds for others.
            ("watching", self.watches.mine.len() as u64),
            ("watches_held", self.watches.held.len() as u64),
        ]
    }

    fn deliver(&mut self, ctx: &mut Context<'_, P>, msg: Routed<P>) {
        let Body::Service { data, target, .. } = &msg.sealed.env.body else {
            return;
        };
        let origin = msg.sealed.origin();
        let key = msg.sealed.env.key;
        if target.is_some() {
            // Addressed to this node (the core delivers it nowhere else): a watch's news
            // routed here because its holder had no link to this node
            // (`Context::send_or_route`).
            return match decode::<Wire<P>>(data) {
                Ok((Wire::Notify { req, record }, _)) => self.on_notify(req, record),
                _ => self.stats.dropped += 1,
            };
        }
        match decode::<Wire<P>>(data) {
            Ok((Wire::Watch { req, lease_ms }, _)) => {
                self.hold_watch(ctx, origin, req, key, lease_ms)
            }
            Ok((Wire::Unwatch { req }, _)) => self.drop_watch(origin, req),
            _ => self.stats.dropped += 1,
        }
    }

    fn query(&mut self, ctx: &mut Context<'_, P>, q: Queried<P>) {
        self.on_query(ctx, &q, false);
    }

    fn query_passing(&mut self, ctx: &mut Context<'_, P>, q: &Queried<P>, _next: P) -> Forwarding {
        if self.on_query(ctx, q, true) {
            Forwarding::Consumed
        } else {
            Forwarding::Continue
        }
    }

    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        let from = msg.from;
        match decode::<Wire<P>>(&msg.data) {
            Ok((Wire::Replicate { op, record }, _)) => self.on_replicate(ctx, from, op, record),
            Ok((Wire::Stored { op, refused }, _)) => self.on_stored(ctx, from, op, refused),
            Ok((Wire::Fetch { op, key }, _)) => self.on_fetch(ctx, from, op, key),
            Ok((Wire::Fetched { op, record }, _)) => self.on_fetched(ctx, from, op, record),
            Ok((Wire::Notify { req, record }, _)) => self.on_notify(req, record),
            Ok((
                Wire::Sync {
                    round,
                    parts,
                    opening,
                },
                _,
            )) => self.on_sync(ctx, from, round, parts, opening),
            Ok((Wire::Want { round, keys }, _)) => self.on_want(ctx, from, round, keys),
            _ => self.stats.dropped += 1,
        }
    }

    fn answered(&mut self, ctx: &mut Context<'_, P>, msg: Answered<P>) {
        // Answers come only this way (`Context::reply` at the primary); whoever passed it on,
        // it counts only for a request in flight, by its unguessable id.
        match decode::<Wire<P>>(&msg.data) {
            Ok((Wire::Reply { req, outcome }, _)) => self.on_reply(ctx.now(), req, outcome),
            _ => self.stats.dropped += 1,
        }
    }

    fn neighbours(&mut self, ctx: &mut Context<'_, P>, _change: &NeighbourChange<P>) {
        // The replica sets around this node moved: bring them up to date soon.
        self.repair_soon(ctx);
    }

    fn poll_timeout(&self) -> Option<Time> {
        let d = self.deadlines.first().map(|(t, _)| *t);
        d.into_iter()
            .chain(self.repair_at)
            .chain(self.watches.next_renewal())
            .chain(self.watches.next_expiry())
            .chain(self.checks.due())
            .chain(self.republishing.next())
            .min()
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        self.on_deadlines(ctx);
        self.renew_watches(ctx);
        let now = ctx.now();
        self.checks.count_if_due(now);
        if self.watches.take_due_expiries(now) {
            self.expire_records(ctx);
        }
        self.renew_due(ctx);
        if self.repair_at.is_some_and(|t| t <= now) {
            self.repair(ctx);
            self.repair_at = Some(now + self.cfg.repair_interval);
        }
        if self.repair_at.is_none() {
            self.repair_at = Some(now + self.cfg.repair_interval);
        }
    }

    fn leave(&mut self, ctx: &mut Context<'_, P>) {
        // Hand every key over to the nodes that hold it next.
        self.hand_over(ctx);
    }
}
