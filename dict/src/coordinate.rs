//! Coordinating a request: a write is checked, copied to the key's replicas and answered
//! once `w` hold it; a read asks `r` replicas, answers with the newest record and writes it
//! back to those that lacked it (read repair).
//!
//! Who coordinates: reads and plain writes travel as queries, and the first node on their way
//! whose lists reach the key's replica set takes them (often the origin itself, or the node
//! just before the key): it asks the replicas in parallel, so the request never waits for a
//! hop to the primary and another from there. Compare-and-swap and the replicas' health go
//! on to the primary, which serialises swaps. A coordinator that is not a replica keeps
//! nothing; one that got the record from another node checks it before making the replicas
//! work for it (a forged write costs one check, not one per replica).
//!
//! What holds: a write answered as stored is held by `w` replicas of the coordinator's replica
//! set at that moment; a read of `r` replicas with `r + w > replicas` meets at least one of
//! them while the replica set does not change and the coordinators' lists agree on it. Under
//! churn the set moves and repair (anti-entropy in `sync.rs`, hand-over in `replicate.rs`)
//! copies records to the new members; a read that meets only new members before repair
//! reaches them can miss a write. Compare-and-swap is serialised by the primary: two primaries
//! at once (a partition, or lists that disagree while a node joins) can each accept one swap,
//! and the greater `(version, writer)` then wins everywhere — the other swap is lost, though
//! its writer was told it succeeded; a plain write coordinated elsewhere at the same time is
//! ordered with the swap by `(version, writer)` like any two writes. In a partition each side
//! serves the keys whose replicas it holds (a write needs `w` of them there); once the sides
//! merge, anti-entropy brings every replica to the greatest `(version, writer)` of each key.
//! No write answered as stored is lost while fewer than `w` of the replicas that held it
//! crash before repair copies it on.

use crate::record::{Record, MAX_NAME};
use crate::service::Dict;
use crate::store::Store;
use crate::wire::{DictError, Outcome, Wire};
use p2ps_overlay::service::{encode, Context, WayBack};
use p2ps_overlay::{PeerId, RingId, Time};

/// An operation the primary coordinates.
#[derive(Debug)]
pub(crate) struct Op<P: PeerId> {
    /// How the answer gets back to the request's origin.
    back: WayBack<P>,
    req: u64,
    deadline: Time,
    /// Replicas asked and not answered yet.
    waiting: Vec<P>,
    kind: OpKind<P>,
}

