//! [`Node`]: the handle applications hold on a running node.

use crate::builder::NodeBuilder;
use crate::config::NodeConfig;
use crate::delivery::Delivery;
use crate::dict_handle::DictHandle;
use crate::error::{JoinError, LookupError, NodeError, StartError};
use crate::event::NodeEvent;
use crate::id::key_of;
use crate::id::OverlayId;
use crate::metrics::Metrics;
use crate::node_watch::NodeWatch;
use crate::report::{CastReport, GroupReport, LookupResult};
use crate::runtime::commands::Command;
use crate::status::Status;
use crate::ticket::Ticket;
use bytes::Bytes;
use p2ps_overlay::groups::GroupSecret;
use p2ps_overlay::RingId;
use p2ps_transport::{NetworkName, NodeId};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};

/// A running P2PS node. Cheap to clone; every clone talks to the same node. The node stops
/// when [`Node::shutdown`] is called or when the last clone is dropped (leaving gracefully
/// either way).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use p2ps::{Node, NodeConfig};
/// use p2ps_transport::Identity;
///
/// let node = Node::start(NodeConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?)).await?;
/// node.create().await?;
/// println!("join me with: {}", node.ticket());
/// let answer = node.lookup_key(b"some key").await?;
/// println!("{} holds it ({} hops)", answer.node, answer.hops);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    network: Option<NetworkName>,
    addrs: Arc<std::sync::RwLock<Vec<SocketAddr>>>,
    commands: mpsc::Sender<Command>,
    inbox: Mutex<mpsc::Receiver<Delivery>>,
    subscribers: broadcast::Sender<NodeEvent>,
    metrics: Metrics,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id.short())
            .finish()
    }
}

