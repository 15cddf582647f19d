//! The services P2PS nodes run as standard: plain messages, broadcast and range multicast,
//! groups. The core does not need them; drivers that want them register them, and read what
//! they have for their application in one form with [`drain`].

use crate::cast::{CastConfig, CastEvent, CastKind, Casts};
use crate::groups::{GroupConfig, GroupEvent, Groups};
use crate::messaging::{Addressed, Messaging};
use crate::node::{Node, RegisterError};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::service::Emits;
use bytes::Bytes;

/// Registers the standard services with default settings on `node`.
pub fn register<P: PeerId>(node: &mut Node<P>) -> Result<(), RegisterError> {
    register_with(node, CastConfig::default(), GroupConfig::default())
}

/// Registers the standard services with the given settings on `node`.
pub fn register_with<P: PeerId>(
    node: &mut Node<P>,
    cast: CastConfig,
    groups: GroupConfig,
) -> Result<(), RegisterError> {
    node.register(Messaging::<P>::default())?;
    node.register(Casts::<P>::new(cast))?;
    node.register(Groups::<P>::new(groups))
}

/// How a payload the standard services delivered was addressed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Via {
    /// To this node's id.
    Node,
    /// To a key this node is responsible for.
    Key,
    /// To every node.
    Broadcast,
    /// To the nodes responsible for the keys in `[lo, hi]`.
    Range {
        /// Lower end.
        lo: RingId,
        /// Upper end.
        hi: RingId,
    },
    /// To the members of the group at this position.
    Group(RingId),
}

/// What the standard services have for their application, in one form.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum StandardEvent<P> {
    /// A payload for this node.
    Delivered {
        /// The node that sent it (its signature checked).
        origin: P,
        /// The key it was routed to (the group for a group message, the range's low end for a
        /// range multicast, this node's position for a broadcast).
        key: RingId,
        /// Overlay hops (or tree depth) it took.
        hops: u16,
        /// How it was addressed.
        via: Via,
        /// The payload.
        payload: Bytes,
    },
    /// A broadcast or range multicast this node started is over (see [`CastEvent::Done`]).
    CastDone {
        /// Its message number.
        seq: u64,
        /// Deliveries counted up the tree, if a reply was asked for.
        delivered: Option<u64>,
        /// Whether every piece was acknowledged.
        complete: bool,
    },
    /// A slow child was dropped from a group tree (see [`GroupEvent::ChildDropped`]).
    GroupChildDropped {
        /// The group.
        group: RingId,
        /// The child.
        peer: P,
    },
    /// The count of a group message this node sent (see [`GroupEvent::Counted`]).
    GroupCounted {
        /// The group.
        group: RingId,
        /// Its message number.
        seq: u64,
        /// Members that delivered it (this node not included).
        members: u64,
        /// Whether every part of the tree answered in time.
        complete: bool,
    },
}

/// Takes everything the standard services of `node` have for their application (plain
/// messages first, then casts, then groups), so that every driver reads them the same way.
pub fn drain<P: PeerId>(node: &mut Node<P>, out: &mut Vec<StandardEvent<P>>) {
    let me = node.pos();
    if let Some(m) = node.service_mut::<Messaging<P>>() {
        while let Some(d) = m.poll_event() {
            let via = match d.addressed {
                Addressed::Node => Via::Node,
                Addressed::Key => Via::Key,
            };
            out.push(StandardEvent::Delivered {
                origin: d.origin,
                key: d.key,
                hops: d.hops,
                via,
                payload: d.payload,
            });
        }
    }
    if let Some(c) = node.service_mut::<Casts<P>>() {
        while let Some(e) = c.poll_event() {
            out.push(match e {
                CastEvent::Delivered {
                    origin,
                    kind,
                    hops,
                    payload,
                } => {
                    let (key, via) = match kind {
                        CastKind::Broadcast => (me, Via::Broadcast),
                        CastKind::Range { lo, hi } => (lo, Via::Range { lo, hi }),
                    };
                    StandardEvent::Delivered {
                        origin,
                        key,
                        hops,
                        via,
                        payload,
                    }
                }
                CastEvent::Done {
                    seq,
                    delivered,
                    complete,
                } => StandardEvent::CastDone {
                    seq,
                    delivered,
                    complete,
                },
            });
        }
    }
    if let Some(g) = node.service_mut::<Groups<P>>() {
        while let Some(e) = g.poll_event() {
            out.push(match e {
                GroupEvent::Delivered {
                    origin,
                    group,
                    hops,
                    payload,
                } => StandardEvent::Delivered {
                    origin,
                    key: group,
                    hops,
                    via: Via::Group(group),
                    payload,
                },
                GroupEvent::ChildDropped { group, peer } => {
                    StandardEvent::GroupChildDropped { group, peer }
                }
                GroupEvent::Counted {
                    group,
                    seq,
                    members,
                    complete,
                } => StandardEvent::GroupCounted {
                    group,
                    seq,
                    members,
                    complete,
                },
            });
        }
    }
}