#[derive(Debug)]
enum OpKind<P: PeerId> {
    Put {
        version: u64,
        need: u8,
        acks: u8,
        /// Why the first replica that refused the record refused it.
        refused: Option<DictError>,
    },
    Get {
        key: RingId,
        /// Whether the origin asked for the replicas' health rather than the record.
        health: bool,
        need: u8,
        /// Answers so far: who, and what it holds (this node's own first, if it is a
        /// replica).
        answers: Vec<(P, Option<Record<P>>)>,
    },
}

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// Checks a record offered for `key` (routed there, or pushed by another replica). With
    /// `from_writer` (it came over the authenticated link from its writer, or this node wrote
    /// it) the signature is not checked: the link is the writer's word already, and a writer
    /// that sends a record it did not sign harms only its own write (readers check records,
    /// and a valid record could do anything a forged one of the same writer could). Size,
    /// key and expiry are checked all the same.
    pub(crate) fn check_record(
        &self,
        now: Time,
        key: RingId,
        record: &Record<P>,
        from_writer: bool,
    ) -> Result<(), DictError> {
        if record.name.len() > MAX_NAME {
            return Err(DictError::NameTooLong {
                len: record.name.len(),
                max: MAX_NAME,
            });
        }
        let len = record.value.as_ref().map_or(0, |v| v.len());
        if len > self.cfg.max_value {
            return Err(DictError::TooLarge {
                len,
                max: self.cfg.max_value,
            });
        }
        if record.position() != key || !(from_writer || record.verify()) {
            return Err(DictError::Forged);
        }
        if record.expires <= now || record.expires.since(now) > self.cfg.max_ttl {
            return Err(DictError::BadExpiry);
        }
        Ok(())
    }

    /// Keeps `record` for `key` if it is newer than what is held, or renews it.
    pub(crate) fn keep(&mut self, key: RingId, record: Record<P>) -> Result<(), DictError> {
        if let Some(held) = self.held(key)? {
            if !record.newer_than(&held) && !record.renews(&held) {
                return Err(DictError::Stale {
                    current: held.version,
                });
            }
        }
        self.store_put(key, record)
    }

    fn reply(
        &mut self,
        ctx: &mut Context<'_, P>,
        back: &WayBack<P>,
        req: u64,
        outcome: Outcome<P>,
    ) {
        // Back the way the request came, over links that exist: no handshake.
        ctx.reply(back, encode(&Wire::Reply { req, outcome }, &[]));
    }

    fn refuse(&mut self, ctx: &mut Context<'_, P>, back: &WayBack<P>, req: u64, e: DictError) {
        self.stats.refused += 1;
        self.reply(ctx, back, req, Outcome::Refused(e));
    }

    /// The replicas of `key` as this node sees them: whether it is one, and the others, in
    /// order (the primary first).
    pub(crate) fn replicas_of(&self, ctx: &Context<'_, P>, key: RingId) -> (bool, Vec<P>) {
        let me = ctx.me().id;
        let set = ctx.replica_set(key, self.cfg.replicas).unwrap_or_default();
        let mine = set.iter().any(|p| p.id == me);
        let others = set.into_iter().map(|p| p.id).filter(|p| *p != me).collect();
        (mine, others)
    }

    fn start_op(&mut self, ctx: &mut Context<'_, P>, op: Op<P>) -> Option<u64> {
        if self.ops.len() >= self.cfg.max_pending {
            return None;
        }
        let id = ctx.next_seq();
        self.deadlines.insert((op.deadline, id));
        self.ops.insert(id, op);
        Some(id)
    }

    /// A write to coordinate: this node is responsible for `key`, or knows its replica set.
    /// `expect` (compare-and-swap) only at the primary.
    pub(crate) fn coordinate_put(
        &mut self,
        ctx: &mut Context<'_, P>,
        back: WayBack<P>,
        req: u64,
        key: RingId,
        (w, expect): (u8, Option<u64>),
        record: Record<P>,
    ) {
        let (mine, others) = self.replicas_of(ctx, key);
        if !mine && others.is_empty() {
            let answered = 0;
            return self.refuse(ctx, &back, req, DictError::NotEnoughReplicas { answered });
        }
        // The writer's own word: written here, or the query came straight from the writer over
        // its link (a query's first hop is the only one the receiver has proof of).
        let from_writer = back.trail.is_empty() && back.to == record.writer;
        // Checked before anyone works for it (a replica keeps it here; a coordinator that is
        // not one would otherwise have the replicas check a forgery for it, on its links).
        if let Err(e) = self.check_record(ctx.now(), key, &record, from_writer) {
            return self.refuse(ctx, &back, req, e);
        }
        if mine {
            if let Some(v) = expect {
                let current = match self.held(key) {
                    Ok(held) => held.map_or(0, |r| r.version),
                    Err(e) => return self.refuse(ctx, &back, req, e),
                };
                if current != v {
                    return self.refuse(ctx, &back, req, DictError::Conflict { current });
                }
            }
            if let Err(e) = self.keep(key, record.clone()) {
                return self.refuse(ctx, &back, req, e);
            }
            self.notify(ctx, key);
        }
        let version = record.version;
        let acks = u8::from(mine);
        let need = w.min(acks + others.len() as u8).max(1);
        if need <= acks {
            // Copies go to the others all the same; the answer need not wait for them.
            self.push(ctx, &others, &record);
            return self.reply(ctx, &back, req, Outcome::Stored { version, acks });
        }
        let op = Op {
            back: back.clone(),
            req,
            deadline: ctx.now() + self.cfg.replica_timeout,
            waiting: others.clone(),
            kind: OpKind::Put {
                version,
                need,
                acks,
                refused: None,
            },
        };
        let Some(id) = self.start_op(ctx, op) else {
            return self.refuse(ctx, &back, req, DictError::Busy);
        };
        let msg = encode(&Wire::Replicate { op: id, record }, &[]);
        for p in others {
            ctx.send(p, msg.clone());
        }
    }

    /// A read to coordinate: this node is responsible for `key`, or knows its replica set.
    pub(crate) fn coordinate_get(
        &mut self,
        ctx: &mut Context<'_, P>,
        back: WayBack<P>,
        req: u64,
        key: RingId,
        r: u8,
        health: bool,
    ) {
        let (mine, mut others) = self.replicas_of(ctx, key);
        if !mine && others.is_empty() {
            let answered = 0;
            return self.refuse(ctx, &back, req, DictError::NotEnoughReplicas { answered });
        }
        let me = ctx.me().id;
        let mut answers = Vec::new();
        if mine {
            match self.held(key) {
                Ok(here) => answers.push((me, here)),
                Err(e) => return self.refuse(ctx, &back, req, e),
            }
        }
        let have = answers.len() as u8;
        let need = r.min(have + others.len() as u8).max(1);
        if need <= have && !health {
            let here = answers.pop().and_then(|(_, r)| r);
            return self.reply(ctx, &back, req, Outcome::Found(here));
        }
        others.truncate((need - have) as usize);
        let op = Op {
            back: back.clone(),
            req,
            deadline: ctx.now() + self.cfg.replica_timeout,
            waiting: others.clone(),
            kind: OpKind::Get {
                key,
                health,
                need,
                answers,
            },
        };
        let Some(id) = self.start_op(ctx, op) else {
            return self.refuse(ctx, &back, req, DictError::Busy);
        };
        let msg = encode(&Wire::<P>::Fetch { op: id, key }, &[]);
        for p in others {
            ctx.send(p, msg.clone());
        }
    }

    /// Replica `from` holds the record of operation `op`, or refused it.
    pub(crate) fn on_stored(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        op: u64,
        refusal: Option<DictError>,
    ) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        // Only the replicas asked count, each once.
        let Some(at) = o.waiting.iter().position(|p| *p == from) else {
            return;
        };
        o.waiting.swap_remove(at);
        let OpKind::Put {
            version,
            need,
            acks,
            refused,
        } = &mut o.kind
        else {
            return;
        };
        match refusal {
            None => *acks += 1,
            Some(e) => {
                refused.get_or_insert(e);
            }
        }
        let (version, need, acks, refused) = (*version, *need, *acks, *refused);
        if acks >= need || o.waiting.is_empty() {
            if let Some(o) = self.ops.remove(&op) {
                self.deadlines.remove(&(o.deadline, op));
                let outcome = if acks >= need {
                    Outcome::Stored { version, acks }
                } else {
                    Outcome::Refused(
                        refused.unwrap_or(DictError::NotEnoughReplicas { answered: acks }),
                    )
                };
                self.reply(ctx, &o.back, o.req, outcome);
            }
        }
    }

    /// Replica `from` answered the read `op`.
    pub(crate) fn on_fetched(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        op: u64,
        record: Option<Record<P>>,
    ) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let Some(at) = o.waiting.iter().position(|p| *p == from) else {
            return;
        };
        o.waiting.swap_remove(at);
        let OpKind::Get { need, answers, .. } = &mut o.kind else {
            return;
        };
        answers.push((from, record));
        if answers.len() >= *need as usize {
            self.end_get(ctx, op);
        }
    }

    /// A read has its answers (or its time is up): the newest valid record wins, and goes back
    /// to the replicas that lacked it.
    fn end_get(&mut self, ctx: &mut Context<'_, P>, op: u64) {
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        self.deadlines.remove(&(o.deadline, op));
        let OpKind::Get {
            key,
            health,
            need,
            answers,
        } = o.kind
        else {
            return;
        };
        let now = ctx.now();
        let me = ctx.me().id;
        let mine = answers
            .iter()
            .find(|(p, _)| *p == me)
            .map(|(_, r)| r.as_ref());
        let best = match (mine, agreed(&answers)) {
            // A coordinator that holds nothing of the key and whose replicas agree need not
            // check the record: the origin does, and so does every replica it is pushed to.
            (None, Some(r)) if r.position() == key && r.expires > now => Some(r.clone()),
            (mine, _) => self.newest_valid(now, key, mine.flatten(), &answers),
        };
        let key = Some(key);
        if health {
            let version = best.as_ref().map_or(0, |b| b.version);
            let current = answers
                .iter()
                .filter(|(_, r)| r.as_ref().map_or(0, |r| r.version) == version)
                .count() as u8;
            let h = crate::wire::ReplicaHealth {
                version,
                current,
                answered: answers.len() as u8,
                replicas: u8::try_from(self.cfg.replicas).unwrap_or(u8::MAX),
            };
            self.repair_stale(ctx, key, &best, &answers);
            return self.reply(ctx, &o.back, o.req, Outcome::Replicas(h));
        }
        if answers.len() < need as usize {
            let answered = answers.len() as u8;
            return self.reply(
                ctx,
                &o.back,
                o.req,
                Outcome::Refused(DictError::NotEnoughReplicas { answered }),
            );
        }
        self.repair_stale(ctx, key, &best, &answers);
        self.reply(ctx, &o.back, o.req, Outcome::Found(best));
    }

    /// The newest valid record among `answers`. Candidates are checked newest first until one
    /// passes; one equal to `mine`, the record this node held when the read began (checked
    /// when it was kept), is not verified again, only its expiry: in the common case, where
    /// the replicas agree, a read costs the primary no signature check at all (the origin
    /// still checks the record it gets).
    fn newest_valid(
        &self,
        now: Time,
        key: RingId,
        mine: Option<&Record<P>>,
        answers: &[(P, Option<Record<P>>)],
    ) -> Option<Record<P>> {
        let mut candidates: Vec<&Record<P>> =
            answers.iter().filter_map(|(_, r)| r.as_ref()).collect();
        // Newest first; a stable sort keeps equals in the order they answered.
        candidates.sort_by(|a, b| b.order(a));
        candidates
            .into_iter()
            .find(|r| {
                if mine == Some(*r) {
                    r.expires > now
                } else {
                    self.check_record(now, key, r, false).is_ok()
                }
            })
            .cloned()
    }

    /// Read repair: the newest record `best` goes to the replicas whose answer lacked it.
    fn repair_stale(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: Option<RingId>,
        best: &Option<Record<P>>,
        answers: &[(P, Option<Record<P>>)],
    ) {
        if let (Some(b), Some(k)) = (best, key) {
            let me = ctx.me().id;
            let stale: Vec<P> = answers
                .iter()
                .filter(|(p, r)| r.as_ref().is_none_or(|r| b.newer_than(r)) && *p != me)
                .map(|(p, _)| *p)
                .collect();
            // Kept here only if this node is a replica (it answered) and it is newer than
            // what it holds.
            let replica = answers.iter().any(|(p, _)| *p == me);
            if replica && self.keep(k, b.clone()).is_ok() {
                self.stats.read_repairs += 1;
                self.notify(ctx, k);
            }
            self.stats.read_repairs += stale.len() as u64;
            self.push(ctx, &stale, b);
        }
    }

    /// Operation `op` ran out of time: a write answers with the acknowledgements it has, a
    /// read with the answers it has.
    pub(crate) fn op_timed_out(&mut self, ctx: &mut Context<'_, P>, op: u64) {
        let is_get = self
            .ops
            .get(&op)
            .is_some_and(|o| matches!(o.kind, OpKind::Get { .. }));
        if is_get {
            return self.end_get(ctx, op);
        }
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        if let OpKind::Put { acks, refused, .. } = o.kind {
            let e = refused.unwrap_or(DictError::NotEnoughReplicas { answered: acks });
            self.reply(ctx, &o.back, o.req, Outcome::Refused(e));
        }
    }
}

