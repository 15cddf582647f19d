//! The NAT fallback as the actor runs it: a peer that cannot be dialed directly is reached by
//! hole punching, then through its relay, in background tasks; meanwhile its overlay upkeep
//! (never application data) goes through the relay it announced, signed so that the relay can
//! neither alter it nor speak for us. The bookkeeping (what runs, what failed lately, what to
//! re-send) is [`super::fallback::Fallback`]; this module holds the parts that touch sockets.

use super::fallback::Traverse;
use super::{class_of, Actor};
use crate::id::OverlayId;
use crate::wire::{forward_bytes, forwardable, Wire};
use p2ps_overlay::RelayHint;
use p2ps_transport::{NodeId, TraverseError};
use std::time::Duration;
use tracing::debug;

/// How long the node with the larger id waits before reaching a peer through its relay: longer
/// than the smaller id's own traversal (1 s direct, 4 s punch, then the relay), so that two
/// traversals of one pair do not cross (two circuits and two handshakes defeat each other).
const TRAVERSAL_DEFER: Duration = Duration::from_millis(6000);

impl Actor {
    /// `peer` could not be dialed directly: if it announced a relay, reach it through that
    /// (hole punching, then a relayed circuit) in the background. Returns whether a traversal
    /// runs (the overlay is told of the failure only if it fails).
    pub(super) fn traverse(&mut self, peer: NodeId) -> bool {
        let Some(hint) = self.overlay.relay_hint(&OverlayId(peer)).cloned() else {
            return false;
        };
        let relay = hint.id.0;
        if relay == self.transport.node_id() {
            // We are its relay and not connected to it: nothing to go through.
            return false;
        }
        match self
            .fallback
            .begin_traversal(peer, std::time::Instant::now())
        {
            Traverse::Running => return true,
            Traverse::Refused => return false,
            Traverse::Start => {}
        }
        self.counters.traversals += 1;
        if !self.can_forward(peer) {
            // Nothing reaches the peer meanwhile: its silence is not a crash.
            let now = self.now();
            self.overlay.handle_link_pending(now, OverlayId(peer));
        }
        let addrs = self.overlay.addresses(&OverlayId(peer)).to_vec();
        let t = self.transport.clone();
        let done = self.traversals.0.clone();
        let defer = self.transport.node_id() > peer;
        tokio::spawn(async move {
            let result = async {
                if defer {
                    // Both ends often need each other at once (stabilisation runs both ways);
                    // two traversals crossing (two relay circuits, two handshakes) can defeat
                    // each other. The larger id gives the smaller one a head start.
                    tokio::time::sleep(TRAVERSAL_DEFER).await;
                    if t.path(peer).is_some() {
                        return Ok(());
                    }
                }
                if t.path(relay).is_none() {
                    t.add_addresses(relay, hint.addrs.iter().copied());
                    if let Some(a) = hint.addrs.first() {
                        let _ = t.connect(relay, *a).await;
                    }
                }
                // The direct dial just failed: try it briefly once more while the punch starts.
                let options = p2ps_transport::TraverseOptions::default()
                    .with_direct_timeout(Duration::from_secs(1))
                    .with_punch_head_start(Some(Duration::from_millis(150)))
                    .with_punch(
                        p2ps_transport::PunchOptions::default()
                            .with_timeout(Duration::from_secs(4)),
                    );
                t.connect_any_with(peer, &addrs, Some(relay), options)
                    .await
                    .map(|_| ())
            }
            .await;
            let _ = done.send((peer, result)).await;
        });
        true
    }

    /// A background traversal to `peer` ended.
    pub(super) fn traversal_done(&mut self, peer: NodeId, result: Result<(), TraverseError>) {
        match result {
            Ok(()) => {
                // What the failed dial dropped goes out on the new connection.
                for msg in self.fallback.traversal_succeeded(peer) {
                    self.send(peer, msg);
                }
            }
            Err(e) => {
                debug!(peer = %peer.short(), error = %e, "NAT traversal failed");
                self.counters.traversals_failed += 1;
                self.fallback
                    .traversal_failed(peer, std::time::Instant::now());
                self.unreachable(peer);
            }
        }
    }

