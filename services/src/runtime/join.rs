//! Joining: before the join request (which carries this node's contact) goes out, the node
//! connects to its bootstrap and waits, briefly, to learn its external address and the UPnP
//! gateway's answer. Each step is reported to subscribers ([`JoinStep`]); a join ends early
//! when the bootstrap cannot be reached at any of the ticket's addresses, or refuses this node
//! because another process with its key is connected to it.

use super::Actor;
use crate::error::{ConnectError, JoinError};
use crate::event::{JoinStep, NodeEvent};
use crate::id::OverlayId;
use crate::ticket::Ticket;
use p2ps_overlay::Contact;
use p2ps_transport::{CloseCode, DisconnectReason, MappingState, NodeId};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::info;

/// Longest wait, before a join, for the bootstrap connection, the first report of our external
/// address and the UPnP gateway's answer.
const JOIN_SETTLE: Duration = Duration::from_secs(3);

impl Actor {
    /// The join request carries this node's contact, which the ring then passes around: first
    /// learn what to put in it. Connects to the bootstrap node and waits (bounded by
    /// [`JOIN_SETTLE`]) for the first report of our external address and for the UPnP
    /// gateway's answer, then [`Actor::start_join`] runs.
    pub(super) fn settle_before_join(&mut self, ticket: &Ticket) {
        let t = self.transport.clone();
        let boot = ticket.id;
        let addrs = ticket.addrs.clone();
        self.join_connected = false;
        self.join_dial_error = None;
        self.join_requests = 0;
        self.join_step(JoinStep::Dialing {
            via: boot,
            addrs: addrs.clone(),
        });
        let mut reach = t.watch_reachability();
        let mapping = self.nat.mapper.as_ref().map(|m| m.watch());
        let ready = self.join_ready.0.clone();
        tokio::spawn(async move {
            let settle = async {
                if !addrs.is_empty() && t.connect_addrs(boot, addrs).await.is_ok() {
                    let _ = reach.wait_for(|s| s.reporters > 0).await;
                }
                if let Some(mut m) = mapping {
                    let _ = m.wait_for(|s| !matches!(s, MappingState::Searching)).await;
                }
            };
            let _ = tokio::time::timeout(JOIN_SETTLE, settle).await;
            let _ = ready.send(()).await;
        });
    }

    /// Sends the join request, with the addresses and relay hint learnt meanwhile.
    pub(super) fn start_join(&mut self) {
        let Some((ticket, reply)) = self.settling.take() else {
            return;
        };
        self.update_reachability();
        let now = self.now();
        let contact = Contact {
            addrs: ticket.addrs,
            ..Contact::bare(OverlayId(ticket.id))
        };
        match self.overlay.join(now, contact) {
            Ok(()) => {
                self.join_connected |= self.transport.path(ticket.id).is_some();
                self.join = Some((ticket.id, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(JoinError::Node(e.into())));
            }
        }
    }
}

impl Actor {
    /// The node a join in progress (settling or waiting for its answer) goes through.
    pub(super) fn join_via(&self) -> Option<NodeId> {
        match (&self.settling, &self.join) {
            (Some((t, _)), _) => Some(t.id),
            (None, Some((via, _))) => Some(*via),
            (None, None) => None,
        }
    }

    /// Tells subscribers how far the join has come.
    pub(super) fn join_step(&self, step: JoinStep) {
        info!(?step, "joining");
        let _ = self.subscribers.send(NodeEvent::Joining(step));
    }

    /// The overlay sent join request `attempt` of `of`.
    pub(super) fn join_requested(&mut self, attempt: u32, of: u32) {
        self.join_requests = attempt;
        self.join_step(JoinStep::Requested { attempt, of });
    }

    /// A connection to `peer` at `addr` came up: progress if it is the join's bootstrap.
    pub(super) fn join_link_up(&mut self, peer: NodeId, addr: SocketAddr) {
        if self.join_via() == Some(peer) && !self.join_connected {
            self.join_connected = true;
            self.join_step(JoinStep::Connected { via: peer, addr });
        }
    }

    /// A dial to `peer` failed. If it is the join's bootstrap and no connection to it was ever
    /// made, every address of the ticket was tried (the transport races them): the join ends
    /// now rather than after every request timed out. `retrying`: the NAT fallback took over.
    pub(super) fn join_dial_failed(&mut self, peer: NodeId, error: ConnectError, retrying: bool) {
        if self.join_via() != Some(peer) {
            return;
        }
        if self.join_connected || retrying {
            self.join_dial_error = Some(error);
            return;
        }
        let attempts = self.join_requests;
        self.fail_join(JoinError::Unreachable {
            attempts,
            source: Some(error),
        });
    }

    /// The connection to `peer` closed: if the join's bootstrap refused this node because its
    /// id is in use, the join ends now.
    pub(super) fn join_link_down(&mut self, peer: NodeId, reason: &DisconnectReason) {
        let refused = matches!(
            reason,
            DisconnectReason::Remote {
                code: CloseCode::IdInUse,
                ..
            }
        );
        if refused && self.join_via() == Some(peer) {
            let id = self.transport.node_id();
            self.fail_join(JoinError::IdInUse { id, via: peer });
        }
    }

    /// Ends the join in progress with `err`: the overlay stops asking, the caller gets `err`.
    fn fail_join(&mut self, err: JoinError) {
        let reply = match (self.settling.take(), self.join.take()) {
            (Some((_, r)), _) | (None, Some((_, r))) => r,
            (None, None) => return,
        };
        let _ = reply.send(Err(err));
        if self.overlay.state() == p2ps_overlay::State::Joining {
            // JoinFailed follows from the overlay.
            let now = self.now();
            self.overlay.abandon_join(now);
        } else {
            let _ = self.subscribers.send(NodeEvent::JoinFailed);
        }
    }
}
