//! Contact records and the evidence rule: what puts a node into this node's tables.
//!
//! A node id enters a neighbour list or a finger slot only on first-hand evidence: an
//! authenticated connection to it (the driver's `from`), a fresh record it signed, or an
//! envelope it signed. Records are checked once and kept (a copy equal to a kept one needs no
//! second check); a newer record replaces an older one, and only verified records lend their
//! addresses for dialling, so nobody can make this node dial an address by naming it. This
//! node signs its own record again whenever its addresses or relay change, and every quarter
//! of [`Config::record_ttl`](crate::Config::record_ttl) so that copies in circulation stay
//! fresh.

use super::{learn, Node};
use crate::message::{Routed, Sealed};
use crate::peer::{Contact, Peer, PeerId};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Records of nodes new to this node that one peer may hand it per [`NEW_RECORDS_WINDOW`]:
/// every record lends addresses that this node may dial, so one peer cannot make it learn
/// (and later dial) an unbounded number of them, however validly signed.
const NEW_RECORDS_PER_PEER: u32 = 64;
/// The window of [`NEW_RECORDS_PER_PEER`].
const NEW_RECORDS_WINDOW: Duration = Duration::from_secs(60);

/// How long a neighbour is taken to keep a record handed to it: within this time the same
/// record goes to it as a bare mention, after it in full again (in case it forgot it).
const RECORDS_RESENT_AFTER: Duration = Duration::from_secs(60);

/// The records handed to each peer lately: per peer, when its memory started and the `issued`
/// of every record sent since.
#[derive(Debug)]
pub(super) struct Sent<P: PeerId>(BTreeMap<P, (Time, BTreeMap<P, Time>)>);

impl<P: PeerId> Default for Sent<P> {
    fn default() -> Self {
        Sent(BTreeMap::new())
    }
}

impl<P: PeerId> Sent<P> {
    /// Keeps the memory of the peers for which `keep` holds.
    pub(super) fn retain(&mut self, keep: impl Fn(&P) -> bool) {
        self.0.retain(|p, _| keep(p));
    }
}

impl<P: PeerId> Node<P> {
    /// Signs this node's record anew with its current addresses and relay.
    pub(super) fn resign_record(&mut self, now: Time) {
        self.record = Contact::signed(
            &*self.signer,
            self.my_addrs.clone(),
            self.my_relay.clone(),
            now,
        );
    }

    /// This node's record, signed anew first if it is getting old.
    pub(super) fn my_contact(&mut self) -> Contact<P> {
        if self.now.since(self.record.issued) >= self.cfg.record_ttl / 4 {
            self.resign_record(self.now);
        }
        self.record.clone()
    }

    /// The records of the nodes in `records`, learnt out of band (a warm start, a cache):
    /// each is checked like a record carried by a message. Returns how many were taken.
    pub fn learn_records(&mut self, records: &[Contact<P>]) -> usize {
        let me = self.me.id;
        records.iter().filter(|c| self.vouch(me, c)).count()
    }

    /// Whether a record made at `issued` may be believed at `now`: not older than the record
    /// lifetime, not from the future beyond the allowed clock skew.
    fn record_fresh(&self, issued: Time) -> bool {
        issued <= self.now + self.cfg.max_clock_skew && self.now.since(issued) < self.cfg.record_ttl
    }

    /// Checks a contact carried by a message from `from` and keeps it if it is a fresh record
    /// signed by its node (learning its addresses and relay hint). Returns whether `c.id` is
    /// now verified: it is `from`, or a record of it was checked now or before.
    pub(super) fn vouch(&mut self, from: P, c: &Contact<P>) -> bool {
        if c.id == self.me.id {
            return false;
        }
        if let Some(kept) = self.records.get(&c.id) {
            if kept.issued >= c.issued || c.proof.is_none() {
                return true;
            }
        }
        if c.proof.is_none() {
            // A bare mention names a node verified before: every table entry was on entry.
            return c.id == from || self.links.contains_key(&c.id) || self.table.contains(&c.id);
        }
        if !self.record_fresh(c.issued) {
            self.stats.unverified += 1;
            return c.id == from || self.records.contains_key(&c.id);
        }
        if !c.verify() {
            self.stats.forged += 1;
            return c.id == from || self.records.contains_key(&c.id);
        }
        if c.id != from && !self.records.contains_key(&c.id) && !self.new_record_allowed(from) {
            self.stats.unverified += 1;
            return false;
        }
        learn(&mut self.addrs, &mut self.hints, self.me.id, c, true);
        self.records.insert(c.id, c.clone());
        true
    }