    /// The relay `peer` announced, if messages for it can go through that relay (not this
    /// node, not the peer itself).
    pub(super) fn forwarding_relay(&self, peer: NodeId) -> Option<&RelayHint<OverlayId>> {
        self.overlay
            .relay_hint(&OverlayId(peer))
            .filter(|h| h.id.0 != self.transport.node_id() && h.id.0 != peer)
    }

    /// Whether messages for `peer` can go through the relay it announced.
    pub(super) fn can_forward(&self, peer: NodeId) -> bool {
        self.forwarding_relay(peer).is_some()
    }

    /// No direct, punched or relayed connection to `peer` could be made. If its relay still
    /// passes our messages on, the overlay's own timeouts judge whether it lives; otherwise it
    /// is taken for crashed.
    pub(super) fn unreachable(&mut self, peer: NodeId) {
        if !self.can_forward(peer) {
            let now = self.now();
            self.overlay.handle_link_down(now, OverlayId(peer));
        }
    }

    /// `to` (not connected) is behind a NAT: hands `msg` to its relay, which is connected to
    /// it, and starts reaching `to` itself in the background (a dial, then a traversal if the
    /// dial fails), so that later messages go straight. Gives `msg` back if there is no relay
    /// to use (`None`: it went to the relay).
    pub(super) fn forward_via_relay(
        &mut self,
        to: NodeId,
        msg: p2ps_overlay::Message<OverlayId>,
    ) -> Option<p2ps_overlay::Message<OverlayId>> {
        let Some(hint) = self.forwarding_relay(to).cloned() else {
            return Some(msg);
        };
        let relay = hint.id.0;
        if self.transport.path(relay).is_none() {
            self.transport
                .add_addresses(relay, hint.addrs.iter().copied());
        }
        let class = class_of(msg.class());
        let proof = self.signer.sign(&forward_bytes(&OverlayId(to), &msg));
        let wire = Wire::Forward {
            to: OverlayId(to),
            msg,
            proof,
        };
        if let Err(e) = self.transport.try_send(relay, class, &wire) {
            debug!(peer = %to.short(), relay = %relay.short(), error = %e, "could not forward through the relay");
            return match wire {
                Wire::Forward { msg, .. } | Wire::Forwarded { msg, .. } | Wire::Overlay(msg) => {
                    Some(msg)
                }
            };
        }
        self.counters.forwarded_via_relay += 1;
        self.reach_in_background(to);
        None
    }

    /// Starts a direct dial to `to` unless one, or a traversal, already runs (or failed lately).
    pub(super) fn reach_in_background(&mut self, to: NodeId) {
        let Some(addr) = self.overlay.addresses(&OverlayId(to)).first().copied() else {
            // No address to dial: go straight to punching and relaying.
            if !self.fallback.is_traversing(to) {
                self.traverse(to);
            }
            return;
        };
        if !self.fallback.begin_dial(to, std::time::Instant::now()) {
            return;
        }
        let t = self.transport.clone();
        // A failure comes back as `DialFailed`, which starts the traversal.
        tokio::spawn(async move {
            let _ = t.connect(to, addr).await;
        });
    }

    /// `peer` asks this node to pass `msg` on to `to`, one of the nodes it relays for.
    pub(super) fn forward_for(
        &mut self,
        peer: NodeId,
        to: NodeId,
        msg: p2ps_overlay::Message<OverlayId>,
        proof: p2ps_transport::Signature,
    ) {
        if !forwardable(&msg) || to == self.transport.node_id() || self.transport.path(to).is_none()
        {
            self.counters.forwards_refused += 1;
            debug!(peer = %peer.short(), to = %to.short(), "refused to forward: not connected or not upkeep");
            return;
        }
        let class = class_of(msg.class());
        let wire = Wire::Forwarded {
            from: OverlayId(peer),
            msg,
            proof,
        };
        match self.transport.try_send(to, class, &wire) {
            Ok(()) => self.counters.forwarded_for_peers += 1,
            Err(e) => {
                self.counters.forwards_refused += 1;
                debug!(to = %to.short(), error = %e, "could not forward");
            }
        }
    }
}
