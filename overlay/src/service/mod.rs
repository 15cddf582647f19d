//! The open service layer: how services plug into a node.
//!
//! The ring core (joins, lists, fingers, routing, lookups, the signed envelope) knows a service
//! only as a [`ServiceId`] and bytes. A service is a sans-IO state machine like the node itself:
//! it implements [`Service`], is registered on a node ([`crate::Node::register`]) and is then
//! told, through its hooks, what concerns it, in the spirit of the common API for structured
//! overlays (route, forward, deliver, update):
//!
//! - [`Service::deliver`]: a message of this service routed to a key reached the node
//!   responsible for it (or the node it was addressed to);
//! - [`Service::forward`]: a message of this service passes through on its way, and the service
//!   may take it here instead (a group's tree catches messages this way);
//! - [`Service::receive`]: a one-hop message of this service from a peer;
//! - [`Service::answered`]: an answer to a request this node routed came back along the
//!   request's way ([`Context::reply`]);
//! - [`Service::query`], [`Service::query_passing`]: an unsigned request of this service
//!   ([`Context::query`]) reached the node responsible for its key, or passes through;
//! - [`Service::neighbours`], [`Service::peer_failed`], [`Service::leave`]: the ring changed,
//!   a peer died, the node leaves;
//! - [`Service::poll_timeout`] / [`Service::handle_timeout`]: the service's own timers.
//!
//! Every hook gets a [`Context`]: the node's clock and identity, read access to its routing
//! table, [`Context::replica_set`], and the actions — sign and route a message to a key or a
//! node ([`Context::seal`], [`Context::route`]), send a one-hop message ([`Context::send`]).
//! Actions that route are queued and carried out when the hook returns, so a service never
//! runs inside another of its own hooks. What a service has to say to its application (a
//! delivery, an answer, a count) it keeps in its own queue, which the driver polls through
//! [`crate::Node::service_mut`]; its commands run through [`crate::Node::command`], usually
//! behind an extension trait on [`crate::Node`] (see [`crate::cast::CastExt`]).
//!
//! Messages a service signs travel in the core's [`crate::Sealed`] envelope with body
//! [`crate::Body::Service`]: every receiver checks the origin's signature and age before the
//! service sees it, so `origin` in a delivery is always the true author. Everything else a
//! service receives — its one-hop bytes, the sender of a [`Service::receive`] (the
//! authenticated peer) — it must treat as a hostile peer's: decode with a size bound, refuse
//! what does not fit, bound every per-peer state.
//!
//! ## Writing a service
//!
//! ```
//! use p2ps_overlay::service::{Context, Service};
//! use p2ps_overlay::{Class, PeerId, Routed};
//!
//! /// Counts the messages routed to keys this node is responsible for.
//! #[derive(Default)]
//! struct Counter {
//!     seen: u64,
//! }
//!
//! impl<P: PeerId> Service<P> for Counter {
//!     fn name(&self) -> &'static str {
//!         "example/counter"
//!     }
//!     fn class(&self) -> Class {
//!         Class::User
//!     }
//!     fn deliver(&mut self, _ctx: &mut Context<'_, P>, _msg: Routed<P>) {
//!         self.seen += 1;
//!     }
//! }
//! ```

mod codec;
mod context;
mod registry;

pub use codec::{decode, encode, CodecError};
pub use context::{service_signed_bytes, Context};
pub(crate) use registry::{Registry, Work};

use crate::message::{Class, Routed, Sealed};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::time::Time;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::fmt;

/// A service's id on the wire: the same on every node that runs the service. Made from the
/// service's name ([`ServiceId::named`]), so that two services need not coordinate numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// The id of the service named `name` (a 32-bit FNV-1a hash of it): use a name that says
    /// whose it is, such as `"p2ps/cast"` or `"myapp/chat"`.
    pub const fn named(name: &str) -> ServiceId {
        let b = name.as_bytes();
        let mut h: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u32;
            h = h.wrapping_mul(0x0100_0193);
            i += 1;
        }
        ServiceId(h)
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceId({:08x})", self.0)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A registered service as monitoring sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServiceSummary {
    /// Its name.
    pub name: &'static str,
    /// Its id on the wire.
    pub id: ServiceId,
    /// Its counters, by name.
    pub counters: Vec<(&'static str, u64)>,
}

/// What a service decides about a message passing through ([`Service::forward`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Forwarding {
    /// Route it on as planned.
    Continue,
    /// The service took it here; it goes no further.
    Consumed,
}

/// How the node's ring neighbours (successor and predecessor lists) changed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NeighbourChange<P> {
    /// Peers that entered the lists.
    pub up: Vec<P>,
    /// Peers that left them (left, crashed, or pushed out by nearer nodes).
    pub down: Vec<P>,
}

/// A service that has things to tell its application: deliveries, answers, reports. The driver
/// drains them after every input (the runtime hands them to the service's handle).
pub trait Emits {
    /// What the service tells its application.
    type Event: Send + 'static;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
}

/// A one-hop message of a service, as received: the authenticated sender, the service's bytes
/// and, if it carries one, another node's sealed envelope (already verified by the core).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Incoming<P: PeerId> {
    /// The peer that sent it (authenticated by the connection).
    pub from: P,
    /// The service's bytes.
    pub data: Bytes,
    /// The envelope it carries, signed by its origin and checked.
    pub sealed: Option<Sealed<P>>,
}