/// The one record every answer that holds something holds, if they agree (and one does).
fn agreed<P: PeerId>(answers: &[(P, Option<Record<P>>)]) -> Option<&Record<P>> {
    let mut held = answers.iter().filter_map(|(_, r)| r.as_ref());
    let first = held.next()?;
    held.all(|r| r == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DictKey;
    use crate::service::DictConfig;
    use crate::store::{MemStore, Quotas};
    use bytes::Bytes;
    use p2ps_overlay::service::service_signed_bytes;
    use p2ps_overlay::sim::SimId;
    use p2ps_overlay::StandInProof;

    type D = Dict<SimId, MemStore<SimId>>;

    fn record(writer: SimId, key: &DictKey<SimId>, version: u64, value: &str) -> Record<SimId> {
        let value = Some(Bytes::copy_from_slice(value.as_bytes()));
        Record::new(key, writer, version, Time::from_secs(600), value, |d, c| {
            StandInProof::of(&writer, &service_signed_bytes(d, c))
        })
    }

    #[test]
    fn only_the_writers_own_link_spares_the_signature_check() {
        let dict: D = Dict::new(DictConfig::default(), MemStore::new(Quotas::default()));
        let key = DictKey::open(&b"k"[..]);
        let now = Time::from_secs(1);
        let mut bad = record(SimId(1), &key, 5, "five");
        bad.value = Some(Bytes::from_static(b"changed after signing"));
        // From anyone else: the signature is checked.
        let forged = dict.check_record(now, key.position(), &bad, false);
        assert_eq!(forged, Err(DictError::Forged));
        // Over the writer's own link: not checked again (it can only spoil its own write).
        assert_eq!(dict.check_record(now, key.position(), &bad, true), Ok(()));
        // Key, size and expiry are checked either way.
        let elsewhere = DictKey::<SimId>::open(&b"other"[..]).position();
        let misplaced = dict.check_record(now, elsewhere, &bad, true);
        assert_eq!(misplaced, Err(DictError::Forged));
        let late = Time::from_secs(601);
        let expired = dict.check_record(late, key.position(), &bad, true);
        assert_eq!(expired, Err(DictError::BadExpiry));
        let mut big = bad.clone();
        big.value = Some(Bytes::from(vec![0u8; DictConfig::default().max_value + 1]));
        let too_large = dict.check_record(now, key.position(), &big, true);
        assert!(matches!(too_large, Err(DictError::TooLarge { .. })));
    }

    #[test]
    fn a_read_takes_the_newest_answer_that_checks_out() {
        let dict: D = Dict::new(DictConfig::default(), MemStore::new(Quotas::default()));
        let key = DictKey::open(&b"k"[..]);
        let at = key.position();
        let now = Time::from_secs(1);
        let (a, b, c) = (SimId(1), SimId(2), SimId(3));
        let mine = record(a, &key, 5, "five");
        let newer = record(b, &key, 6, "six");
        let mut forged = newer.clone();
        forged.version = 7;
        forged.value = Some(Bytes::from_static(b"seven"));
        // A forged newest answer is passed over for the newest genuine one.
        let answers = vec![
            (a, Some(mine.clone())),
            (b, Some(forged.clone())),
            (c, Some(newer.clone())),
        ];
        assert_eq!(
            dict.newest_valid(now, at, Some(&mine), &answers),
            Some(newer)
        );
        // Replicas that agree with this node: its own record, unchecked.
        let answers = vec![(a, Some(mine.clone())), (b, Some(mine.clone()))];
        assert_eq!(
            dict.newest_valid(now, at, Some(&mine), &answers),
            Some(mine.clone())
        );
        // Only forged answers besides this node's own: its own wins.
        let answers = vec![(a, Some(mine.clone())), (b, Some(forged.clone()))];
        assert_eq!(
            dict.newest_valid(now, at, Some(&mine), &answers),
            Some(mine.clone())
        );
        // A record equal to one this node does not hold is checked like any other.
        let answers = vec![(b, Some(forged))];
        assert_eq!(dict.newest_valid(now, at, None, &answers), None);
        // This node's own record, expired, is not taken.
        let late = Time::from_secs(601);
        let answers = vec![(a, Some(mine.clone()))];
        assert_eq!(dict.newest_valid(late, at, Some(&mine), &answers), None);
    }
}
