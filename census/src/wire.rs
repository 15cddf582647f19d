//! What nodes send each other for a census. Public so that tools and tests can speak the
//! protocol (a test's hostile node does).

use crate::figures::{Aggregate, Row};
use p2ps_overlay::{PeerId, Segment};
use serde::{Deserialize, Serialize};

/// Room an answer takes besides its rows.
pub const ANSWER_OVERHEAD: usize = 1024;

/// Largest encoded size of one row: a node id (at most 64 bytes in any identity this
/// workspace uses), figures, table size, estimate, as postcard varints.
pub const ROW_BYTES: usize = 128;

/// A census message: encoded with [`p2ps_overlay::service::encode`], no payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Wire<P: PeerId> {
    /// "Count the nodes of `seg` for census `(origin, seq)`": the origin's sealed envelope
    /// ([`Wire::Census`]) travels with it. The answer is the acknowledgement.
    Ask {
        /// The sender's number for this piece, echoed in the answer.
        piece: u64,
        /// The nodes to count: every node whose position lies here.
        seg: Segment,
        /// Tree depth of the receiver (1 for the origin's direct children).
        depth: u16,
    },
    /// The figures of piece `piece`, summed by the node it was given to.
    Answer {
        /// The census's origin.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// The piece number at the receiver.
        piece: u64,
        /// The segment it covers (must be the one given).
        seg: Segment,
        /// Whether every node the answering subtree knew of in the segment answered.
        complete: bool,
        /// The sum (boxed: it is the bulk of the message).
        sum: Box<Aggregate>,
        /// Per-node rows, if the census asked for them (at most as many as asked).
        rows: Vec<Row<P>>,
    },
    /// Signed by the origin: a census asking for up to `rows` per-node rows.
    Census {
        /// Rows wanted (0: sums only).
        rows: u32,
    },
}

/// The message names, by the first byte of the encoding (the variant).
pub const KINDS: &[&str] = &["census-ask", "census-answer", "census"];
