//! Requests that want an answer (lookups, finger probes) and the signed answers to them.
//!
//! A request's id is its envelope's message number, drawn from a keyed hash of a counter so
//! that nobody can guess the ids of requests in flight. The node responsible for the key
//! answers with an envelope of its own, signed, that names the request, the asker, the key and
//! its predecessor (what makes it responsible). The answer goes back over connections that
//! already exist: straight to the asker if the responder is connected to it, otherwise back
//! along the trail of nodes that forwarded the request; a cold lookup so costs no handshake.
//! The answer carries the responder's proof of responsibility: its predecessor's signed word
//! that the responder follows it ([`Adjacency`], sent with every clockwise stabilisation).
//! The asker takes an answer only for a request it has in flight, for that request's key, from
//! a responder whose proof covers the key and agrees with what the asker knows: a neighbour of
//! the asker that lies between the predecessor and the responder proves the answer wrong. An
//! answer without a proof (a responder alone, or just joined) is believed only where the
//! asker's own lists name the responder as responsible.

use super::{Event, LookupError, Node, Output, PendingLookup, Purpose};
use crate::adjacency::Adjacency;
use crate::message::{Answer, Body, Envelope, Message, Routed, Sealed};
use crate::peer::PeerId;
use crate::ring::{Dir, RingId};
use crate::time::Time;
use sha2::{Digest, Sha256};

/// Clockwise stabilisations sent without the word that the receiver follows this node before
/// it goes again unchanged.
const ADJACENCY_RESEND: u32 = 4;
/// Responders' proofs remembered as checked (about one per node asked lately).
const PROOFS_REMEMBERED: usize = 64;

/// Unpredictable 64-bit numbers: SHA-256 of a secret key and a counter.
#[derive(Clone, Debug)]
pub(crate) struct Nonces {
    key: [u8; 32],
    counter: u64,
}

impl Nonces {
    /// Numbers keyed by `seed` (the driver's secret) and the node's position.
    pub(super) fn new(seed: u64, pos: RingId) -> Self {
        let mut h = Sha256::new();
        h.update(b"p2ps/nonces");
        h.update(seed.to_le_bytes());
        h.update(pos.0.to_le_bytes());
        Nonces {
            key: h.finalize().into(),
            counter: 0,
        }
    }

    /// The next number (never 0).
    pub(crate) fn next(&mut self) -> u64 {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(self.counter.to_le_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b).max(1)
    }
}

impl<P: PeerId> Node<P> {
    /// Starts tracking a request that wants an answer and routes it. Returns its id.
    pub(super) fn send_request(&mut self, key: RingId, purpose: Purpose, body: Body<P>) -> u64 {
        let deadline = self.now + self.cfg.lookup_timeout;
        let req = self.nonces.next();
        self.lookups.insert(
            req,
            PendingLookup {
                key,
                attempts: 1,
                deadline,
                purpose,
            },
        );
        self.lookup_deadlines.insert((deadline, req));
        let sealed = self.seal(req, key, body);
        self.route_sealed(sealed);
        req
    }

    /// At the node responsible for a request's key: signs the answer and sends it back.
    pub(super) fn answer(&mut self, now: Time, r: &Routed<P>) {
        let asker = r.origin();
        let env = Envelope {
            origin: self.my_contact(),
            seq: self.nonces.next(),
            issued: now,
            key: r.key(),
            body: Body::Answer {
                req: r.sealed.env.seq,
                asker,
                pred: self.proof_of_responsibility(),
                hops: r.hops,
            },
        };
        let sealed = Sealed::seal(&*self.signer, env);
        self.pass_back(asker, r.trail.clone(), sealed);
    }

    /// Sends an answer towards `asker`: straight if connected to it, else to the last node of
    /// the trail this node is connected to. As a last resort it goes straight to the asker
    /// (whose signed record gave its addresses).
    fn pass_back(&mut self, asker: P, mut trail: Vec<P>, sealed: Sealed<P>) {
        if asker == self.me.id {
            return self.take_answer(sealed);
        }
        if !self.links.contains_key(&asker) {
            while let Some(p) = trail.pop() {
                if p != self.me.id && p != asker && self.links.contains_key(&p) {
                    return self.push_send(p, Message::Answer(Answer { trail, sealed }));
                }
            }
        }
        self.push_send(
            asker,
            Message::Answer(Answer {
                trail: Vec::new(),
                sealed,
            }),
        );
    }

