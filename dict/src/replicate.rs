//! The replicas' part, and keeping replica sets whole: a replica keeps what a primary (or any
//! holder) pushes if it is one of the key's replicas by its own view and the record checks
//! out. After the ring around a node changes, and every `repair_interval`, each node opens an
//! anti-entropy exchange (`sync.rs`) with the other replicas of the keys it is primary for,
//! and hands keys it is no longer (nearly) a replica of to those that are, then drops them. A
//! node that leaves hands every key over first.

use crate::record::Record;
use crate::service::Dict;
use crate::store::Store;
use crate::wire::{DictError, Wire};
use p2ps_overlay::service::{encode, Context};
use p2ps_overlay::{PeerId, RingId};

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// Sends `record` to each of `to` to keep (no answer wanted).
    pub(crate) fn push(&mut self, ctx: &mut Context<'_, P>, to: &[P], record: &Record<P>) {
        if to.is_empty() {
            return;
        }
        let msg = encode(
            &Wire::Replicate {
                op: 0,
                record: record.clone(),
            },
            &[],
        );
        for p in to {
            self.stats.pushed += 1;
            ctx.send(*p, msg.clone());
        }
    }

    /// `from` asks this node to keep `record` (for operation `op`, answered unless 0).
    pub(crate) fn on_replicate(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        op: u64,
        record: Record<P>,
    ) {
        let key = record.position();
        let me = ctx.me().id;
        let stamp = (record.version, record.writer);
        let refused = if !self.near_replica(ctx, key, me) {
            // Not (nearly) a replica of this key by this node's lists: a stranger cannot make
            // it hold keys of other parts of the ring.
            Some(DictError::NotReplica)
        } else if let Err(e) = self.check_record(ctx.now(), key, &record, from == record.writer) {
            Some(e)
        } else {
            match self.keep(key, record) {
                Ok(()) => {
                    self.notify(ctx, key);
                    if op == 0 {
                        self.lacked_as_primary(ctx, key);
                    }
                    None
                }
                // Holding the same version is holding it; a newer one means the write lost
                // (which only its coordinator cares to hear: a push is kept either way).
                Err(DictError::Stale { .. }) if op == 0 || self.holds(key, stamp) => None,
                Err(e) => Some(e),
            }
        };
        if refused.is_some() {
            self.stats.refused += 1;
        }
        if op != 0 {
            ctx.send(from, encode(&Wire::<P>::Stored { op, refused }, &[]));
        }
    }

    /// Whether this node holds the version `(version, writer)` of `key`.
    fn holds(&mut self, key: RingId, (version, writer): (u64, P)) -> bool {
        self.held(key)
            .ok()
            .flatten()
            .is_some_and(|h| h.version == version && h.writer == writer)
    }

    /// A record this node lacked came from another holder: if this node is the key's
    /// primary, its other replicas may lack it too (the primary is new, or its data was lost):
    /// it checks them soon rather than at the next interval.
    fn lacked_as_primary(&mut self, ctx: &mut Context<'_, P>, key: RingId) {
        let me = ctx.me().id;
        let primary = ctx
            .replica_set(key, 1)
            .is_some_and(|set| set.first().is_some_and(|p| p.id == me));
        if primary {
            self.repair_soon(ctx);
        }
    }

    /// Brings the replica sets around this node up to date after `repair_delay` at the latest.
    pub(crate) fn repair_soon(&mut self, ctx: &Context<'_, P>) {
        let soon = ctx.now() + self.cfg.repair_delay;
        if self.repair_at.is_none_or(|t| t > soon) {
            self.repair_at = Some(soon);
        }
    }

    /// The primary `from` asks what this node holds for `key`.
    pub(crate) fn on_fetch(&mut self, ctx: &mut Context<'_, P>, from: P, op: u64, key: RingId) {
        // A store that fails does not answer: "nothing here" would be a lie that read repair
        // acts on. The primary counts it as a replica that did not answer.
        if let Ok(record) = self.held(key) {
            ctx.send(from, encode(&Wire::Fetched { op, record }, &[]));
        }
    }

    /// Forgets expired keys, hands over the keys this node is no longer (nearly) a replica
    /// of, and checks the replicas of the keys it is primary for (`sync.rs`).
    pub(crate) fn repair(&mut self, ctx: &mut Context<'_, P>) {
        self.expire_records(ctx);
        let me = ctx.me().id;
        for key in self.store.keys() {
            let Some(set) = ctx.replica_set(key, self.cfg.replicas) else {
                // This node's lists do not reach the key: it is not a replica any more (the
                // ring grew around it). Give it to the node responsible, through the ring.
                self.forward_home(ctx, key);
                continue;
            };
            if self.near_replica(ctx, key, me) {
                continue;
            }
            let Ok(Some(record)) = self.held(key) else {
                continue;
            };
            let all: Vec<P> = set.iter().map(|p| p.id).collect();
            self.push(ctx, &all, &record);
            self.store_remove(key);
        }
        self.open_sync(ctx);
    }

    /// Forgets the records that expired, telling their watchers.
    pub(crate) fn expire_records(&mut self, ctx: &mut Context<'_, P>) {
        match self.store.expire(ctx.now()) {
            Ok(keys) => {
                for key in keys {
                    self.notify(ctx, key);
                }
            }
            Err(e) => {
                self.storage_failed(e);
            }
        }
    }

    /// Whether `me` is among the first `2 * replicas` nodes at or after `key` by this node's
    /// lists: a replica, or about to be one. The margin lets a replica take (and keep) a record
    /// while its lists still name nodes that have just crashed, which the primary already left
    /// out of the set; without it a new replica refuses its copy until the lists agree.
    pub(crate) fn near_replica(&self, ctx: &Context<'_, P>, key: RingId, me: P) -> bool {
        ctx.replica_set(key, 2 * self.cfg.replicas)
            .is_some_and(|set| set.iter().any(|p| p.id == me))
    }

    /// Sends the record of `key` to the replicas this node knows for it, then drops it.
    fn forward_home(&mut self, ctx: &mut Context<'_, P>, key: RingId) {
        let Ok(Some(record)) = self.held(key) else {
            return;
        };
        if let Some(p2ps_overlay::NextHop::Forward(p)) = ctx.next_hop(key) {
            // The next hop towards the key knows that part of the ring better; it keeps the
            // record only if it is a replica, else passes it on at its own next repair.
            self.push(ctx, &[p.id], &record);
            self.store_remove(key);
        }
    }

    /// The node leaves: every key goes to the replicas that remain.
    pub(crate) fn hand_over(&mut self, ctx: &mut Context<'_, P>) {
        let me = ctx.me().id;
        for key in self.store.keys() {
            let Ok(Some(record)) = self.held(key) else {
                continue;
            };
            // The replica set without this node: its successor takes its place.
            let set: Vec<P> = ctx
                .replica_set(key, self.cfg.replicas + 1)
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.id)
                .filter(|p| *p != me)
                .collect();
            self.push(ctx, &set, &record);
        }
    }
}
