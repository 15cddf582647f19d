//! The services' side of the actor: what the standard services (plain messages, casts,
//! groups) have for the application goes to the inbox, the commands waiting for it and the
//! subscribers; what a user's service emits goes to its handle.

use super::Actor;
use crate::delivery::{Delivery, Via};
use crate::event::NodeEvent;
use crate::id::OverlayId;
use crate::report::{CastReport, GroupReport};
use p2ps_overlay::cast::Casts;
use p2ps_overlay::groups::Groups;
use p2ps_overlay::messaging::Messaging;
use p2ps_overlay::service::Emits;
use p2ps_overlay::standard::{self, StandardEvent, Via as StandardVia};
use p2ps_transport::log_limit::LogLimit;
use std::time::Duration;
use tracing::{debug, warn};

/// The interval of the log budgets of lines peers can cause.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Actor {
    /// Takes what the standard services have for the application: deliveries go to the
    /// inbox, reports to the commands waiting for them, group events to subscribers.
    pub(super) fn drain_services(&mut self) {
        for drain in &mut self.drainers {
            drain(&mut self.overlay);
        }
        let mut gone = Vec::new();
        if let Some(d) = self.overlay.service_mut::<super::commands::DictService>() {
            while let Some(e) = d.poll_event() {
                match e {
                    p2ps_dict::DictEvent::Changed { req, record } => {
                        let Some(tx) = self.dict_watchers.get(&req) else {
                            continue;
                        };
                        match tx.try_send(record) {
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                                gone.push(req)
                            }
                            Err(_) => self.counters.inbox_dropped += 1,
                            Ok(()) => {}
                        }
                    }
                    p2ps_dict::DictEvent::Put { req, .. }
                    | p2ps_dict::DictEvent::Got { req, .. }
                    | p2ps_dict::DictEvent::Replicas { req, .. } => {
                        if let Some(reply) = self.dict_waiting.remove(&req) {
                            let _ = reply.send(Ok(e));
                        }
                    }
                }
            }
            if let Some(e) = d.take_storage_error() {
                // The request it failed was refused with a storage error; the node goes on.
                warn!(error = %crate::error::chain_line(&e), "dictionary store failed");
            }
        }
        self.drain_node_watches();
        for req in gone {
            // The watcher went away without a word.
            self.dict_watchers.remove(&req);
            let now = self.now();
            self.overlay
                .command::<super::commands::DictService, _>(now, |d, ctx| d.unwatch(ctx, req));
        }
        self.drain_census();
        let mut events = Vec::new();
        standard::drain(&mut self.overlay, &mut events);
        let mut out = Vec::new();
        let mut done = Vec::new();
        let mut counted = Vec::new();
        let mut dropped = Vec::new();
        for e in events {
            match e {
                StandardEvent::Delivered {
                    origin,
                    key,
                    hops,
                    via,
                    payload,
                } => {
                    let via = match via {
                        StandardVia::Node => Via::Node,
                        StandardVia::Broadcast => Via::Broadcast,
                        StandardVia::Range { lo, hi } => Via::Range { lo, hi },
                        StandardVia::Group(g) => Via::Group(
                            self.group_names
                                .get(&g)
                                .cloned()
                                .unwrap_or_else(|| g.to_string()),
                        ),
                        // Routed to `key` either way: a newer way of addressing still reached
                        // this node through its key.
                        _ => Via::Key,
                    };
                    out.push(Delivery {
                        from: origin.0,
                        key,
                        hops,
                        via,
                        payload,
                    });
                }
                StandardEvent::CastDone {
                    seq,
                    delivered,
                    complete,
                } => done.push(CastReport {
                    seq,
                    delivered: delivered.unwrap_or(0),
                    complete,
                }),
                StandardEvent::GroupChildDropped { group, peer } => dropped.push((group, peer.0)),
                StandardEvent::GroupCounted {
                    seq,
                    members,
                    complete,
                    ..
                } => counted.push(GroupReport {
                    seq,
                    members,
                    complete,
                }),
                other => {
                    debug!(event = ?other, "standard service event this runtime does not know")
                }
            }
        }
        for m in out {
            if self.inbox.try_send(m).is_err() {
                self.counters.inbox_dropped += 1;
                // Peers decide how much arrives: one line per interval, the rest counted.
                static LOG: LogLimit = LogLimit::new(LOG_INTERVAL, 1, 1);
                if let Some(suppressed) = LOG.check(()) {
                    warn!(suppressed, "application inbox full: message dropped");
                }
            }
        }
        for report in done {
            if let Some(reply) = self.casts.remove(&report.seq) {
                let _ = reply.send(Ok(report));
            }
        }
        for report in counted {
            if let Some(reply) = self.group_sends.remove(&report.seq) {
                let _ = reply.send(Ok(report));
            }
        }
        for (group, peer) in dropped {
            static LOG: LogLimit<p2ps_transport::NodeId> = LogLimit::new(LOG_INTERVAL, 10, 3);
            if let Some(suppressed) = LOG.check(peer) {
                warn!(peer = %peer.short(), %group, suppressed, "slow child dropped from a group tree");
            }
            let _ = self
                .subscribers
                .send(NodeEvent::GroupChildDropped { group, peer });
        }
    }
    /// Hands the watcher's events to the watches of nodes they belong to; a watch whose
    /// application went away is stopped.
    fn drain_node_watches(&mut self) {
        let mut gone = Vec::new();
        if let Some(w) = self
            .overlay
            .service_mut::<super::commands::WatcherService>()
        {
            while let Some(e) = w.poll_event() {
                let (req, ended) = match &e {
                    p2ps_watcher::NodeWatchEvent::Watching { req, .. } => (*req, false),
                    p2ps_watcher::NodeWatchEvent::Failed { req, .. }
                    | p2ps_watcher::NodeWatchEvent::Left { req, .. } => (*req, true),
                };
                let Some(tx) = self.node_watchers.get(&req) else {
                    continue;
                };
                match tx.try_send(crate::node_watch::NodeWatchEvent::from_service(e)) {
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => gone.push(req),
                    Err(_) => self.counters.inbox_dropped += 1,
                    Ok(()) => {}
                }
                if ended {
                    // The watch is over; the receiver still gets what was sent.
                    self.node_watchers.remove(&req);
                }
            }
        }
        for req in gone {
            self.node_watchers.remove(&req);
            let now = self.now();
            self.overlay
                .command::<super::commands::WatcherService, _>(now, |w, ctx| w.unwatch(ctx, req));
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