    /// An answer arrived from a peer (its envelope checked): taken if for this node, else
    /// passed back.
    pub(super) fn on_answer(&mut self, a: Answer<P>) {
        let Body::Answer { asker, .. } = a.sealed.env.body else {
            return;
        };
        if a.trail.len() > self.cfg.max_hops as usize {
            self.stats.dropped += 1;
            return;
        }
        if asker == self.me.id {
            self.take_answer(a.sealed);
        } else {
            self.pass_back(asker, a.trail, a.sealed);
        }
    }

    /// A verified answer addressed to this node: accepted if it answers a request in flight
    /// and agrees with what this node knows.
    fn take_answer(&mut self, sealed: Sealed<P>) {
        let env = sealed.env;
        let Body::Answer {
            req, pred, hops, ..
        } = env.body
        else {
            return;
        };
        let Some(pending) = self.lookups.get(&req) else {
            // Late (answered already, or given up) or never asked.
            self.stats.bad_answers += 1;
            return;
        };
        let responder = env.origin.peer();
        let key = env.key;
        if pending.key != key || !self.plausibly_responsible(responder.id, pred.as_ref(), key) {
            self.stats.bad_answers += 1;
            return;
        }
        let Some(l) = self.lookups.remove(&req) else {
            return;
        };
        self.lookup_deadlines.remove(&(l.deadline, req));
        match l.purpose {
            Purpose::Lookup => {
                self.stats.lookups_ok += 1;
                self.out.push_back(Output::Event(Event::LookupDone {
                    req,
                    key,
                    result: Ok((responder.id, hops)),
                }));
            }
            Purpose::Finger { dir, level } => {
                if self.state == super::State::Joined && responder.id != self.me.id {
                    self.table.set_finger(dir, level, responder);
                    self.repair.remove(&(dir, level));
                }
            }
        }
    }

    /// Whether `responder` may be responsible for `key`, given its proof `pred`.
    ///
    /// With a proof: the predecessor signed it recently for this responder, the key lies
    /// between the two, and no node of this node's neighbour lists (itself included) lies
    /// strictly between them, where it would be responsible instead. Without one: only if
    /// this node's own lists say so (the responder is in them and the entry before it, or this
    /// node, lies before the key). Fingers are not used as evidence here: one may be dead
    /// without this node knowing yet, and it would then refuse every true answer.
    fn plausibly_responsible(
        &mut self,
        responder: P,
        pred: Option<&Adjacency<P>>,
        key: RingId,
    ) -> bool {
        if responder == self.me.id {
            return self.table.is_responsible(key);
        }
        let pos = responder.ring_id();
        let Some(a) = pred else {
            return self.lists_name_responsible(responder, key);
        };
        let fresh = a.is_fresh(self.now, self.cfg.adjacency_ttl, self.cfg.max_clock_skew);
        if a.succ != responder || !a.covers(key) || !fresh || !self.proof_checks_out(a) {
            return false;
        }
        let from = a.pred.ring_id();
        let span = from.cw_to(pos);
        let known = || {
            self.table
                .successors()
                .iter()
                .chain(self.table.predecessors())
                .chain(std::iter::once(&self.me))
        };
        !known().any(|p| p.id != a.pred && p.id != responder && from.cw_to(p.pos) < span)
    }

    /// Whether `a` is signed by its `pred`: checked once, then remembered (the last
    /// [`PROOFS_REMEMBERED`] proofs that checked out).
    fn proof_checks_out(&mut self, a: &Adjacency<P>) -> bool {
        if self.proofs_checked.contains(a) {
            return true;
        }
        if !a.verify() {
            return false;
        }
        if self.proofs_checked.len() >= PROOFS_REMEMBERED {
            self.proofs_checked.pop_front();
        }
        self.proofs_checked.push_back(a.clone());
        true
    }

