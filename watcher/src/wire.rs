//! What watchers, watched nodes and their neighbours send each other.
//!
//! `Watch`, `Unwatch`, routed `Probe`s and routed `Alive`s travel in envelopes signed by their
//! origin; `Replica` and `Leaving` carry another node's signed envelope one hop; the rest go
//! one hop over an authenticated link, so their sender is known but their content is only the
//! sender's word.

use p2ps_overlay::PeerId;
use serde::{Deserialize, Serialize};

/// Names of the message kinds, by variant index, for traffic counters.
pub const KINDS: &[&str] = &[
    "watch-watch",
    "watch-unwatch",
    "watch-held",
    "watch-replica",
    "watch-suspect",
    "watch-probe",
    "watch-alive",
    "watch-leaving",
    "watch-left",
];

/// The watcher's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Wire<P: PeerId> {
    /// Routed to the watched node (addressed to it), signed by the watcher: hold watch `req`
    /// for `lease_ms`, or renew it.
    Watch {
        /// The watcher's watch id.
        req: u64,
        /// How long to hold it without renewal, in milliseconds (capped by the holder).
        lease_ms: u32,
    },
    /// Routed to the watched node, signed by the watcher: watch `req` ends.
    Unwatch {
        /// The watch id.
        req: u64,
    },
    /// Watched node to watcher, one hop: watch `req` is held (the watched node is alive).
    Held {
        /// The watch id.
        req: u64,
    },
    /// Watched node to a ring neighbour, one hop: the carried envelope is a watcher's signed
    /// `Watch` of the sender; report its failure to that watcher.
    Replica,
    /// A holder to the watcher, one hop: the watched node of `req` is taken for dead here. Only
    /// a hint: the watcher probes before it believes it.
    Suspect {
        /// The watch id.
        req: u64,
        /// The node the holder took for dead.
        watched: P,
    },
    /// Are you alive? One hop, or routed to the watched node signed by the watcher.
    Probe {
        /// The probe's number, to be echoed.
        nonce: u64,
    },
    /// Answer to a probe: one hop back, or routed to the watcher signed by the watched node.
    Alive {
        /// The probe's number.
        nonce: u64,
    },
    /// Watched node to watcher, one hop: the carried envelope is the watched node's signed
    /// `Left`.
    Leaving,
    /// Inside an envelope signed by the watched node: it leaves the network; watch `req` ends.
    Left {
        /// The watch id.
        req: u64,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p2ps_overlay::service::{decode, encode};
    use p2ps_overlay::sim::SimId;

    #[test]
    fn kinds_name_every_variant_in_order() {
        let all: Vec<Wire<SimId>> = vec![
            Wire::Watch {
                req: 1,
                lease_ms: 2,
            },
            Wire::Unwatch { req: 1 },
            Wire::Held { req: 1 },
            Wire::Replica,
            Wire::Suspect {
                req: 1,
                watched: SimId(3),
            },
            Wire::Probe { nonce: 1 },
            Wire::Alive { nonce: 1 },
            Wire::Leaving,
            Wire::Left { req: 1 },
        ];
        assert_eq!(all.len(), KINDS.len());
        for (i, w) in all.iter().enumerate() {
            let b = encode(w, &[]);
            assert_eq!(b[0] as usize, i, "{w:?} is kind {}", KINDS[i]);
            assert_eq!(&decode::<Wire<SimId>>(&b).unwrap().0, w);
        }
    }
}
