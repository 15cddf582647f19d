//! Carrying out what the overlay asks for: messages to the transport (through a peer's relay
//! while no connection to it is up), connections it no longer needs closed.

use super::{class_of, Actor};
use crate::id::OverlayId;
use crate::wire::{forwardable, Wire};
use p2ps_overlay::Output;
use p2ps_transport::{NodeId, SendError, StreamClass, TrySendError};
use tracing::debug;

impl Actor {
    /// Carries out everything the overlay asked for.
    pub(super) fn flush(&mut self) {
        while let Some(out) = self.overlay.poll_output() {
            match out {
                Output::Send { to, msg } => self.send(to.0, msg),
                Output::Disconnect { peer } => {
                    if self.nat.relay.as_ref().is_some_and(|(r, _)| *r == peer.0) {
                        // The link to our relay stays open while we are behind a NAT.
                        continue;
                    }
                    if self.transport.dialed(peer.0) == Some(false) {
                        // A connection belongs to the side that dialed it, which closes it when
                        // it no longer needs it: the peer may hold us in its table and would
                        // only dial again.
                        continue;
                    }
                    let t = self.transport.clone();
                    tokio::spawn(async move {
                        t.disconnect(peer.0, "idle").await;
                    });
                }
                Output::Event(e) => self.on_overlay_event(e),
                other => debug!(output = ?other, "overlay output this runtime does not know"),
            }
        }
        self.drain_services();
        // The routing table's peers may take the connections reserved from strangers.
        let generation = self.overlay.table().generation();
        if self.protected_gen != Some(generation) {
            self.protected_gen = Some(generation);
            let wanted = self.overlay.table().distinct_peers();
            self.transport
                .set_protected(wanted.into_iter().map(|p| p.0));
        }
    }

    /// Hands `msg` to the transport for `to`: straight, or through `to`'s relay while no
    /// connection is up (upkeep only); a full queue or a missing address is dealt with here.
    pub(super) fn send(&mut self, to: NodeId, msg: p2ps_overlay::Message<OverlayId>) {
        let unconnected = self.transport.path(to).is_none();
        let msg = if unconnected && forwardable(&msg) {
            match self.forward_via_relay(to, msg) {
                None => return,
                Some(msg) => msg,
            }
        } else {
            msg
        };
        if unconnected && self.overlay.relay_hint(&OverlayId(to)).is_some() {
            // First contact with a peer behind a NAT: keep a copy in case the dial fails.
            self.fallback.keep_copy(to, &msg);
        }
        let known = self.overlay.addresses(&OverlayId(to));
        if !known.is_empty() {
            self.transport.add_addresses(to, known.iter().copied());
        }
        let class = class_of(msg.class());
        match self.transport.try_send(to, class, &Wire::Overlay(msg)) {
            Ok(()) => {}
            Err(TrySendError::QueueFull { .. }) => {
                self.counters.send_queue_full += 1;
                debug!(peer = %to.short(), ?class, "send queue full: message dropped");
                if class == StreamClass::Tree {
                    // A slow tree neighbour must not hold back the others: the overlay drops
                    // it from its trees if this keeps happening.
                    self.counters.tree_queue_full += 1;
                    let now = self.now();
                    self.overlay.handle_congestion(now, OverlayId(to));
                }
            }
            Err(TrySendError::Send(SendError::NoAddress { .. })) => {
                self.counters.send_failed += 1;
                if !self.traverse(to) {
                    self.unreachable(to);
                }
            }
            Err(e) => {
                self.counters.send_failed += 1;
                debug!(peer = %to.short(), error = %e, "send failed");
            }
        }
    }
}
