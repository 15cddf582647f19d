//! The watcher's side: the watches this node's application keeps, their renewals, and the
//! probes that confirm (or refute) a reported failure before anything is reported.

use crate::service::{NodeWatchEvent, WatchError, Watcher};
use crate::wire::Wire;
use p2ps_overlay::service::{decode, encode, Context};
use p2ps_overlay::{Body, PeerId, Sealed, Time};
use std::collections::BTreeMap;

/// A probe in flight.
#[derive(Clone, Copy, Debug)]
struct Probe<P> {
    nonce: u64,
    started: Time,
    /// When it is sent again (once), if not answered by then.
    resend_at: Option<Time>,
    /// When the node is taken for failed if it has not answered.
    deadline: Time,
    reported_by: Option<P>,
}

/// One watch of this node's application.
#[derive(Clone, Debug)]
struct Watch<P> {
    node: P,
    /// Whether the watched node has acknowledged the watch (and `Watching` was reported).
    acked: bool,
    /// When the watch is renewed next.
    renew_at: Time,
    /// A watch or renewal sent and not acknowledged yet: by when it must be.
    ack_due: Option<Time>,
    probe: Option<Probe<P>>,
    /// No new probe before this (after an answered one).
    quiet_until: Time,
    /// A report that came while quiet, to be probed once the quiet ends (its reporter).
    pending: Option<Option<P>>,
}

