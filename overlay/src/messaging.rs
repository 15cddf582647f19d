//! Plain application messages, a service: a payload to whichever node is responsible for a key,
//! or to a node by its id, routed hop by hop (best effort, no answer).

use crate::message::{Body, Class, Routed};
use crate::node::{CommandError, Node};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::service::{decode, encode, Context, Emits, Service, ServiceId};
use crate::time::Time;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The service's name.
pub const NAME: &str = "p2ps/messages";

/// The service's id.
pub const MESSAGES: ServiceId = ServiceId::named(NAME);

/// Deliveries kept for the application by default before new ones are dropped.
pub const MAX_QUEUED: usize = 4096;

/// How a delivered message was addressed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Addressed {
    /// To this node's id ([`MessagingExt::send`]).
    Node,
    /// To a key this node is responsible for ([`MessagingExt::route`]).
    Key,
}

/// A message delivered to this node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delivery<P> {
    /// The node that sent it (its signature checked).
    pub origin: P,
    /// The key it was routed to (this node's position for a send to its id).
    pub key: RingId,
    /// Overlay hops it took.
    pub hops: u16,
    /// How it was addressed.
    pub addressed: Addressed,
    /// The payload.
    pub payload: Bytes,
}

/// What the service signs, encoded with [`encode`] and followed by the payload. Public so
/// that tools and tests can speak the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Wire {
    /// Application data.
    Data,
}

/// The message names, by the first byte of the encoding.
const KINDS: &[&str] = &["data"];

/// The plain messaging service.
#[derive(Debug)]
pub struct Messaging<P> {
    inbox: VecDeque<Delivery<P>>,
    max_queued: usize,
    delivered: u64,
    dropped: u64,
}

impl<P: PeerId> Default for Messaging<P> {
    fn default() -> Self {
        Messaging::new(MAX_QUEUED)
    }
}

impl<P: PeerId> Messaging<P> {
    /// The service, keeping at most `max_queued` deliveries the application has not taken.
    pub fn new(max_queued: usize) -> Self {
        Messaging {
            inbox: VecDeque::new(),
            max_queued: max_queued.max(1),
            delivered: 0,
            dropped: 0,
        }
    }

    /// Messages delivered, and messages dropped (malformed, or the inbox was full).
    pub fn counts(&self) -> (u64, u64) {
        (self.delivered, self.dropped)
    }

    /// Sends `payload` to whichever node is responsible for `key`.
    pub fn route(
        &mut self,
        ctx: &mut Context<'_, P>,
        key: RingId,
        payload: &[u8],
    ) -> Result<(), CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        let sealed = ctx.seal(key, None, encode(&Wire::Data, payload));
        ctx.route(sealed);
        Ok(())
    }

    /// Sends `payload` to the node `target`: routed towards its position and delivered only if
    /// that node is there.
    pub fn send(
        &mut self,
        ctx: &mut Context<'_, P>,
        target: P,
        payload: &[u8],
    ) -> Result<(), CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        let sealed = ctx.seal(target.ring_id(), Some(target), encode(&Wire::Data, payload));
        ctx.route(sealed);
        Ok(())
    }
}

impl<P: PeerId> Emits for Messaging<P> {
    type Event = Delivery<P>;

    /// The next message delivered to this node.
    fn poll_event(&mut self) -> Option<Delivery<P>> {
        self.inbox.pop_front()
    }
}

impl<P: PeerId> Service<P> for Messaging<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("delivered", self.delivered), ("dropped", self.dropped)]
    }

    fn class(&self) -> Class {
        Class::User
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn deliver(&mut self, _ctx: &mut Context<'_, P>, msg: Routed<P>) {
        let Body::Service { target, data, .. } = &msg.sealed.env.body else {
            return;
        };
        let Ok((Wire::Data, payload)) = decode::<Wire>(data) else {
            self.dropped += 1;
            return;
        };
        if self.inbox.len() >= self.max_queued {
            self.dropped += 1;
            return;
        }
        self.delivered += 1;
        self.inbox.push_back(Delivery {
            origin: msg.sealed.origin(),
            key: msg.sealed.env.key,
            hops: msg.hops,
            addressed: if target.is_some() {
                Addressed::Node
            } else {
                Addressed::Key
            },
            payload,
        });
    }
}

/// Plain messages as calls on a [`Node`] that runs [`Messaging`].
pub trait MessagingExt<P: PeerId> {
    /// See [`Messaging::route`].
    fn route(&mut self, now: Time, key: RingId, payload: &[u8]) -> Result<(), CommandError>;
    /// See [`Messaging::send`].
    fn send(&mut self, now: Time, target: P, payload: &[u8]) -> Result<(), CommandError>;
}

impl<P: PeerId> MessagingExt<P> for Node<P> {
    fn route(&mut self, now: Time, key: RingId, payload: &[u8]) -> Result<(), CommandError> {
        self.command::<Messaging<P>, _>(now, |m, ctx| m.route(ctx, key, payload))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn send(&mut self, now: Time, target: P, payload: &[u8]) -> Result<(), CommandError> {
        self.command::<Messaging<P>, _>(now, |m, ctx| m.send(ctx, target, payload))
            .unwrap_or(Err(CommandError::NoService))
    }
}
