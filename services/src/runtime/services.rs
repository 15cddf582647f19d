//! The services' side of the actor: what the standard services (plain messages, casts,
//! groups) have for the application goes to the inbox, the commands waiting for it and the
//! subscribers; what a user's service emits goes to its handle.

use super::Actor;
use crate::delivery::{Delivery, Via};
use crate::event::NodeEvent;
use crate::id::OverlayId;
use crate::report::CastReport;
use p2ps_overlay::cast::{CastEvent, CastKind, Casts};
use p2ps_overlay::groups::{GroupEvent, Groups};
use p2ps_overlay::messaging::{Addressed, Messaging};
use p2ps_overlay::service::Emits;
use tracing::{debug, warn};

impl Actor {
    /// Takes what the standard services have for the application: deliveries go to the
    /// inbox, reports to the commands waiting for them, group events to subscribers.
    pub(super) fn drain_services(&mut self) {
        for drain in &mut self.drainers {
            drain(&mut self.overlay);
        }
        if let Some(d) = self.overlay.service_mut::<super::commands::DictService>() {
            while let Some(e) = d.poll_event() {
                let req = match &e {
                    p2ps_dict::DictEvent::Put { req, .. }
                    | p2ps_dict::DictEvent::Got { req, .. } => *req,
                };
                if let Some(reply) = self.dict_waiting.remove(&req) {
                    let _ = reply.send(Ok(e));
                }
            }
            if let Some(e) = d.take_storage_error() {
                // The request it failed was refused with a storage error; the node goes on.
                warn!(error = %crate::error::chain_line(&e), "dictionary store failed");
            }
        }
        let mut out = Vec::new();
        if let Some(m) = self.overlay.service_mut::<Messaging<OverlayId>>() {
            while let Some(d) = m.poll_event() {
                let via = match d.addressed {
                    Addressed::Node => Via::Node,
                    // Routed to `d.key` either way: a newer way of addressing still
                    // reached this node through its key.
                    Addressed::Key | _ => Via::Key,
                };
                out.push(Delivery {
                    from: d.origin.0,
                    key: d.key,
                    hops: d.hops,
                    via,
                    payload: d.payload,
                });
            }
        }
        let me = self.overlay.pos();
        let mut done = Vec::new();
        if let Some(c) = self.overlay.service_mut::<Casts<OverlayId>>() {
            while let Some(e) = c.poll_event() {
                match e {
                    CastEvent::Delivered {
                        origin,
                        kind,
                        hops,
                        payload,
                    } => {
                        let (key, via) = match kind {
                            CastKind::Broadcast => (me, Via::Broadcast),
                            CastKind::Range { lo, hi } => (lo, Via::Range { lo, hi }),
                            // A kind this runtime does not name: delivered like a broadcast
                            // rather than lost.
                            _ => (me, Via::Broadcast),
                        };
                        out.push(Delivery {
                            from: origin.0,
                            key,
                            hops,
                            via,
                            payload,
                        });
                    }
                    CastEvent::Done {
                        seq,
                        delivered,
                        complete,
                    } => done.push(CastReport {
                        seq,
                        delivered: delivered.unwrap_or(0),
                        complete,
                    }),
                    other => debug!(event = ?other, "cast event this runtime does not know"),
                }
            }
        }
        let mut dropped = Vec::new();
        if let Some(g) = self.overlay.service_mut::<Groups<OverlayId>>() {
            while let Some(e) = g.poll_event() {
                match e {
                    GroupEvent::Delivered {
                        origin,
                        group,
                        hops,
                        payload,
                    } => {
                        let name = self
                            .group_names
                            .get(&group)
                            .cloned()
                            .unwrap_or_else(|| group.to_string());
                        out.push(Delivery {
                            from: origin.0,
                            key: group,
                            hops,
                            via: Via::Group(name),
                            payload,
                        });
                    }
                    GroupEvent::ChildDropped { group, peer } => dropped.push((group, peer.0)),
                    other => debug!(event = ?other, "group event this runtime does not know"),
                }
            }
        }
        for m in out {
            if self.inbox.try_send(m).is_err() {
                self.counters.inbox_dropped += 1;
                warn!("application inbox full: message dropped");
            }
        }
        for report in done {
            if let Some(reply) = self.casts.remove(&report.seq) {
                let _ = reply.send(Ok(report));
            }
        }
        for (group, peer) in dropped {
            warn!(peer = %peer.short(), %group, "slow child dropped from a group tree");
            let _ = self
                .subscribers
                .send(NodeEvent::GroupChildDropped { group, peer });
        }
    }
    /// Payloads delivered to the application by the standard services.
    pub(super) fn delivered(&self) -> u64 {
        let messages = self
            .overlay
            .service::<Messaging<OverlayId>>()
            .map_or(0, |m| m.counts().0);
        let casts = self
            .overlay
            .service::<Casts<OverlayId>>()
            .map_or(0, |c| c.stats().delivered);
        let groups = self
            .overlay
            .service::<Groups<OverlayId>>()
            .map_or(0, |g| g.stats().delivered);
        messages + casts + groups
    }
}