    /// Whether this node's own lists name `responder` as responsible for `key`: it is in a
    /// list and its neighbour there towards this node (or this node) lies before the key.
    fn lists_name_responsible(&self, responder: P, key: RingId) -> bool {
        let mut prev = self.me.pos;
        for s in self.table.successors() {
            if key.in_open_closed(prev, s.pos) {
                return s.id == responder;
            }
            prev = s.pos;
        }
        let preds = self.table.predecessors();
        for (i, p) in preds.iter().enumerate() {
            if p.id == responder {
                return preds
                    .get(i + 1)
                    .is_some_and(|before| key.in_open_closed(before.pos, p.pos));
            }
        }
        false
    }

    /// This node's proof that it is responsible for the keys after its predecessor: the word
    /// its current predecessor signed, if recent.
    fn proof_of_responsibility(&self) -> Option<Adjacency<P>> {
        let pred = self.table.predecessor()?;
        self.adjacency_in
            .as_ref()
            .filter(|a| {
                a.pred == pred.id
                    && a.is_fresh(self.now, self.cfg.adjacency_ttl, std::time::Duration::ZERO)
            })
            .cloned()
    }

    /// This node's signed word that `succ`, its first successor, follows it: the one made
    /// last if it names `succ` and is recent enough, else a new one.
    pub(super) fn adjacency_for(&mut self, succ: P) -> Adjacency<P> {
        if let Some(a) = &self.adjacency_out {
            if a.succ == succ && self.now.since(a.issued) < self.cfg.adjacency_ttl / 4 {
                return a.clone();
            }
        }
        let a = Adjacency::sign(&*self.signer, succ, self.now);
        self.adjacency_out = Some(a.clone());
        a
    }

    /// The word to put into a clockwise stabilisation to `succ`: a new or changed one, or
    /// the current one again every `ADJACENCY_RESEND + 1` stabilisations (the receiver keeps
    /// it; sending it every time cost ~85 B/s of upkeep).
    pub(super) fn adjacency_to_send(&mut self, succ: P) -> Option<Adjacency<P>> {
        let a = self.adjacency_for(succ);
        let due = match &mut self.adjacency_sent {
            Some((to, issued, skipped)) if *to == succ && *issued == a.issued => {
                *skipped += 1;
                *skipped > ADJACENCY_RESEND
            }
            _ => true,
        };
        if due {
            self.adjacency_sent = Some((succ, a.issued, 0));
            Some(a)
        } else {
            None
        }
    }

    /// A neighbour's stabilisation in direction `dir` carried its word that this node follows
    /// it: kept (once checked) if it is this node's predecessor's, names this node, and is
    /// recent.
    pub(super) fn take_adjacency(&mut self, from: P, dir: Dir, a: Adjacency<P>) {
        if dir != Dir::Cw || a.pred != from || a.succ != self.me.id {
            self.stats.forged += 1;
            return;
        }
        if self.adjacency_in.as_ref() == Some(&a) {
            return;
        }
        if !a.is_fresh(self.now, self.cfg.adjacency_ttl, self.cfg.max_clock_skew) {
            self.stats.stale += 1;
            return;
        }
        if !a.verify() {
            self.stats.forged += 1;
            return;
        }
        self.adjacency_in = Some(a);
    }

    /// A request's answer is late: send it again, or give up after every attempt.
    pub(super) fn on_lookup_timeout(&mut self, now: Time, req: u64) {
        let Some(l) = self.lookups.remove(&req) else {
            return;
        };
        if l.attempts >= self.cfg.lookup_attempts {
            if let Purpose::Lookup = l.purpose {
                self.stats.lookups_failed += 1;
                self.out.push_back(Output::Event(Event::LookupDone {
                    req,
                    key: l.key,
                    result: Err(LookupError::Timeout),
                }));
            }
            return;
        }
        // A retry is a fresh envelope under the same id, so that a late answer to an earlier
        // attempt still counts.
        let body = match l.purpose {
            Purpose::Lookup => Body::Lookup,
            Purpose::Finger { dir, level } => Body::FingerProbe {
                dir,
                level: level as u8,
                reply: true,
                notify_from: None,
            },
        };
        let deadline = now + self.cfg.lookup_timeout;
        self.lookup_deadlines.insert((deadline, req));
        self.lookups.insert(
            req,
            PendingLookup {
                attempts: l.attempts + 1,
                deadline,
                ..l
            },
        );
        let sealed = self.seal(req, l.key, body);
        self.route_sealed(sealed);
    }
}
