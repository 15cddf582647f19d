//! Joining: before the join request (which carries this node's contact) goes out, the node
//! connects to its bootstrap and waits, briefly, to learn its external address and the UPnP
//! gateway's answer.

use super::Actor;
use crate::error::JoinError;
use crate::id::OverlayId;
use crate::ticket::Ticket;
use p2ps_overlay::Contact;
use p2ps_transport::MappingState;
use std::time::Duration;

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
        let addr = ticket.addrs.first().copied();
        let mut reach = t.watch_reachability();
        let mapping = self.nat.mapper.as_ref().map(|m| m.watch());
        let ready = self.join_ready.0.clone();
        tokio::spawn(async move {
            let settle = async {
                if let Some(a) = addr {
                    if t.connect(boot, a).await.is_ok() {
                        let _ = reach.wait_for(|s| s.reporters > 0).await;
                    }
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
                self.join_dial_error = None;
                self.join_connected = self.transport.path(ticket.id).is_some();
                self.join = Some((ticket.id, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(JoinError::Node(e.into())));
            }
        }
    }
}
