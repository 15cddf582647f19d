//! [`NodeWatch`]: a watch of one node of the network ([`crate::Node::watch_node`]), and what
//! it reports ([`NodeWatchEvent`]). The protocol is the `p2ps_watcher` service: the watched
//! node's ring neighbours report its failure, and this node believes it only once its own
//! probe (straight and through the ring) goes unanswered; a leave is the node's signed word.

use crate::error::NodeError;
use crate::id::OverlayId;
use crate::runtime::commands::Command;
use p2ps_overlay::Time;
use p2ps_transport::NodeId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Events buffered for a watch whose application does not read them (a watch has at most
/// two).
const BUFFER: usize = 4;

/// What a watch of a node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeWatchEvent {
    /// The node answered and holds the watch: it is alive.
    Watching {
        /// The watched node.
        node: NodeId,
    },
    /// The node failed: reported by one of its ring neighbours (or noticed by this node), and
    /// confirmed by this node's own probe, which it did not answer. The watch ends.
    Failed {
        /// The watched node.
        node: NodeId,
        /// The neighbour that reported it (`None`: this node's own evidence, such as a
        /// renewal the node did not acknowledge).
        reported_by: Option<NodeId>,
        /// How long the confirming probe waited.
        probe: Duration,
        /// When the failure was concluded (this node's clock).
        at: SystemTime,
    },
    /// The node left the network gracefully (signed by it). The watch ends.
    Left {
        /// The watched node.
        node: NodeId,
        /// When its word came (this node's clock).
        at: SystemTime,
    },
}

fn system_time(t: Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(t.as_micros())
}

impl NodeWatchEvent {
    pub(crate) fn from_service(e: p2ps_watcher::NodeWatchEvent<OverlayId>) -> Self {
        use p2ps_watcher::NodeWatchEvent as E;
        match e {
            E::Watching { node, .. } => NodeWatchEvent::Watching { node: node.0 },
            E::Failed {
                node,
                reported_by,
                suspected_at,
                at,
                ..
            } => NodeWatchEvent::Failed {
                node: node.0,
                reported_by: reported_by.map(|p| p.0),
                probe: at.since(suspected_at),
                at: system_time(at),
            },
            E::Left { node, at, .. } => NodeWatchEvent::Left {
                node: node.0,
                at: system_time(at),
            },
        }
    }

    /// The watched node.
    pub fn node(&self) -> NodeId {
        match self {
            NodeWatchEvent::Watching { node }
            | NodeWatchEvent::Failed { node, .. }
            | NodeWatchEvent::Left { node, .. } => *node,
        }
    }

    /// Whether the watch ended with this event.
    pub fn is_final(&self) -> bool {
        !matches!(self, NodeWatchEvent::Watching { .. })
    }
}

/// A watch of one node ([`crate::Node::watch_node`]); dropping it stops the watch.
#[derive(Debug)]
pub struct NodeWatch {
    req: u64,
    node: NodeId,
    events: mpsc::Receiver<NodeWatchEvent>,
    commands: mpsc::Sender<Command>,
}

impl NodeWatch {
    pub(crate) async fn start(
        commands: mpsc::Sender<Command>,
        node: NodeId,
    ) -> Result<NodeWatch, NodeError> {
        let (events_tx, events) = mpsc::channel(BUFFER);
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::NodeWatch(node, events_tx, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        let req = rx.await.map_err(|_| NodeError::Stopped)??;
        Ok(NodeWatch {
            req,
            node,
            events,
            commands,
        })
    }

    /// The watched node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The next event; `None` once the watch ended (after its final event) or the node
    /// stopped.
    pub async fn next(&mut self) -> Option<NodeWatchEvent> {
        self.events.recv().await
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        // Best effort: a full command queue leaves the watch to run out its lease.
        let _ = self.commands.try_send(Command::NodeUnwatch(self.req));
    }
}
