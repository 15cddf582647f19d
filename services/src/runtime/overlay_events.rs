//! Events of the overlay core turned into answers for waiting commands and events for
//! subscribers.

use super::commands::Waiting;
use super::Actor;
use crate::error::{JoinError, LookupError, NodeError};
use crate::event::NodeEvent;
use crate::id::OverlayId;
use crate::report::LookupResult;
use p2ps_overlay::messaging::MessagingExt;
use p2ps_overlay::Event as OverlayEvent;
use tracing::{debug, info, warn};

impl Actor {
    /// The overlay reported `e`.
    pub(super) fn on_overlay_event(&mut self, e: OverlayEvent<OverlayId>) {
        let public = match e {
            OverlayEvent::Joined => {
                info!(id = %self.transport.node_id().short(), "joined");
                // The event before the answer: whoever awaited the join sees it already sent.
                let _ = self.subscribers.send(NodeEvent::Joined);
                if let Some((_, reply)) = self.join.take() {
                    let _ = reply.send(Ok(()));
                }
                None
            }
            OverlayEvent::JoinFailed => {
                let _ = self.subscribers.send(NodeEvent::JoinFailed);
                if let Some((_, reply)) = self.join.take() {
                    let attempts = self.overlay.config().join_attempts;
                    let err = match (self.join_dial_error.take(), self.join_connected) {
                        (_, true) => JoinError::NoAnswer { attempts },
                        (source, false) => JoinError::Unreachable { attempts, source },
                    };
                    let _ = reply.send(Err(err));
                }
                None
            }
            OverlayEvent::JoinRequested { attempt, of } => {
                self.join_requested(attempt, of);
                None
            }
            OverlayEvent::Left => Some(NodeEvent::Left),
            OverlayEvent::Isolated => {
                warn!("lost every neighbour: joining again through the nodes known");
                Some(NodeEvent::Isolated)
            }
            OverlayEvent::NeighbourUp(p) => Some(NodeEvent::NeighbourUp(p.0)),
            OverlayEvent::NeighbourDown(p) => {
                debug!(peer = %p.0.short(), path = ?self.transport.path(p.0), "neighbour down");
                Some(NodeEvent::NeighbourDown(p.0))
            }
            OverlayEvent::LookupDone { req, result, .. } => {
                let r = result.map(|(node, hops)| LookupResult { node: node.0, hops });
                match self.lookups.remove(&req) {
                    Some(Waiting::Lookup(reply)) => {
                        let _ = reply.send(r.map_err(LookupError::from));
                    }
                    Some(Waiting::Send { to, payload, reply }) => {
                        let sent = match r {
                            Ok(found) if found.node == to => self
                                .overlay
                                .send(self.now(), OverlayId(to), &payload)
                                .map_err(NodeError::from),
                            Ok(found) => Err(NodeError::NoSuchNode {
                                to,
                                responsible: found.node,
                            }),
                            Err(p2ps_overlay::LookupError::Left) => Err(NodeError::Stopped),
                            // No answer after every attempt, or a failure this version does
                            // not name: either way the addressee was not reached.
                            Err(_) => Err(NodeError::Unreachable(to)),
                        };
                        let _ = reply.send(sent);
                    }
                    None => {}
                }
                None
            }
            other => {
                debug!(event = ?other, "overlay event this runtime does not know");
                None
            }
        };
        if let Some(ev) = public {
            // No subscriber is fine.
            let _ = self.subscribers.send(ev);
        }
    }
}
