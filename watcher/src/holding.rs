//! The holders' side: the watches this node holds for watchers, as the watched node (which
//! hands them to its ring neighbours, answers probes and says when it leaves) or as one of
//! those neighbours (which reports the watched node's failure to the watcher).

use crate::service::Watcher;
use crate::wire::Wire;
use p2ps_overlay::service::{decode, encode, Context};
use p2ps_overlay::{Body, PeerId, Sealed, Time};
use std::collections::BTreeMap;
use std::time::Duration;

/// A watch held for a watcher.
#[derive(Clone, Debug)]
struct Held<P: PeerId> {
    /// The watched node (this node, or a neighbour of it).
    watched: P,
    until: Time,
    /// At the watched node: the watcher's signed request, handed to new neighbours.
    sealed: Option<Sealed<P>>,
}

/// Watches held for others: (watcher, watch id) -> the watch.
#[derive(Debug)]
pub(crate) struct Holding<P: PeerId> {
    held: BTreeMap<(P, u64), Held<P>>,
    /// No lease ends before this.
    next_expiry: Option<Time>,
}

impl<P: PeerId> Default for Holding<P> {
    fn default() -> Self {
        Holding {
            held: BTreeMap::new(),
            next_expiry: None,
        }
    }
}

impl<P: PeerId> Holding<P> {
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn next_expiry(&self) -> Option<Time> {
        self.next_expiry
    }

    pub(crate) fn remove(&mut self, watcher: P, req: u64) {
        self.held.remove(&(watcher, req));
    }

    /// Forgets the watches whose lease ended.
    pub(crate) fn expire(&mut self, now: Time) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        self.held.retain(|_, h| h.until > now);
        self.next_expiry = self.held.values().map(|h| h.until).min();
    }

    /// Whether a new watch of `watcher` fits the bounds.
    fn room_for(&self, watcher: P, per_watcher: usize, max: usize) -> bool {
        let theirs = self.held.range((watcher, 0)..=(watcher, u64::MAX)).count();
        theirs < per_watcher && self.held.len() < max
    }

    fn insert(&mut self, watcher: P, req: u64, held: Held<P>) {
        self.next_expiry = Some(self.next_expiry.map_or(held.until, |t| t.min(held.until)));
        self.held.insert((watcher, req), held);
    }
}

impl<P: PeerId> Watcher<P> {
    /// Keeps a watch of `watcher` (a new one only within the bounds), for at most `lease_ms`
    /// and the configured lease; `false` if refused.
    fn keep(&mut self, now: Time, watcher: P, req: u64, lease_ms: u32, held: Held<P>) -> bool {
        let fresh = !self.holding.held.contains_key(&(watcher, req));
        if fresh
            && !self
                .holding
                .room_for(watcher, self.cfg.max_per_watcher, self.cfg.max_held)
        {
            self.stats.refused += 1;
            return false;
        }
        let lease = Duration::from_millis(u64::from(lease_ms)).min(self.cfg.lease);
        self.holding.insert(
            watcher,
            req,
            Held {
                until: now + lease,
                ..held
            },
        );
        true
    }

    /// A watch (or its renewal) of this node by `watcher` arrived: held, acknowledged, and
    /// handed to this node's nearest neighbours.
    pub(crate) fn hold(
        &mut self,
        ctx: &mut Context<'_, P>,
        watcher: P,
        req: u64,
        lease_ms: u32,
        sealed: Sealed<P>,
    ) {
        let me = ctx.me().id;
        if watcher == me {
            self.stats.dropped += 1;
            return;
        }
        let held = Held {
            watched: me,
            until: ctx.now(),
            sealed: Some(sealed.clone()),
        };
        if !self.keep(ctx.now(), watcher, req, lease_ms, held) {
            return;
        }
        ctx.send(watcher, encode(&Wire::<P>::Held { req }, &[]));
        for n in self.nearest(ctx) {
            if n != watcher {
                ctx.send_sealed(n, encode(&Wire::<P>::Replica, &[]), sealed.clone());
            }
        }
    }