impl Node {
    /// Binds the node's socket and starts its actor with the standard services (plain
    /// messages, broadcast and range multicast, groups). The node is not part of a network yet:
    /// call [`Node::create`] or [`Node::join`]. Must run inside a tokio runtime. To add services
    /// of your own, use [`Node::builder`].
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        NodeBuilder::new(config).start().await
    }

    /// A builder for a node with services of your own besides the standard ones.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder::new(config)
    }

    /// A node made by [`NodeBuilder::start`].
    pub(crate) fn from_parts(
        id: NodeId,
        network: Option<NetworkName>,
        addrs: Arc<std::sync::RwLock<Vec<SocketAddr>>>,
        commands: mpsc::Sender<Command>,
        inbox: mpsc::Receiver<Delivery>,
        subscribers: broadcast::Sender<NodeEvent>,
        metrics: Metrics,
    ) -> Node {
        Node {
            inner: Arc::new(Inner {
                id,
                network,
                addrs,
                commands,
                inbox: Mutex::new(inbox),
                subscribers,
                metrics,
            }),
        }
    }

    /// The replicated dictionary, seen from this node.
    pub fn dict(&self) -> DictHandle {
        DictHandle::new(
            self.inner.commands.clone(),
            OverlayId(self.inner.id),
            self.inner.metrics.clone(),
        )
    }

    /// Watches the node `id` (any node of the network, not only a neighbour): the stream
    /// says when it answers ([`crate::NodeWatchEvent::Watching`]), then when it fails
    /// ([`crate::NodeWatchEvent::Failed`]: its ring neighbours reported it and this node's own probe
    /// confirmed it) or leaves ([`crate::NodeWatchEvent::Left`]: its signed word), which ends the
    /// watch. Dropping the stream stops the watch. See the `p2ps_watcher` crate.
    pub async fn watch_node(&self, id: NodeId) -> Result<NodeWatch, NodeError> {
        NodeWatch::start(self.inner.commands.clone(), id).await
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The addresses this node advertises now (they follow what peers observe and the UPnP
    /// mapping, unless fixed by [`NodeConfig::advertise`]).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// A ticket others can join through (with the public name of this node's private
    /// network, if it is in one).
    pub fn ticket(&self) -> Ticket {
        Ticket::new(self.inner.id, self.addrs()).with_network(self.inner.network)
    }

    /// The public name of this node's private network; `None` in an open network.
    pub fn network(&self) -> Option<NetworkName> {
        self.inner.network
    }

    /// Sends a command to the actor and waits for its answer.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Starts a new network with this node as its only member.
    pub async fn create(&self) -> Result<(), NodeError> {
        self.ask(Command::Create).await?
    }

    /// Joins the network of the node named by `ticket`; returns once this node is in (or
    /// joining failed after the overlay's bounded retries).
    /// A ticket for another network than this node's is refused before any dial.
    pub async fn join(&self, ticket: &Ticket) -> Result<(), JoinError> {
        if ticket.network != self.inner.network {
            return Err(JoinError::OtherNetwork {
                ticket: ticket.network,
                ours: self.inner.network,
            });
        }
        let t = ticket.clone();
        self.ask(|tx| Command::Join(t, tx)).await?
    }

    /// Leaves the network gracefully (neighbours take over at once). The node then stops
    /// taking part; shut it down to release its socket.
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(Command::Leave).await
    }

    /// Who is responsible for ring position `key`?
    pub async fn lookup(&self, key: RingId) -> Result<LookupResult, LookupError> {
        let t = std::time::Instant::now();
        let r = self.ask(|tx| Command::Lookup(key, tx)).await?;
        self.inner
            .metrics
            .lookup(t.elapsed(), r.as_ref().ok().map(|a| a.hops));
        r
    }

    /// Who is responsible for application key `key` (placed at the first 128 bits of its
    /// SHA-256)?
    pub async fn lookup_key(&self, key: impl AsRef<[u8]>) -> Result<LookupResult, LookupError> {
        self.lookup(key_of(key)).await
    }

    /// Sends `payload` to whichever node is responsible for ring position `key` (best effort).
    pub async fn route(&self, key: RingId, payload: impl Into<Bytes>) -> Result<(), NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Route(key, p, tx)).await?
    }

    /// Sends `payload` to the node `to` (best effort): routed through the overlay and delivered
    /// only if that node is a member. A node this one does not know is looked up first: if the
    /// signed answer names another node as responsible for its position, nothing is sent and
    /// the result is [`NodeError::NoSuchNode`].
    pub async fn send(&self, to: NodeId, payload: impl Into<Bytes>) -> Result<(), NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Send(to, p, tx)).await?
    }

    /// Sends `payload` to every other node of the network, each exactly once, over a tree of
    /// disjoint ring segments; returns when the tree has reported back, with the number of
    /// nodes that received it.
    pub async fn broadcast(&self, payload: impl Into<Bytes>) -> Result<CastReport, NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Broadcast(p, tx)).await?
    }

    /// Sends `payload` to every node responsible for a ring position in `[lo, hi]` (clockwise);
    /// returns when the nodes reached have reported back.
    pub async fn multicast_range(
        &self,
        lo: RingId,
        hi: RingId,
        payload: impl Into<Bytes>,
    ) -> Result<CastReport, NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Range(lo, hi, p, tx)).await?
    }

    /// Joins group `name`: this node receives the group's messages (with
    /// [`crate::Via::Group`]) until it leaves the group or the network.
    pub async fn join_group(&self, name: &str) -> Result<(), NodeError> {
        self.group_join(name, None).await
    }

    /// Joins the closed group `name` of the members holding `secret` (see
    /// [`p2ps_overlay::groups::closed`]): only they can join, send to it and read its
    /// messages; the tree's other nodes see ciphertext.
    pub async fn join_closed_group(
        &self,
        name: &str,
        secret: GroupSecret,
    ) -> Result<(), NodeError> {
        self.group_join(name, Some(secret)).await
    }

    async fn group_join(&self, name: &str, secret: Option<GroupSecret>) -> Result<(), NodeError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.ask(|tx| Command::JoinGroup(n, secret, tx)).await?
    }

    /// Leaves group `name` (the node may stay a forwarder in the group's tree for others):
    /// the closed group of that name if this node joined one, else the open one;
    /// [`NodeError::NotMember`] if it is not a member.
    pub async fn leave_group(&self, name: &str) -> Result<(), NodeError> {
        self.group_leave(name, None).await
    }

    /// Leaves the closed group `name` of `secret`; [`NodeError::NotMember`] if this node is
    /// not a member.
    pub async fn leave_closed_group(
        &self,
        name: &str,
        secret: GroupSecret,
    ) -> Result<(), NodeError> {
        self.group_leave(name, Some(secret)).await
    }

    async fn group_leave(&self, name: &str, secret: Option<GroupSecret>) -> Result<(), NodeError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.ask(|tx| Command::LeaveGroup(n, secret, tx)).await?
    }

    /// Sends `payload` to every member of group `name` (each member once); this node need not
    /// be a member. If this node joined a closed group of that name, the message goes to it
    /// (encrypted), else to the open group. Returns when the group's tree has counted the
    /// members that got it (or its wait ran out, a few seconds), with that count.
    pub async fn send_group(
        &self,
        name: &str,
        payload: impl Into<Bytes>,
    ) -> Result<GroupReport, NodeError> {
        self.group_send(name, None, payload.into()).await
    }

    /// Sends `payload` to every member of the closed group `name` of `secret`, encrypted for
    /// them; this node need not be a member. Returns the count, as [`Node::send_group`].
    pub async fn send_closed_group(
        &self,
        name: &str,
        secret: GroupSecret,
        payload: impl Into<Bytes>,
    ) -> Result<GroupReport, NodeError> {
        self.group_send(name, Some(secret), payload.into()).await
    }

    async fn group_send(
        &self,
        name: &str,
        secret: Option<GroupSecret>,
        payload: Bytes,
    ) -> Result<GroupReport, NodeError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.ask(|tx| Command::SendGroup(n, secret, payload, tx))
            .await?
    }

    /// The next application message for this node; `None` once the node has stopped.
    pub async fn recv(&self) -> Option<Delivery> {
        self.inner.inbox.lock().await.recv().await
    }

    /// Subscribes to the node's events from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.subscribers.subscribe()
    }

    /// The histograms this node records (see [`Metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The node's metrics in the OpenMetrics text format, for a Prometheus scrape.
    pub async fn metrics_text(&self) -> Result<String, NodeError> {
        Ok(self.inner.metrics.render(&self.status().await?))
    }

    /// A snapshot of the node's state and counters.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    /// A census of the whole network: every node's figures summed up a tree of disjoint ring
    /// segments (N - 1 asks and N - 1 answers on a stable ring, see [`p2ps_census`]), with up
    /// to `rows` per-node rows (at most [`p2ps_census::CensusConfig::max_rows`], 4096 by
    /// default). Returns when every piece has answered or been given up (each wait is bounded).
    pub async fn census(&self, rows: u32) -> Result<crate::CensusReport, NodeError> {
        self.ask(|tx| Command::Census(rows, tx)).await?
    }

    /// Leaves gracefully if joined, closes every connection, releases the socket and closes
    /// the dictionary's file (if it has one): a node may start on the same file once this
    /// returns.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

fn check_group_name(name: &str) -> Result<(), NodeError> {
    if name.is_empty() || name.len() > 255 {
        return Err(NodeError::BadGroupName(format!(
            "{} bytes (1 to 255 allowed)",
            name.len()
        )));
    }
    Ok(())
}
