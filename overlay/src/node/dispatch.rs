//! How a node runs the services registered on it (see [`crate::service`]): registration,
//! commands, routing a service's messages with its say at every hop, and the queue of work
//! that tells services what happened.

use super::{Node, State};
use crate::message::{Body, Message, PassBack, Query, Routed, ServiceMessage};
use crate::peer::{Peer, PeerId};
use crate::routing_table::NextHop;
use crate::service::{
    Answered, Context, Forwarding, Incoming, Queried, Service, ServiceId, ServiceSummary, WayBack,
    Work,
};
use crate::time::Time;
use thiserror::Error;

/// Most pieces of work the services may cause in answer to one input: a service that keeps
/// routing messages to itself cannot hang its node.
const MAX_WORK: usize = 1 << 16;

/// Why a service could not be registered.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A service with the same id is registered already.
    #[error("a service with id {0} is registered already")]
    Duplicate(ServiceId),
}

impl<P: PeerId> Node<P> {
    /// Registers `svc` on this node: from now on its hooks run and its messages are delivered
    /// to it. Every node of a network that takes part in a service must register it.
    pub fn register(&mut self, svc: impl Service<P>) -> Result<(), RegisterError> {
        let id = svc.id();
        if self.services.add(Box::new(svc)) {
            Ok(())
        } else {
            Err(RegisterError::Duplicate(id))
        }
    }

    /// The registered service of type `S`.
    pub fn service<S: Service<P>>(&self) -> Option<&S> {
        self.services.get::<S>()
    }

    /// The registered service of type `S`, mutably (to drain what it has for its application;
    /// anything that sends must go through [`Node::command`]).
    pub fn service_mut<S: Service<P>>(&mut self) -> Option<&mut S> {
        self.services.get_mut::<S>()
    }

    /// Runs `f` on the service of type `S` with a [`Context`] at `now`, then whatever it set
    /// in motion. `None` if no such service is registered.
    pub fn command<S: Service<P>, R>(
        &mut self,
        now: Time,
        f: impl FnOnce(&mut S, &mut Context<'_, P>) -> R,
    ) -> Option<R> {
        self.now = self.now.max(now);
        let i = self.services.index_of::<S>()?;
        let r = self.with_service(i, |svc, ctx| {
            let svc: &mut dyn std::any::Any = svc;
            svc.downcast_mut::<S>().map(|s| f(s, ctx))
        })?;
        self.emit_neighbour_events();
        self.run_services();
        r
    }

    /// Every registered service with its counters, in the order they were registered.
    pub fn services(&self) -> Vec<ServiceSummary> {
        self.services.summaries()
    }

    /// The name of a message's kind, for counters: the core's [`Message::kind`], or the name
    /// the message's service gives it ([`Service::kinds`]).
    pub fn kind_of(&self, msg: &Message<P>) -> &'static str {
        let (service, data) = match msg {
            Message::Service(m) => (m.service, &m.data),
            Message::PassBack(m) => (m.service, &m.data),
            Message::Query(q) => (q.service, &q.data),
            Message::Routed(r) => match &r.sealed.env.body {
                Body::Service { service, data, .. } => (*service, data),
                _ => return msg.kind(),
            },
            _ => return msg.kind(),
        };
        self.services
            .kind(service, data.first().copied())
            .unwrap_or("service")
    }

    /// The driver could not queue traffic for `peer` (its queue is full): the services are
    /// told, so that a slow tree neighbour can be dropped.
    pub fn handle_congestion(&mut self, now: Time, peer: P) {
        self.now = self.now.max(now);
        self.services.work.push_back(Work::Congested(peer));
        self.run_services();
    }

    /// Whether `peer` was found dead lately.
    pub(crate) fn is_buried(&self, peer: &P) -> bool {
        self.tombstones.contains_key(peer)
    }

    /// A one-hop service message from `from` (its envelope, if any, already checked).
    pub(super) fn on_service_message(&mut self, from: P, m: ServiceMessage<P>) {
        if self.state != State::Joined {
            return;
        }
        let incoming = Incoming {
            from,
            data: m.data,
            sealed: m.sealed.map(|s| *s),
        };
        self.services
            .work
            .push_back(Work::Receive(m.service, incoming));
    }

