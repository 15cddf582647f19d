//! Anti-entropy: the replicas of a stretch of keys compare what they hold by range digests
//! and send each other only the records one of them lacks or holds older.
//!
//! Each node, as the primary of the keys between its predecessor and itself, opens an exchange
//! with each other replica of them after the ring around it changed and every
//! `repair_interval`: a digest (how many records, and a hash of their stamps) of that whole
//! stretch. A replica that holds the same answers with an empty acknowledgement; otherwise it
//! answers, for each piece whose digest differs, with the list of its records' stamps if the
//! piece holds at most [`LIST_MAX`] records, or with digests of [`FANOUT`] smaller pieces cut
//! at its own keys; the other side does the same with what it gets. A node that gets a list
//! pushes the records the other lacks or holds older, and asks (`Want`) for those it lacks or
//! holds older. The exchange ends where no digest differs: replicas that hold the same cost
//! two small messages per pair and round whatever they hold, and a replica that comes back
//! with its records (after a restart or a partition) gets only what changed meanwhile.
//! Pieces only shrink (each answer cuts a piece of the message it answers, at the cutter's
//! keys), so an exchange takes O(log n) round trips.
//!
//! From the exchanges it opens, a node learns which replicas lack which of its keys: the keys
//! it is primary for that fewer replicas than the ring has room for (at most r) held current
//! at the last check are its *under-replicated* count (`DictStats::under_replicated`).
//!
//! Everything from a peer is checked: a piece must lie within the keys this node is (nearly)
//! a replica of, lists and wants are bounded, and a record goes only to a peer that is
//! (nearly) a replica of its key, so a stranger can neither read other parts of the store nor
//! make this node hold keys it is not responsible for.

use crate::record::Stamp;
use crate::service::Dict;
use crate::store::Store;
use crate::wire::{Part, Wire};
use p2ps_overlay::service::{encode, Context};
use p2ps_overlay::{PeerId, RingId, Time};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// A piece with at most this many records is described by their list.
pub(crate) const LIST_MAX: usize = 32;
/// A piece with more is cut into this many pieces, each described by a digest.
pub(crate) const FANOUT: usize = 16;
/// Most pieces in one message (larger answers go in several messages).
pub(crate) const MAX_PARTS: usize = 64;
/// Most records a peer may list for one piece.
const MAX_LIST: usize = 2 * LIST_MAX;
/// Most keys in one `Want`, and records pushed for one message.
const MAX_WANT: usize = 1024;

