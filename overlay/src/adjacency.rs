//! Adjacency proofs: a node's signed word that another node follows it on the ring.
//!
//! The node responsible for a key is the first node at or after it. A lookup answer signed by
//! the responder proves only that the responder said so: any node on a route could claim to
//! be responsible for a key it merely saw pass. What makes a node responsible is its
//! predecessor, so every node signs, for its first successor, "you follow me"
//! ([`Adjacency`]), and sends it with its clockwise stabilisation. A responder puts the one
//! its current predecessor gave it into its answer; the asker checks that the key lies between
//! the two, that the signature is the predecessor's and that it is recent. A lone hostile node
//! can then claim only the keys it is truly responsible for: no honest node names it as its
//! successor for anyone else's keys. (Colluders can still vouch for each other; the asker's
//! own lists refute what they can, steered lookups the rest.)

use crate::peer::PeerId;
use crate::proof::{signed_bytes, Signer};
use crate::ring::RingId;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Domain tag of adjacency proofs.
const DOMAIN: &str = "p2ps/adjacent";

/// "`succ` is my first successor", signed by `pred` at `issued`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Adjacency<P: PeerId> {
    /// The signer: the node just before `succ`.
    pub pred: P,
    /// The node that follows it.
    pub succ: P,
    /// When `pred` signed (its clock).
    pub issued: Time,
    /// `pred`'s signature over the fields above.
    pub proof: P::Proof,
}

impl<P: PeerId> Adjacency<P> {
    /// The signer's statement that `succ` follows it, made at `issued`.
    pub fn sign(signer: &dyn Signer<P>, succ: P, issued: Time) -> Self {
        let pred = signer.id();
        let proof = signer.sign(&signed_bytes(DOMAIN, &(&pred, &succ, issued)));
        Adjacency {
            pred,
            succ,
            issued,
            proof,
        }
    }

    /// Whether `pred` signed it.
    pub fn verify(&self) -> bool {
        self.pred.verify(
            &signed_bytes(DOMAIN, &(&self.pred, &self.succ, self.issued)),
            &self.proof,
        )
    }

    /// Whether it was signed within `ttl` before `now`, allowing `skew` between the clocks.
    pub fn is_fresh(&self, now: Time, ttl: Duration, skew: Duration) -> bool {
        self.issued <= now + skew && now - (ttl + skew) <= self.issued
    }

    /// Whether it makes `succ` responsible for `key`: the key lies after `pred`, up to `succ`.
    pub fn covers(&self, key: RingId) -> bool {
        self.pred != self.succ && key.in_open_closed(self.pred.ring_id(), self.succ.ring_id())
    }
}