    /// A service's answer at this node: from its answerer (`from` is `None`) or handed over
    /// by `from`. Taken here if it is for this node; else passed to its addressee if linked,
    /// else to the last node of its trail that is linked. The answerer itself, with nobody
    /// linked, sends it straight (a new connection); a node passing it on drops it then: it
    /// opens no connection for a message someone else made.
    pub(crate) fn pass_service_answer(&mut self, from: Option<P>, mut m: PassBack<P>) {
        if m.trail.len() > self.cfg.max_hops as usize {
            self.stats.dropped += 1;
            return;
        }
        if m.to == self.me.id {
            let answered = Answered {
                via: from.unwrap_or(self.me.id),
                data: m.data,
            };
            self.services
                .work
                .push_back(Work::Answered(m.service, answered));
            return;
        }
        if m.retrace {
            // Exactly back the way the query came: the last node of the trail, or at its end
            // the origin, over a link this node has; nowhere else.
            let next = m.trail.pop().unwrap_or(m.to);
            if next != self.me.id && Some(next) != from && self.links.contains_key(&next) {
                return self.push_send(next, Message::PassBack(m));
            }
            self.stats.dropped += 1;
            return;
        }
        if !self.links.contains_key(&m.to) {
            while let Some(p) = m.trail.pop() {
                if p != self.me.id && p != m.to && Some(p) != from && self.links.contains_key(&p) {
                    return self.push_send(p, Message::PassBack(m));
                }
            }
            if from.is_some() {
                self.stats.dropped += 1;
                return;
            }
        }
        m.trail.clear();
        let to = m.to;
        self.push_send(to, Message::PassBack(m));
    }

    /// A query from `from`: it goes on with `from` written into its trail (the sender's word
    /// for the nodes before it is all the trail has, and the answer retraces it).
    pub(super) fn on_query(&mut self, from: P, mut q: Query<P>) {
        if self.state != State::Joined {
            return;
        }
        let max = self.cfg.max_hops;
        if q.hops >= max || q.trail.len() >= max as usize {
            self.stats.dropped += 1;
            return;
        }
        q.trail.push(from);
        self.services.work.push_back(Work::Query(q));
    }

