//! Commands from the application's handles, carried out by the actor.

use super::Actor;
use crate::error::{JoinError, LookupError, NodeError};
use crate::id::{group_key, ring_id_of, OverlayId};
use crate::report::{CastReport, GroupReport, LookupResult};
use crate::status::Status;
use crate::ticket::Ticket;
use bytes::Bytes;
use p2ps_overlay::cast::CastExt;
use p2ps_overlay::groups::{ClosedGroup, GroupExt, GroupSecret};
use p2ps_overlay::messaging::MessagingExt;
use p2ps_overlay::{Node as Overlay, RingId, State, Time};
use p2ps_transport::NodeId;
use tokio::sync::{mpsc, oneshot};

/// What waits for a lookup's answer.
pub(crate) enum Waiting {
    /// The application's lookup.
    Lookup(oneshot::Sender<Result<LookupResult, LookupError>>),
    /// A send to a node this one does not know: it goes once a lookup of the addressee's
    /// position names the addressee; otherwise the sender is told that no such node is there.
    Send {
        to: NodeId,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// The dictionary of a node, in memory or on disk as its configuration says.
pub(crate) type DictService = p2ps_dict::Dict<OverlayId, p2ps_dict::NodeStore<OverlayId>>;

/// Starts a dictionary request; its request id, or why it could not start.
pub(crate) type DictCall = Box<
    dyn FnOnce(
            &mut DictService,
            &mut p2ps_overlay::service::Context<'_, OverlayId>,
        ) -> Result<u64, p2ps_dict::DictError>
        + Send,
>;

/// Where the end of a dictionary request goes.
pub(crate) type DictReply = oneshot::Sender<Result<p2ps_dict::DictEvent<OverlayId>, NodeError>>;

/// The node watcher of a node.
pub(crate) type WatcherService = p2ps_watcher::Watcher<OverlayId>;

/// A command of a registered service, run on the overlay at a time.
pub(crate) type ServiceCall = Box<dyn FnOnce(&mut Overlay<OverlayId>, Time) + Send>;

pub(crate) enum Command {
    /// Runs on the overlay (a command of a registered service, see `ServiceHandle`).
    Service(ServiceCall),
    /// Starts a dictionary request, answered when it ends.
    Dict(DictCall, DictReply),
    /// Starts watching a key: changes go to the sender; the watch id is the answer.
    DictWatch(
        DictCall,
        mpsc::Sender<Option<p2ps_dict::Record<OverlayId>>>,
        oneshot::Sender<Result<u64, NodeError>>,
    ),
    /// Stops a watch.
    DictUnwatch(u64),
    /// Starts watching a node: its events go to the sender; the watch id is the answer.
    NodeWatch(
        NodeId,
        mpsc::Sender<crate::node_watch::NodeWatchEvent>,
        oneshot::Sender<Result<u64, NodeError>>,
    ),
    /// Stops a watch of a node.
    NodeUnwatch(u64),
    Broadcast(Bytes, oneshot::Sender<Result<CastReport, NodeError>>),
    Range(
        RingId,
        RingId,
        Bytes,
        oneshot::Sender<Result<CastReport, NodeError>>,
    ),
    /// Joins a group: a closed one with its secret.
    JoinGroup(
        String,
        Option<GroupSecret>,
        oneshot::Sender<Result<(), NodeError>>,
    ),
    /// Leaves a group: the closed one of this secret, else the closed one joined under that
    /// name, else the open one.
    LeaveGroup(
        String,
        Option<GroupSecret>,
        oneshot::Sender<Result<(), NodeError>>,
    ),
    /// Sends to a group, chosen as for leaving.
    SendGroup(
        String,
        Option<GroupSecret>,
        Bytes,
        oneshot::Sender<Result<GroupReport, NodeError>>,
    ),
    Create(oneshot::Sender<Result<(), NodeError>>),
    Join(Ticket, oneshot::Sender<Result<(), JoinError>>),
    Leave(oneshot::Sender<()>),
    Lookup(RingId, oneshot::Sender<Result<LookupResult, LookupError>>),
    Route(RingId, Bytes, oneshot::Sender<Result<(), NodeError>>),
    Send(NodeId, Bytes, oneshot::Sender<Result<(), NodeError>>),
    Status(oneshot::Sender<Status>),
    /// Starts a census asking for up to this many rows, answered when it ends.
    Census(u32, super::census::CensusReply),
    Shutdown(oneshot::Sender<()>),
}

impl Actor {
    pub(super) fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Create(reply) => {
                let _ = reply.send(self.overlay.create(now).map_err(NodeError::from));
            }
            Command::Join(ticket, reply) => {
                if ticket.id == self.transport.node_id() {
                    let _ = reply.send(Err(JoinError::OwnTicket));
                    return;
                }
                if self.overlay.state() != State::Idle || self.settling.is_some() {
                    let e = p2ps_overlay::CommandError::AlreadyStarted;
                    let _ = reply.send(Err(JoinError::Node(e.into())));
                    return;
                }
                self.transport
                    .add_addresses(ticket.id, ticket.addrs.iter().copied());
                self.guess_addrs_towards(&ticket.addrs);
                if self.nat.relay.is_none() {
                    // The node we join through introduces us while we are behind a NAT.
                    self.nat.relay = Some((ticket.id, ticket.addrs.clone()));
                    self.update_reachability();
                }
                self.settle_before_join(&ticket);
                self.settling = Some((ticket, reply));
            }
            Command::Leave(reply) => {
                self.overlay.leave(now);
                let _ = reply.send(());
            }
            Command::Lookup(key, reply) => match self.overlay.lookup(now, key) {
                Ok(req) => {
                    self.lookups.insert(req, Waiting::Lookup(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(LookupError::Node(e.into())));
                }
            },
            Command::Route(key, payload, reply) => {
                let r = self.check_size(&payload).and_then(|()| {
                    self.overlay
                        .route(now, key, &payload)
                        .map_err(NodeError::from)
                });
                let _ = reply.send(r);
            }
            Command::Send(to, payload, reply) => {
                if let Err(e) = self.check_size(&payload) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let known =
                    to == self.overlay.id().0 || self.overlay.table().contains(&OverlayId(to));
                if known {
                    let r = self
                        .overlay
                        .send(now, OverlayId(to), &payload)
                        .map_err(NodeError::from);
                    let _ = reply.send(r);
                    return;
                }
                // Not a node this one knows: first ask who is responsible for its position
                // (a signed answer with its predecessor's word); send only if that is it.
                match self.overlay.lookup(now, ring_id_of(&to)) {
                    Ok(req) => {
                        self.lookups
                            .insert(req, Waiting::Send { to, payload, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Broadcast(payload, reply) => {
                self.start_cast(payload, reply, |o, p| o.broadcast(now, p, true))
            }
            Command::Range(lo, hi, payload, reply) => self.start_cast(payload, reply, |o, p| {
                o.multicast_range(now, lo, hi, p, true)
            }),
            Command::JoinGroup(name, secret, reply) => {
                let r = match secret {
                    None => {
                        let key = group_key(&name);
                        self.overlay
                            .join_group(now, key)
                            .map(|()| key)
                            .map_err(NodeError::from)
                    }
                    Some(secret) => {
                        let closed = ClosedGroup::new(&secret, &name);
                        let key = closed.id();
                        let r = self.overlay.join_closed_group(now, closed.clone());
                        if r.is_ok() {
                            self.closed_groups.insert(name.clone(), closed);
                        }
                        r.map(|()| key).map_err(NodeError::from)
                    }
                };
                let _ = reply.send(r.map(|key| {
                    self.group_names.insert(key, name);
                }));
            }
            Command::LeaveGroup(name, secret, reply) => {
                let closed = self.closed_group(&name, secret);
                let key = closed.as_ref().map_or_else(|| group_key(&name), |c| c.id());
                let r = if self.overlay.is_group_member(key) {
                    self.overlay.leave_group(now, key);
                    self.group_names.remove(&key);
                    if closed.is_some() {
                        self.closed_groups.remove(&name);
                    }
                    Ok(())
                } else {
                    Err(NodeError::NotMember(name))
                };
                let _ = reply.send(r);
            }
            Command::SendGroup(name, secret, payload, reply) => {
                let closed = self.closed_group(&name, secret);
                let r = self.check_size(&payload).and_then(|()| {
                    match &closed {
                        Some(c) => self.overlay.send_closed_group(now, c, &payload),
                        None => self.overlay.send_group(now, group_key(&name), &payload),
                    }
                    .map_err(NodeError::from)
                });
                match r {
                    Ok(seq) => {
                        self.group_sends.insert(seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Census(rows, reply) => self.start_census(rows, reply),
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Service(f) => f(&mut self.overlay, now),
            Command::Dict(f, reply) => match self.overlay.command::<DictService, _>(now, f) {
                None => {
                    let _ = reply.send(Err(NodeError::NoService));
                }
                Some(Err(e)) => {
                    let _ = reply.send(Err(e.into()));
                }
                Some(Ok(req)) => {
                    self.dict_waiting.insert(req, reply);
                }
            },
            Command::DictWatch(f, events, reply) => {
                let r = match self.overlay.command::<DictService, _>(now, f) {
                    None => Err(NodeError::NoService),
                    Some(Err(e)) => Err(e.into()),
                    Some(Ok(req)) => {
                        self.dict_watchers.insert(req, events);
                        Ok(req)
                    }
                };
                let _ = reply.send(r);
            }
            Command::DictUnwatch(req) => {
                self.dict_watchers.remove(&req);
                self.overlay
                    .command::<DictService, _>(now, |d, ctx| d.unwatch(ctx, req));
            }
            Command::NodeWatch(node, events, reply) => {
                let r = match self
                    .overlay
                    .command::<WatcherService, _>(now, |w, ctx| w.watch(ctx, OverlayId(node)))
                {
                    None => Err(NodeError::NoService),
                    Some(Err(e)) => Err(e.into()),
                    Some(Ok(req)) => {
                        self.node_watchers.insert(req, events);
                        Ok(req)
                    }
                };
                let _ = reply.send(r);
            }
            Command::NodeUnwatch(req) => {
                self.node_watchers.remove(&req);
                self.overlay
                    .command::<WatcherService, _>(now, |w, ctx| w.unwatch(ctx, req));
            }
            Command::Shutdown(_) => {}
        }
    }

    /// The closed group meant by `name` and `secret`: the one of the secret if given, else
    /// the one this node joined under that name, if any.
    fn closed_group(&self, name: &str, secret: Option<GroupSecret>) -> Option<ClosedGroup> {
        match secret {
            Some(s) => Some(ClosedGroup::new(&s, name)),
            None => self.closed_groups.get(name).cloned(),
        }
    }

    /// Starts a broadcast or range multicast; `reply` is answered when its report comes.
    pub(super) fn start_cast(
        &mut self,
        payload: Bytes,
        reply: oneshot::Sender<Result<CastReport, NodeError>>,
        start: impl FnOnce(&mut Overlay<OverlayId>, &[u8]) -> Result<u64, p2ps_overlay::CommandError>,
    ) {
        match self
            .check_size(&payload)
            .and_then(|()| start(&mut self.overlay, &payload).map_err(NodeError::from))
        {
            Ok(seq) => {
                self.casts.insert(seq, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn check_size(&self, payload: &[u8]) -> Result<(), NodeError> {
        if payload.len() > self.max_payload {
            return Err(NodeError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        Ok(())
    }
}
