//! The census's side of the actor: the figures the sans-IO service cannot see itself (NAT
//! class, versions, load, dictionary keys and bytes), refreshed every [`REFRESH`] and before
//! a census starts here, and the reports of the censuses this node started.

use super::commands::DictService;
use super::Actor;
use crate::error::NodeError;
use crate::id::OverlayId;
use crate::status::Reachability;
use p2ps_census::{Census, CensusEvent, CensusExt, Figures, NatClass, Report, Version};
use p2ps_overlay::service::{Emits, Service};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often the census is told this node's figures.
pub(super) const REFRESH: Duration = Duration::from_secs(2);

/// Where the report of a census goes.
pub(crate) type CensusReply = oneshot::Sender<Result<Report, NodeError>>;

/// The census's name for a NAT class as the node's status gives it.
fn nat_class(r: Reachability) -> NatClass {
    match r {
        Reachability::Public => NatClass::Public,
        Reachability::PortMapped => NatClass::PortMapped,
        Reachability::Cone => NatClass::Cone,
        Reachability::Symmetric => NatClass::Symmetric,
        _ => NatClass::Unknown,
    }
}

impl Actor {
    /// Tells the census this node's figures as they are now.
    pub(super) fn refresh_census_figures(&mut self) {
        let ts = self.transport.stats();
        let handled: u64 = ts
            .classes
            .iter()
            .map(|c| c.messages_in + c.messages_out)
            .sum();
        let (last, at) = self.load_mark;
        let secs = at.elapsed().as_secs_f64();
        let load = if secs > 0.0 {
            (handled.saturating_sub(last) as f64 / secs).round() as u32
        } else {
            0
        };
        self.load_mark = (handled, Instant::now());
        let (keys, bytes) = self
            .overlay
            .service::<DictService>()
            .map(|d| {
                let c = d.counters();
                let get = |k: &str| c.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
                (get("keys"), get("bytes"))
            })
            .unwrap_or((0, 0));
        let figures = Figures {
            nat: nat_class(self.transport.reachability().class.into()),
            version: Version::new(self.protocol_version, env!("CARGO_PKG_VERSION")),
            load,
            keys,
            bytes,
        };
        self.overlay.set_census_figures(figures);
    }

    /// Starts a census of every node asking for up to `rows` rows.
    pub(super) fn start_census(&mut self, rows: u32, reply: CensusReply) {
        self.refresh_census_figures();
        let now = self.now();
        match self.overlay.census(now, rows) {
            Ok(seq) => {
                self.censuses.insert(seq, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Hands the reports of finished censuses to whoever waits for them.
    pub(super) fn drain_census(&mut self) {
        let Some(c) = self.overlay.service_mut::<Census<OverlayId>>() else {
            return;
        };
        while let Some(e) = c.poll_event() {
            if let CensusEvent::Done(o) = e {
                if let Some(reply) = self.censuses.remove(&o.seq) {
                    let _ = reply.send(Ok(Report::new(&o, |id| id.0.to_string())));
                }
            }
        }
    }
}