/// The digest of records (keys and stamps) in ring order.
pub(crate) fn digest(entries: &[(RingId, Stamp)]) -> [u8; 16] {
    let mut h = Sha256::new();
    for (k, s) in entries {
        h.update(k.0.to_le_bytes());
        h.update(s.version.to_le_bytes());
        h.update(s.hash.to_le_bytes());
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// How a node describes what it holds of `(after, end]` (`mine`, in ring order): the list if
/// it is short, else digests of [`FANOUT`] pieces cut at its own keys.
pub(crate) fn describe(after: RingId, end: RingId, mine: &[(RingId, Stamp)]) -> Vec<Part> {
    if mine.len() <= LIST_MAX {
        return vec![Part::Items {
            after,
            end,
            items: mine.to_vec(),
        }];
    }
    let per = mine.len().div_ceil(FANOUT);
    let chunks: Vec<&[(RingId, Stamp)]> = mine.chunks(per).collect();
    let mut parts = Vec::with_capacity(chunks.len());
    let mut lo = after;
    for (i, chunk) in chunks.iter().enumerate() {
        let hi = match chunk.last() {
            Some((k, _)) if i + 1 < chunks.len() => *k,
            _ => end,
        };
        parts.push(Part::Digest {
            after: lo,
            end: hi,
            count: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
            hash: digest(chunk),
        });
        lo = hi;
    }
    parts
}

/// What a node does with a peer's list of a piece it holds `mine` of: the keys to push (the
/// peer lacks them or holds an older record) and the keys to ask for (the other way round;
/// a record of the same version that differs goes both ways, and the receiver keeps the
/// winner).
pub(crate) fn compare(
    mine: &[(RingId, Stamp)],
    theirs: &[(RingId, Stamp)],
) -> (Vec<RingId>, Vec<RingId>) {
    let mine_map: BTreeMap<RingId, Stamp> = mine.iter().copied().collect();
    let theirs_map: BTreeMap<RingId, Stamp> = theirs.iter().copied().collect();
    let push = mine
        .iter()
        .filter(|(k, s)| match theirs_map.get(k) {
            None => true,
            Some(t) => t.hash != s.hash && s.version >= t.version,
        })
        .map(|(k, _)| *k)
        .collect();
    let want = theirs_map
        .iter()
        .filter(|(k, t)| match mine_map.get(k) {
            None => true,
            Some(s) => t.hash != s.hash && t.version >= s.version,
        })
        .map(|(k, _)| *k)
        .collect();
    (push, want)
}

/// The check of its replicas a primary makes with each exchange it opens.
#[derive(Debug)]
struct Check<P> {
    /// The exchange's id.
    round: u64,
    /// When it is counted.
    due: Time,
    /// The keys this node was primary for when it opened the exchange.
    keys: BTreeSet<RingId>,
    /// Each other replica: `None` until it answers, then the keys it lacked (or held older).
    peers: BTreeMap<P, Option<BTreeSet<RingId>>>,
}

/// The checks a node makes as primary, and what the last one found.
#[derive(Debug)]
pub(crate) struct Checks<P> {
    open: Option<Check<P>>,
    /// Keys found under-replicated by the last check counted.
    pub(crate) under_replicated: u64,
}

impl<P> Default for Checks<P> {
    fn default() -> Self {
        Checks {
            open: None,
            under_replicated: 0,
        }
    }
}

impl<P: PeerId> Checks<P> {
    /// When the open check is counted.
    pub(crate) fn due(&self) -> Option<Time> {
        self.open.as_ref().map(|c| c.due)
    }

    /// Starts a check (replacing one not counted yet).
    fn start(&mut self, round: u64, due: Time, keys: BTreeSet<RingId>, peers: &[P]) {
        self.open = Some(Check {
            round,
            due,
            keys,
            peers: peers.iter().map(|p| (*p, None)).collect(),
        });
    }

    /// `peer` answered in exchange `round`.
    fn answered(&mut self, round: u64, peer: P) {
        if let Some(c) = self.open.as_mut().filter(|c| c.round == round) {
            if let Some(slot @ None) = c.peers.get_mut(&peer) {
                *slot = Some(BTreeSet::new());
            }
        }
    }

    /// `peer` lacked `key` (or held it older) in exchange `round`.
    fn lacked(&mut self, round: u64, peer: P, key: RingId) {
        if let Some(c) = self.open.as_mut().filter(|c| c.round == round) {
            if !c.keys.contains(&key) {
                return;
            }
            if let Some(Some(lacks)) = c.peers.get_mut(&peer) {
                lacks.insert(key);
            }
        }
    }

    /// Counts the open check if it is due: keys held current by fewer replicas (this node
    /// included) than it asked plus itself. A replica that never answered holds none.
    pub(crate) fn count_if_due(&mut self, now: Time) {
        if self.open.as_ref().is_none_or(|c| c.due > now) {
            return;
        }
        let Some(c) = self.open.take() else {
            return;
        };
        let want = c.peers.len() + 1;
        let under = c
            .keys
            .iter()
            .filter(|k| {
                let current = 1 + c
                    .peers
                    .values()
                    .filter(|l| l.as_ref().is_some_and(|l| !l.contains(k)))
                    .count();
                current < want
            })
            .count();
        self.under_replicated = under as u64;
    }
}

impl<P: PeerId, S: Store<P>> Dict<P, S> {
    /// Opens an exchange with each other replica of the keys this node is primary for (those
    /// after its predecessor, up to itself).
    pub(crate) fn open_sync(&mut self, ctx: &mut Context<'_, P>) {
        let me = ctx.me();
        let Some(pred) = ctx.table().predecessor() else {
            return;
        };
        let Some(set) = ctx.replica_set(me.pos, self.cfg.replicas) else {
            return;
        };
        let others: Vec<P> = set.iter().map(|p| p.id).filter(|p| *p != me.id).collect();
        if others.is_empty() || pred.pos == me.pos {
            return;
        }
        let mine = self.store.stamps(pred.pos, me.pos);
        let round = ctx.next_seq();
        let part = Part::Digest {
            after: pred.pos,
            end: me.pos,
            count: u32::try_from(mine.len()).unwrap_or(u32::MAX),
            hash: digest(&mine),
        };
        let msg = encode(
            &Wire::<P>::Sync {
                round,
                parts: vec![part],
                opening: true,
            },
            &[],
        );
        for p in &others {
            ctx.send(*p, msg.clone());
        }
        let due = ctx.now() + self.cfg.replica_timeout;
        self.checks
            .start(round, due, mine.iter().map(|(k, _)| *k).collect(), &others);
    }

    /// Whether this node compares the piece `(after, end]` with `from`: the piece must lie
    /// within the keys this node is (nearly) a replica of, and `from` must be (nearly) a
    /// replica of its end.
    fn may_sync(&self, ctx: &Context<'_, P>, from: P, after: RingId, end: RingId) -> bool {
        if after == end || !self.near_replica(ctx, end, from) {
            return false;
        }
        let me = ctx.me();
        let preds = ctx.table().predecessors();
        let reach = 2 * self.cfg.replicas;
        let far = if preds.len() >= reach {
            // The keys this node is within the first 2r nodes of: those after its 2r-th
            // predecessor, up to itself.
            preds[reach - 1].pos
        } else if preds.len() >= ctx.config().list_len {
            // Lists shorter than 2r (a large r): as far back as they reach, which covers the
            // stretches of every primary this node is one of the r replicas of.
            match preds.last() {
                Some(p) => p.pos,
                None => return false,
            }
        } else {
            // A ring this small (its lists are not full): every node is a replica of every key.
            return true;
        };
        let (a, e) = (far.cw_to(after), far.cw_to(end));
        a < e && e <= far.cw_to(me.pos)
    }

    /// `from` tells what it holds of some pieces in exchange `round`.
    pub(crate) fn on_sync(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        round: u64,
        parts: Vec<Part>,
        opening: bool,
    ) {
        if parts.len() > MAX_PARTS {
            self.stats.dropped += 1;
            return;
        }
        self.checks.answered(round, from);
        let mut reply = Vec::new();
        let mut push = Vec::new();
        let mut want = Vec::new();
        for part in parts {
            let (after, end) = part.bounds();
            if !self.may_sync(ctx, from, after, end) {
                self.stats.dropped += 1;
                continue;
            }
            let mine = self.store.stamps(after, end);
            match part {
                Part::Digest { count, hash, .. } => {
                    if count as usize == mine.len() && hash == digest(&mine) {
                        continue;
                    }
                    reply.extend(describe(after, end, &mine));
                }
                Part::Items { items, .. } => {
                    let inside = items.iter().all(|(k, _)| k.in_open_closed(after, end));
                    if items.len() > MAX_LIST || !inside {
                        self.stats.dropped += 1;
                        continue;
                    }
                    let (p, w) = compare(&mine, &items);
                    push.extend(p);
                    want.extend(w);
                }
            }
        }
        self.push_keys(ctx, from, round, &push);
        if !want.is_empty() {
            want.truncate(MAX_WANT);
            ctx.send(from, encode(&Wire::<P>::Want { round, keys: want }, &[]));
        }
        if reply.is_empty() && opening {
            // Nothing differs: say so, so that the opener counts this replica as current.
            ctx.send(
                from,
                encode(
                    &Wire::<P>::Sync {
                        round,
                        parts: Vec::new(),
                        opening: false,
                    },
                    &[],
                ),
            );
        }
        for chunk in reply.chunks(MAX_PARTS) {
            let msg = Wire::<P>::Sync {
                round,
                parts: chunk.to_vec(),
                opening: false,
            };
            ctx.send(from, encode(&msg, &[]));
        }
    }

    /// `from` asks for the records of `keys` in exchange `round`.
    pub(crate) fn on_want(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        round: u64,
        keys: Vec<RingId>,
    ) {
        if keys.len() > MAX_WANT {
            self.stats.dropped += 1;
            return;
        }
        self.checks.answered(round, from);
        self.push_keys(ctx, from, round, &keys);
    }

    /// Pushes the records of `keys` to `to`, those it is (nearly) a replica of, at most
    /// [`MAX_WANT`] of them.
    fn push_keys(&mut self, ctx: &mut Context<'_, P>, to: P, round: u64, keys: &[RingId]) {
        for key in keys.iter().take(MAX_WANT) {
            if !self.near_replica(ctx, *key, to) {
                continue;
            }
            let Ok(Some(record)) = self.held(*key) else {
                continue;
            };
            self.checks.lacked(round, to, *key);
            self.push(ctx, &[to], &record);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn e(k: u128, v: u64, h: u64) -> (RingId, Stamp) {
        (
            RingId(k),
            Stamp {
                version: v,
                hash: h,
            },
        )
    }

    #[test]
    fn short_pieces_are_listed_long_ones_cut_at_keys() {
        let few: Vec<_> = (1..=3).map(|k| e(k, 1, k as u64)).collect();
        assert_eq!(
            describe(RingId(0), RingId(10), &few),
            vec![Part::Items {
                after: RingId(0),
                end: RingId(10),
                items: few.clone()
            }]
        );
        let many: Vec<_> = (1..=100).map(|k| e(k * 10, 1, k as u64)).collect();
        let parts = describe(RingId(5), RingId(2000), &many);
        assert!(parts.len() <= FANOUT);
        // Contiguous, covering (5, 2000], each digest of the keys inside it.
        let mut at = RingId(5);
        let mut total = 0;
        for p in &parts {
            let Part::Digest {
                after,
                end,
                count,
                hash,
            } = p
            else {
                panic!("a long piece is cut into digests");
            };
            assert_eq!(*after, at);
            let inside: Vec<_> = many
                .iter()
                .copied()
                .filter(|(k, _)| k.in_open_closed(*after, *end))
                .collect();
            assert_eq!(*count as usize, inside.len());
            assert_eq!(*hash, digest(&inside));
            total += inside.len();
            at = *end;
        }
        assert_eq!(at, RingId(2000));
        assert_eq!(total, many.len());
    }

    #[test]
    fn lists_compare_to_what_each_side_lacks() {
        let mine = vec![e(1, 5, 1), e(2, 3, 2), e(3, 7, 3), e(5, 1, 9)];
        let theirs = vec![e(2, 4, 8), e(3, 7, 3), e(4, 1, 4), e(5, 1, 10)];
        let (push, want) = compare(&mine, &theirs);
        // 1: they lack it; 5: same version, different record: both ways.
        assert_eq!(push, vec![RingId(1), RingId(5)]);
        // 2: theirs is newer; 4: we lack it; 5: both ways.
        assert_eq!(want, vec![RingId(2), RingId(4), RingId(5)]);
        let (push, want) = compare(&mine, &mine);
        assert!(push.is_empty() && want.is_empty());
    }

    #[test]
    fn a_check_counts_keys_that_a_replica_lacked_or_that_went_unanswered() {
        let mut c = Checks::<p2ps_overlay::sim::SimId>::default();
        let (a, b) = (p2ps_overlay::sim::SimId(1), p2ps_overlay::sim::SimId(2));
        let keys: BTreeSet<RingId> = (1..=10).map(RingId).collect();
        c.start(7, Time::from_secs(2), keys.clone(), &[a, b]);
        c.answered(7, a);
        c.answered(7, b);
        c.lacked(7, a, RingId(3));
        c.lacked(7, b, RingId(4));
        c.lacked(7, b, RingId(99)); // not one of the check's keys
        c.lacked(6, b, RingId(5)); // another exchange
        c.count_if_due(Time::from_secs(1));
        assert_eq!(c.under_replicated, 0, "not due yet");
        c.count_if_due(Time::from_secs(2));
        assert_eq!(c.under_replicated, 2);
        // One replica silent: every key is short of it.
        c.start(8, Time::from_secs(4), keys, &[a, b]);
        c.answered(8, a);
        c.count_if_due(Time::from_secs(4));
        assert_eq!(c.under_replicated, 10);
        assert!(c.due().is_none());
    }
}