/// The way back to the origin of a routed request ([`Routed::way_back`], [`Queried::back`]):
/// whom to answer and the nodes that handed the request on, over whose links the answer can
/// come back ([`Context::reply`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WayBack<P: PeerId> {
    /// The request's origin: for a signed request its envelope's checked signer; for a query,
    /// the first node of its trail (proven only to the node that received it from there).
    pub to: P,
    /// The nodes that forwarded the request, in order, nearest to `to` first (a node on the
    /// way could have lied about the ones before it, so the answer is passed only to nodes
    /// linked).
    pub trail: Vec<P>,
    /// Whether the answer must retrace `trail` exactly, hop by hop, with no shortcut to `to`
    /// and no new connection (a query's: `to` is nobody's signed word).
    pub retrace: bool,
}

/// A query of this service ([`Context::query`]) at a node on its way or at the node
/// responsible for its key: unsigned, so what it says is only as good as the links it came
/// over. Answer it with [`Context::reply`]`(&q.back, …)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Queried<P: PeerId> {
    /// The key it is routed to.
    pub key: RingId,
    /// Hops so far.
    pub hops: u16,
    /// The way its answer goes back: the links it came over, retraced.
    pub back: WayBack<P>,
    /// What the service said.
    pub data: Bytes,
}

/// A service's answer that came back along a request's trail ([`Context::reply`]), as
/// received. Its answerer is not proven (the answer is not signed): only that it came from
/// `via`, the last node on the way, and carries what the service put in it (a request id
/// nobody off the request's path could guess, say).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Answered<P: PeerId> {
    /// The peer that handed it over (authenticated by the connection).
    pub via: P,
    /// The service's bytes.
    pub data: Bytes,
}

/// A service: a deterministic state machine driven by the node it is registered on. Every hook
/// has a default that does nothing, so a service implements only what it uses. See the module
/// documentation.
pub trait Service<P: PeerId>: Any + Send {
    /// The service's name, which says whose it is (`"p2ps/cast"`, `"myapp/chat"`): the same
    /// on every node that runs it.
    fn name(&self) -> &'static str;

    /// The service's id on the wire: by default made from its name.
    fn id(&self) -> ServiceId {
        ServiceId::named(self.name())
    }

    /// The service's counters, by name, for status and metrics.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The stream class the service's messages travel on.
    fn class(&self) -> Class {
        Class::User
    }

    /// Names of the service's message kinds, indexed by the first byte of its encoded messages
    /// (the variant index of a postcard-encoded enum), for traffic counters. Empty if the
    /// service does not name them.
    fn kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// A message of this service routed to a key (or to this node) arrived here, the node
    /// responsible for the key. `msg.sealed` is the origin's checked envelope.
    fn deliver(&mut self, ctx: &mut Context<'_, P>, msg: Routed<P>) {
        let _ = (ctx, msg);
    }

    /// Whether [`Service::forward`] runs for this service's messages that pass through this
    /// node. Their signatures are then checked at every hop, which costs more than the rest of
    /// a hop; without it (the default) they pass through unchecked and are checked where they
    /// arrive.
    fn inspects_forwarded(&self) -> bool {
        false
    }

    /// A message of this service passes through on its way to `next` (only if
    /// [`Service::inspects_forwarded`]); `msg.sealed` is the origin's checked envelope. Return
    /// [`Forwarding::Consumed`] to stop it here.
    fn forward(&mut self, ctx: &mut Context<'_, P>, msg: &Routed<P>, next: P) -> Forwarding {
        let _ = (ctx, msg, next);
        Forwarding::Continue
    }

    /// A query of this service ([`Context::query`]) arrived here, the node responsible for
    /// its key (or started here, where this node is).
    fn query(&mut self, ctx: &mut Context<'_, P>, q: Queried<P>) {
        let _ = (ctx, q);
    }

    /// A query of this service is at this node on its way to `next` (this node may be its
    /// origin): return [`Forwarding::Consumed`] to answer it here instead (a node that knows
    /// enough of the ring around the key, say). Queries carry no signature, so looking at
    /// them costs nothing.
    fn query_passing(&mut self, ctx: &mut Context<'_, P>, q: &Queried<P>, next: P) -> Forwarding {
        let _ = (ctx, q, next);
        Forwarding::Continue
    }

    /// A one-hop message of this service arrived from a peer.
    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        let _ = (ctx, msg);
    }

    /// An answer to a request this node routed came back ([`Context::reply`] at the answerer).
    fn answered(&mut self, ctx: &mut Context<'_, P>, msg: Answered<P>) {
        let _ = (ctx, msg);
    }

    /// The ring neighbours changed.
    fn neighbours(&mut self, ctx: &mut Context<'_, P>, change: &NeighbourChange<P>) {
        let _ = (ctx, change);
    }

    /// `peer` is taken for dead (it crashed, or left).
    fn peer_failed(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        let _ = (ctx, peer);
    }

    /// The driver could not queue this service's traffic for `peer` (its queue is full).
    fn congested(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        let _ = (ctx, peer);
    }

    /// The node is leaving: last words to peers, then drop what is in progress.
    fn leave(&mut self, ctx: &mut Context<'_, P>) {
        let _ = ctx;
    }

    /// When [`Service::handle_timeout`] should next run.
    fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// The time from [`Service::poll_timeout`] has come.
    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        let _ = ctx;
    }

    /// Whether the service needs the link to `peer` kept open (it is a tree neighbour, say),
    /// though the ring does not.
    fn uses_link(&self, peer: &P) -> bool {
        let _ = peer;
        false
    }
}
