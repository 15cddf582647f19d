//! A discrete-event simulator that drives the real [`Node`](crate::Node) state machine.
//!
//! Nodes live in a `Vec` indexed by small integers ([`SimId`]); one priority queue orders
//! `(time, sequence)` events (FIFO for equal times); a seeded RNG decides churn, loss and
//! workload, so a run is reproducible from its seed. Message sizes are counted with the real
//! postcard codec. [`stable`] is the fast path for hop statistics at 100 000 – 1 000 000 nodes:
//! it builds every node's exact routing table directly from the sorted ring (the same
//! [`RoutingTable`](crate::RoutingTable) type and next-hop code the protocol uses) instead of
//! replaying joins. [`adversary`] makes some nodes hostile: the engine hands it what they send
//! and what reaches them, and it drops, answers or lies in their stead.

pub mod adversary;
pub mod engine;
pub mod ideal;
pub mod latency;
pub mod queue;
pub mod stable;
pub mod summary;

use crate::peer::PeerId;
use crate::proof::StandInProof;
use crate::ring::RingId;
use crate::rng::mix64;
use serde::{Deserialize, Serialize};

pub use adversary::{Adversary, Behaviour, Placement};
pub use engine::{
    CastResult, Counters, Delivery, GroupCount, Sent, SimConfig, SimReport, Simulator, Traffic,
    Via, Workload,
};
pub use latency::LatencyModel;
pub use summary::Summary;

/// A simulated node's identity: the node's index in the simulator (low 32 bits) and a
/// per-run salt (high 32 bits), so that two seeds give two different rings. Another salt puts
/// the same node elsewhere on the ring: [`adversary`] grinds hostile ids that way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SimId(pub u64);

impl SimId {
    /// The identity of node `index` in a run salted with `salt`.
    pub fn new(index: u32, salt: u32) -> SimId {
        SimId(((salt as u64) << 32) | index as u64)
    }

    /// The node's index in the simulator.
    pub fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

impl PeerId for SimId {
    type Proof = StandInProof;

    fn verify(&self, msg: &[u8], proof: &StandInProof) -> bool {
        StandInProof::of(self, msg) == *proof
    }

    fn ring_id(&self) -> RingId {
        let hi = mix64(self.0);
        let lo = mix64(self.0 ^ 0xA5A5_5A5A_DEAD_BEEF);
        RingId(((hi as u128) << 64) | lo as u128)
    }
}