    /// Whether `from` may still hand this node a record of a node it did not know, within its
    /// budget ([`NEW_RECORDS_PER_PEER`] per [`NEW_RECORDS_WINDOW`]); counts it if so.
    fn new_record_allowed(&mut self, from: P) -> bool {
        let now = self.now;
        if from == self.me.id {
            return true;
        }
        let (since, n) = self.new_records.entry(from).or_insert((now, 0));
        if now.since(*since) >= NEW_RECORDS_WINDOW {
            *since = now;
            *n = 0;
        }
        if *n >= NEW_RECORDS_PER_PEER {
            return false;
        }
        *n += 1;
        true
    }

    /// The peers of `list` that are verified (see [`Node::vouch`]) and not known to be gone.
    pub(super) fn verified(&mut self, from: P, list: &[Contact<P>]) -> Vec<Peer<P>> {
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            if self.vouch(from, c) && !self.tombstones.contains_key(&c.id) {
                out.push(c.peer());
            } else if c.id != self.me.id && !self.tombstones.contains_key(&c.id) {
                self.stats.unverified += 1;
            }
        }
        out
    }

    /// Whether an envelope may be acted on: its origin signed it, and it is recent enough that
    /// duplicate detection still remembers it (older ones could be replays). Counts what it
    /// drops.
    pub(super) fn envelope_ok(&mut self, s: &Sealed<P>) -> bool {
        if !self.envelope_fresh(s) {
            return false;
        }
        self.signature_ok(s)
    }

    /// Whether an envelope is recent enough that duplicate detection still remembers it
    /// (older ones could be replays). Counts what it drops.
    pub(super) fn envelope_fresh(&mut self, s: &Sealed<P>) -> bool {
        let issued = s.env.issued;
        let max_age = self.cfg.seen_ttl.saturating_sub(self.cfg.max_clock_skew);
        if issued > self.now + self.cfg.max_clock_skew || self.now.since(issued) > max_age {
            self.stats.stale += 1;
            return false;
        }
        true
    }

    /// Whether the origin named in an envelope signed it. Counts forgeries.
    pub(super) fn signature_ok(&mut self, s: &Sealed<P>) -> bool {
        if !s.verify() {
            self.stats.forged += 1;
            return false;
        }
        true
    }

    /// Whether a routed message is its origin's word, before this node acts on it: it came
    /// straight from the origin, or was checked here before, or its signature checks out now.
    pub(super) fn origin_checked(&mut self, r: &mut Routed<P>) -> bool {
        if !r.checked {
            r.checked = r.origin() == self.me.id || self.signature_ok(&r.sealed);
        }
        r.checked
    }

    /// The record to hand out for `p`: its own signed record if this node keeps one, else a
    /// bare mention (which receivers do not take into their tables).
    pub(super) fn contact(&mut self, p: Peer<P>) -> Contact<P> {
        if p.id == self.me.id {
            return self.my_contact();
        }
        self.records
            .get(&p.id)
            .cloned()
            .unwrap_or_else(|| Contact::bare(p.id))
    }

    /// `c` as handed to `to` in periodic upkeep: a bare mention if `to` got this very record
    /// lately (it keeps the records of its table's nodes), the full record otherwise. Upkeep
    /// so carries each record about once a minute instead of every round.
    pub(super) fn record_for(&mut self, to: P, c: Contact<P>) -> Contact<P> {
        if c.proof.is_none() {
            return c;
        }
        let now = self.now;
        let (since, sent) = self
            .sent_records
            .0
            .entry(to)
            .or_insert_with(|| (now, BTreeMap::new()));
        if now.since(*since) >= RECORDS_RESENT_AFTER {
            *since = now;
            sent.clear();
        }
        if sent.get(&c.id) == Some(&c.issued) {
            return Contact::bare(c.id);
        }
        sent.insert(c.id, c.issued);
        c
    }

    /// [`Node::contacts`], each as handed to `to` in upkeep ([`Node::record_for`]).
    pub(super) fn contacts_for(&mut self, to: P, peers: &[Peer<P>]) -> Vec<Contact<P>> {
        peers
            .iter()
            .map(|p| {
                let c = self.contact(*p);
                self.record_for(to, c)
            })
            .collect()
    }

    /// [`Node::contact`] for each of `peers`.
    pub(super) fn contacts(&mut self, peers: &[Peer<P>]) -> Vec<Contact<P>> {
        peers.iter().map(|p| self.contact(*p)).collect()
    }
}