    /// A service's query is at this node: offered to the service on its way, handed to it
    /// here if this node is responsible for its key, else passed on.
    fn route_query(&mut self, mut q: Query<P>) {
        if self.state != State::Joined {
            return;
        }
        let Some(i) = self.services.index(q.service) else {
            self.stats.dropped += 1;
            return;
        };
        let hop = self.table.next_hop(q.key);
        let mut trail = std::mem::take(&mut q.trail);
        let to = if trail.is_empty() {
            self.me.id
        } else {
            trail.remove(0)
        };
        let queried = Queried {
            key: q.key,
            hops: q.hops,
            back: WayBack {
                to,
                trail,
                retrace: true,
            },
            data: q.data,
        };
        match hop {
            Some(NextHop::Local) => {
                self.with_service(i, |s, ctx| s.query(ctx, queried));
            }
            Some(NextHop::Forward(p)) => {
                let taken = self.with_service(i, |s, ctx| s.query_passing(ctx, &queried, p.id));
                if taken == Some(Forwarding::Consumed) {
                    return;
                }
                if q.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                    return;
                }
                let mut trail = queried.back.trail;
                if queried.back.to != self.me.id {
                    trail.insert(0, queried.back.to);
                }
                self.stats.forwarded += 1;
                let q = Query {
                    hops: q.hops + 1,
                    trail,
                    data: queried.data,
                    ..q
                };
                self.push_send(p.id, Message::Query(q));
            }
            None => self.stats.dropped += 1,
        }
    }

    /// Lends service `i` to `f` with a context; `None` if it is running already.
    fn with_service<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn Service<P>, &mut Context<'_, P>) -> R,
    ) -> Option<R> {
        let mut svc = self.services.take(i)?;
        let service = self.services.id_at(i);
        let class = svc.class();
        let r = {
            let mut ctx = Context {
                node: self,
                service,
                class,
            };
            f(&mut *svc, &mut ctx)
        };
        self.services.put(i, svc);
        Some(r)
    }

    /// Every service, in turn.
    fn each_service(&mut self, mut f: impl FnMut(&mut dyn Service<P>, &mut Context<'_, P>)) {
        for i in 0..self.services.len() {
            self.with_service(i, &mut f);
        }
    }

    /// Tells the services what happened, until nothing is left to tell.
    pub(super) fn run_services(&mut self) {
        let mut budget = MAX_WORK;
        while let Some(work) = self.services.work.pop_front() {
            if budget == 0 {
                self.stats.dropped += 1 + self.services.work.len() as u64;
                self.services.work.clear();
                break;
            }
            budget -= 1;
            match work {
                Work::Route(r) => self.route_service(r),
                Work::Query(q) => self.route_query(q),
                Work::Receive(id, msg) => match self.services.index(id) {
                    Some(i) => {
                        self.with_service(i, |s, ctx| s.receive(ctx, msg));
                    }
                    None => self.stats.dropped += 1,
                },
                Work::Answered(id, msg) => match self.services.index(id) {
                    Some(i) => {
                        self.with_service(i, |s, ctx| s.answered(ctx, msg));
                    }
                    None => self.stats.dropped += 1,
                },
                Work::Neighbours(change) => {
                    if !change.up.is_empty() || !change.down.is_empty() {
                        self.each_service(|s, ctx| s.neighbours(ctx, &change));
                    }
                }
                Work::PeerFailed(p) => self.each_service(|s, ctx| s.peer_failed(ctx, p)),
                Work::Congested(p) => self.each_service(|s, ctx| s.congested(ctx, p)),
            }
        }
    }

    /// Runs the timers of the services that are due.
    pub(super) fn services_timeouts(&mut self, now: Time) {
        for i in 0..self.services.len() {
            let due = self.services.deadline_at(i).is_some_and(|t| t <= now);
            if due {
                self.with_service(i, |s, ctx| s.handle_timeout(ctx));
            }
        }
    }

    /// The node leaves: every service has its last words, then its queued work runs.
    pub(super) fn services_leave(&mut self) {
        if self.state == State::Joined {
            self.each_service(|s, ctx| s.leave(ctx));
            self.run_services();
        }
        self.services.work.clear();
    }

    /// A service's routed message is at this node: delivered here if this node is responsible
    /// (or is its addressee), else offered to the service and passed on.
    fn route_service(&mut self, mut r: Routed<P>) {
        if self.state != State::Joined {
            return;
        }
        let Body::Service {
            service, target, ..
        } = &r.sealed.env.body
        else {
            return;
        };
        let (service, target) = (*service, *target);
        let slot = self.services.index(service);
        // A send to a node we know directly skips the rest of the route.
        let hop = match target {
            Some(t) if t == self.me.id => Some(NextHop::Local),
            Some(t) if self.table.contains(&t) => Some(NextHop::Forward(Peer::new(t))),
            _ => self.table.next_hop(r.key()),
        };
        match hop {
            Some(NextHop::Local) => {
                if target.is_some_and(|t| t != self.me.id) {
                    // Addressed to a node that is not here.
                    self.stats.dropped += 1;
                    return;
                }
                match slot {
                    Some(i) => {
                        if self.origin_checked(&mut r) {
                            self.with_service(i, |s, ctx| s.deliver(ctx, r));
                        }
                    }
                    None => self.stats.dropped += 1,
                }
            }
            Some(NextHop::Forward(p)) => {
                // Only a service that looks at what passes through sees it, checked.
                if let Some(i) = slot.filter(|i| self.services.inspects_forwarded(*i)) {
                    if !self.origin_checked(&mut r) {
                        return;
                    }
                    let taken = self.with_service(i, |s, ctx| s.forward(ctx, &r, p.id));
                    if taken == Some(Forwarding::Consumed) {
                        return;
                    }
                }
                if r.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                } else {
                    r.hops += 1;
                    self.forward(p.id, r);
                }
            }
            None => self.stats.dropped += 1,
        }
    }
}