    /// This node's nearest neighbours on each side (`replicate_to` of each list).
    fn nearest(&self, ctx: &Context<'_, P>) -> Vec<P> {
        let t = ctx.table();
        let k = self.cfg.replicate_to;
        let mut out: Vec<P> = t.successors().iter().take(k).map(|p| p.id).collect();
        for p in t.predecessors().iter().take(k) {
            if !out.contains(&p.id) {
                out.push(p.id);
            }
        }
        out
    }

    /// New nodes among this node's nearest neighbours get the watches of this node.
    pub(crate) fn replicate_to_new(&mut self, ctx: &mut Context<'_, P>, up: &[P]) {
        if up.is_empty() || self.holding.held.is_empty() {
            return;
        }
        let me = ctx.me().id;
        let nearest = self.nearest(ctx);
        let new: Vec<P> = up.iter().copied().filter(|p| nearest.contains(p)).collect();
        if new.is_empty() {
            return;
        }
        let mine: Vec<(P, Sealed<P>)> = self
            .holding
            .held
            .iter()
            .filter(|(_, h)| h.watched == me)
            .filter_map(|((w, _), h)| Some((*w, h.sealed.clone()?)))
            .collect();
        for (watcher, sealed) in mine {
            for &n in &new {
                if n != watcher {
                    ctx.send_sealed(n, encode(&Wire::<P>::Replica, &[]), sealed.clone());
                }
            }
        }
    }

    /// `from` hands this node a watch of `from` (a watcher's signed request): held, to report
    /// `from`'s failure to the watcher.
    pub(crate) fn on_replica(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        sealed: Option<Sealed<P>>,
    ) {
        let Some(sealed) = sealed else {
            self.stats.dropped += 1;
            return;
        };
        let Body::Service {
            service,
            target,
            data,
            ..
        } = &sealed.env.body
        else {
            self.stats.dropped += 1;
            return;
        };
        // Only the watched node hands on its watches: a request addressed to another node, or
        // of another service, is refused.
        if *service != ctx.service() || *target != Some(from) {
            self.stats.refused += 1;
            return;
        }
        let Ok((Wire::Watch { req, lease_ms }, _)) = decode::<Wire<P>>(data) else {
            self.stats.dropped += 1;
            return;
        };
        let watcher = sealed.origin();
        if watcher == ctx.me().id {
            // This node watches `from` itself, and its own link tells it of a failure.
            return;
        }
        let held = Held {
            watched: from,
            until: ctx.now(),
            sealed: None,
        };
        self.keep(ctx.now(), watcher, req, lease_ms, held);
    }

    /// `peer` is taken for dead here: the watchers of it are told (once), and the watches go.
    pub(crate) fn report_failure(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        let me = ctx.me().id;
        if peer == me {
            return;
        }
        let theirs: Vec<(P, u64)> = self
            .holding
            .held
            .iter()
            .filter(|(_, h)| h.watched == peer)
            .map(|(k, _)| *k)
            .collect();
        for (watcher, req) in theirs {
            self.holding.remove(watcher, req);
            self.stats.suspects_sent += 1;
            let msg = encode(&Wire::Suspect { req, watched: peer }, &[]);
            ctx.send(watcher, msg);
        }
    }

    /// A routed probe from `origin` (signed by it) reached this node: answered the same way.
    pub(crate) fn answer_routed_probe(&mut self, ctx: &mut Context<'_, P>, origin: P, nonce: u64) {
        if origin == ctx.me().id {
            return;
        }
        let msg = encode(&Wire::<P>::Alive { nonce }, &[]);
        let sealed = ctx.seal(origin.ring_id(), Some(origin), msg);
        ctx.route(sealed);
    }

    /// This node leaves: every watcher of it gets its signed word, and the watches go.
    pub(crate) fn say_left(&mut self, ctx: &mut Context<'_, P>) {
        let me = ctx.me().id;
        let watchers: Vec<(P, u64)> = self
            .holding
            .held
            .iter()
            .filter(|(_, h)| h.watched == me)
            .map(|(k, _)| *k)
            .collect();
        for (watcher, req) in watchers {
            let left = encode(&Wire::<P>::Left { req }, &[]);
            let sealed = ctx.seal(watcher.ring_id(), Some(watcher), left);
            ctx.send_sealed(watcher, encode(&Wire::<P>::Leaving, &[]), sealed);
        }
        self.holding.held.clear();
        self.holding.next_expiry = None;
    }
}