impl<P: Copy> Watch<P> {
    fn next_deadline(&self) -> Option<Time> {
        let probe = self
            .probe
            .map(|p| p.resend_at.unwrap_or(p.deadline).min(p.deadline));
        // A report waiting for the quiet to end (a probe in flight covers it meanwhile).
        let pending = self
            .pending
            .filter(|_| self.probe.is_none())
            .map(|_| self.quiet_until);
        [Some(self.renew_at), self.ack_due, probe, pending]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The watches of this node's application, by watch id.
#[derive(Debug)]
pub(crate) struct Watching<P> {
    watches: BTreeMap<u64, Watch<P>>,
    /// Probes in flight: nonce -> watch id.
    probes: BTreeMap<u64, u64>,
}

impl<P> Default for Watching<P> {
    fn default() -> Self {
        Watching {
            watches: BTreeMap::new(),
            probes: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Watching<P> {
    pub(crate) fn len(&self) -> usize {
        self.watches.len()
    }

    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.watches.values().filter_map(Watch::next_deadline).min()
    }

    fn end(&mut self, req: u64) -> Option<Watch<P>> {
        let w = self.watches.remove(&req)?;
        if let Some(p) = w.probe {
            self.probes.remove(&p.nonce);
        }
        Some(w)
    }
}

impl<P: PeerId> Watcher<P> {
    /// Watches `node`: [`NodeWatchEvent::Watching`] follows once it answers, then
    /// [`NodeWatchEvent::Failed`] or [`NodeWatchEvent::Left`] when it fails or leaves (which
    /// ends the watch). Returns the watch id.
    pub fn watch(&mut self, ctx: &mut Context<'_, P>, node: P) -> Result<u64, WatchError> {
        if !ctx.is_joined() {
            return Err(WatchError::NotJoined);
        }
        if node == ctx.me().id {
            return Err(WatchError::Myself);
        }
        if self.mine.watches.len() >= self.cfg.max_watches {
            return Err(WatchError::TooMany {
                max: self.cfg.max_watches,
            });
        }
        let req = ctx.next_seq();
        let now = ctx.now();
        self.mine.watches.insert(
            req,
            Watch {
                node,
                acked: false,
                renew_at: now,
                ack_due: None,
                probe: None,
                quiet_until: now,
                pending: None,
            },
        );
        self.send_watch(ctx, req);
        Ok(req)
    }

    /// Stops watch `req` (the watched node is told; its neighbours let it run out).
    pub fn unwatch(&mut self, ctx: &mut Context<'_, P>, req: u64) {
        if let Some(w) = self.mine.end(req) {
            let msg = encode(&Wire::<P>::Unwatch { req }, &[]);
            let sealed = ctx.seal(w.node.ring_id(), Some(w.node), msg);
            ctx.route(sealed);
        }
    }

    /// The node watch `req` watches, if it runs.
    pub fn watched(&self, req: u64) -> Option<P> {
        self.mine.watches.get(&req).map(|w| w.node)
    }

    /// Sends (again) watch `req` to its node, through the ring.
    fn send_watch(&mut self, ctx: &mut Context<'_, P>, req: u64) {
        let now = ctx.now();
        let lease = self.cfg.lease;
        let renew = ctx.jitter(lease / 3);
        let ack_due = now + self.cfg.ack_timeout;
        let Some(w) = self.mine.watches.get_mut(&req) else {
            return;
        };
        w.renew_at = now + renew;
        if w.ack_due.is_none() {
            w.ack_due = Some(ack_due);
        }
        let node = w.node;
        let lease_ms = u32::try_from(lease.as_millis()).unwrap_or(u32::MAX);
        let msg = encode(&Wire::<P>::Watch { req, lease_ms }, &[]);
        let sealed = ctx.seal(node.ring_id(), Some(node), msg);
        ctx.route(sealed);
    }

    /// The watched node says it holds watch `req`.
    pub(crate) fn on_held(&mut self, ctx: &mut Context<'_, P>, from: P, req: u64) {
        let Some(w) = self.mine.watches.get_mut(&req) else {
            // Ended meanwhile, or never asked.
            self.stats.dropped += 1;
            return;
        };
        if w.node != from {
            // Only the watched node can say it holds the watch.
            self.stats.refused += 1;
            return;
        }
        w.ack_due = None;
        if !w.acked {
            w.acked = true;
            self.events
                .push_back(NodeWatchEvent::Watching { req, node: from });
        }
        let _ = ctx;
    }

    /// `from` says the node of watch `req` failed: probe it before believing it.
    pub(crate) fn on_suspect(&mut self, ctx: &mut Context<'_, P>, from: P, req: u64, watched: P) {
        if self
            .mine
            .watches
            .get(&req)
            .is_none_or(|w| w.node != watched)
        {
            self.stats.suspects_ignored += 1;
            return;
        }
        self.start_probe(ctx, req, Some(from));
    }

    /// This node's own link to `peer` failed: probe every watch of it.
    pub(crate) fn suspect_locally(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        let reqs: Vec<u64> = self
            .mine
            .watches
            .iter()
            .filter(|(_, w)| w.node == peer)
            .map(|(r, _)| *r)
            .collect();
        for req in reqs {
            self.start_probe(ctx, req, None);
        }
    }

    /// Probes the node of watch `req` unless a probe is in flight or one was answered lately.
    fn start_probe(&mut self, ctx: &mut Context<'_, P>, req: u64, by: Option<P>) {
        let now = ctx.now();
        let Some(w) = self.mine.watches.get_mut(&req) else {
            return;
        };
        if w.probe.is_some() {
            self.stats.suspects_ignored += 1;
            return;
        }
        if now < w.quiet_until {
            // Probed lately: once more when the quiet ends, whatever the number of reports.
            self.stats.suspects_ignored += 1;
            w.pending = Some(by);
            return;
        }
        w.pending = None;
        let nonce = ctx.next_seq();
        w.probe = Some(Probe {
            nonce,
            started: now,
            resend_at: Some(now + self.cfg.probe_timeout / 2),
            deadline: now + self.cfg.probe_timeout,
            reported_by: by,
        });
        let node = w.node;
        self.mine.probes.insert(nonce, req);
        self.stats.probes += 1;
        send_probe(ctx, node, nonce);
    }

    /// `from` answered probe `nonce` (one hop, or routed and signed by it).
    pub(crate) fn on_alive(&mut self, ctx: &mut Context<'_, P>, from: P, nonce: u64) {
        let Some(&req) = self.mine.probes.get(&nonce) else {
            // Answered already (both ways), or never asked.
            return;
        };
        let Some(w) = self.mine.watches.get_mut(&req) else {
            self.mine.probes.remove(&nonce);
            return;
        };
        if w.node != from {
            // Only the watched node can say it is alive.
            self.stats.refused += 1;
            return;
        }
        self.mine.probes.remove(&nonce);
        w.probe = None;
        w.quiet_until = ctx.now() + self.cfg.probe_quiet;
        w.ack_due = None;
        self.stats.refuted += 1;
        if !w.acked {
            // Alive but not holding the watch (the watch was lost on its way): ask again.
            self.send_watch(ctx, req);
        }
    }

    /// A node says it leaves: only the watched node's signed `Left` counts.
    pub(crate) fn on_leaving(&mut self, ctx: &mut Context<'_, P>, sealed: Option<Sealed<P>>) {
        let me = ctx.me().id;
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
        if *service != ctx.service() || *target != Some(me) {
            self.stats.refused += 1;
            return;
        }
        let Ok((Wire::Left { req }, _)) = decode::<Wire<P>>(data) else {
            self.stats.dropped += 1;
            return;
        };
        let signer = sealed.origin();
        if self.mine.watches.get(&req).is_none_or(|w| w.node != signer) {
            self.stats.refused += 1;
            return;
        }
        self.mine.end(req);
        self.stats.left += 1;
        self.events.push_back(NodeWatchEvent::Left {
            req,
            node: signer,
            at: ctx.now(),
        });
    }

    /// Renewals, unanswered watches and probes whose time has come.
    pub(crate) fn on_deadlines(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        let due: Vec<u64> = self
            .mine
            .watches
            .iter()
            .filter(|(_, w)| w.next_deadline().is_some_and(|t| t <= now))
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(w) = self.mine.watches.get_mut(&req) else {
                continue;
            };
            if let Some(p) = w.probe.as_mut() {
                if p.deadline <= now {
                    let p = *p;
                    let node = w.node;
                    self.mine.end(req);
                    self.stats.failed += 1;
                    self.events.push_back(NodeWatchEvent::Failed {
                        req,
                        node,
                        reported_by: p.reported_by,
                        suspected_at: p.started,
                        at: now,
                    });
                    continue;
                }
                if p.resend_at.is_some_and(|t| t <= now) {
                    p.resend_at = None;
                    let (node, nonce) = (w.node, p.nonce);
                    send_probe(ctx, node, nonce);
                }
            }
            let Some(w) = self.mine.watches.get_mut(&req) else {
                continue;
            };
            if w.ack_due.is_some_and(|t| t <= now) {
                // The watched node did not acknowledge in time: see for ourselves.
                w.ack_due = None;
                self.start_probe(ctx, req, None);
            }
            let Some(w) = self.mine.watches.get_mut(&req) else {
                continue;
            };
            if w.pending.is_some() && w.quiet_until <= now && w.probe.is_none() {
                let by = w.pending.take().flatten();
                self.start_probe(ctx, req, by);
            }
            if self
                .mine
                .watches
                .get(&req)
                .is_some_and(|w| w.renew_at <= now)
            {
                self.send_watch(ctx, req);
            }
        }
    }
}

/// Probes `node` both ways: straight, and through the ring signed by this node (answered the
/// same way), so that a path broken only between the two does not look like a failure.
fn send_probe<P: PeerId>(ctx: &mut Context<'_, P>, node: P, nonce: u64) {
    let msg = encode(&Wire::<P>::Probe { nonce }, &[]);
    ctx.send(node, msg.clone());
    let sealed = ctx.seal(node.ring_id(), Some(node), msg);
    ctx.route(sealed);
}
