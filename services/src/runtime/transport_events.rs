//! What the transport reports — connections up and down, failed dials, messages (straight or
//! passed on by this node's relay) — turned into overlay inputs.

use super::Actor;
use crate::id::OverlayId;
use crate::wire::{forward_bytes, forwardable, Wire};
use p2ps_transport::{CloseCode, DisconnectReason, Event as TransportEvent};
use tracing::debug;

impl Actor {
    /// Something happened on the transport: connections, messages, a failed dial.
    pub(super) fn on_transport(&mut self, ev: TransportEvent<Wire>) {
        let now = self.now();
        match ev {
            TransportEvent::Connected {
                peer,
                remote_addr,
                outbound,
                relay,
            } => {
                debug!(peer = %peer.short(), %remote_addr, outbound, relayed = relay.is_some(), "connected");
                self.join_link_up(peer, remote_addr);
                // One socket per node dials and accepts, so the address a connection comes
                // from is where the peer can be reached: remember it for the overlay's
                // contacts and for later dials. A relayed connection's address is synthetic.
                if relay.is_none() {
                    self.overlay.add_addresses(OverlayId(peer), &[remote_addr]);
                    self.transport.add_addresses(peer, [remote_addr]);
                }
                self.fallback.connected(peer);
                self.overlay.handle_link_up(now, OverlayId(peer));
            }
            TransportEvent::Disconnected { peer, reason } => {
                debug!(peer = %peer.short(), ?reason, "disconnected");
                self.join_link_down(peer, &reason);
                if matches!(reason, DisconnectReason::TimedOut) {
                    self.counters.peers_timed_out += 1;
                }
                // A connection either side closed as no longer needed says nothing about
                // whether the peer lives; everything else (a timeout, an error, a shutdown) is
                // taken for a crash.
                let unneeded = matches!(
                    reason,
                    DisconnectReason::Local {
                        code: CloseCode::Normal,
                        ..
                    } | DisconnectReason::Remote {
                        code: CloseCode::Normal,
                        ..
                    }
                );
                if unneeded {
                    self.overlay.handle_link_closed(now, OverlayId(peer));
                } else {
                    self.overlay.handle_link_down(now, OverlayId(peer));
                }
            }
            TransportEvent::DialFailed { peer, error } => {
                debug!(peer = %peer.short(), %error, "dial failed");
                self.fallback.dial_ended(peer);
                let retrying = self.traverse(peer);
                self.join_dial_failed(peer, error, retrying);
                if !retrying {
                    self.fallback.drop_copies(peer);
                    self.unreachable(peer);
                }
            }
            TransportEvent::Message {
                peer,
                msg: Wire::Overlay(msg),
                ..
            } => {
                self.overlay.handle_message(now, OverlayId(peer), msg);
            }
            TransportEvent::Message {
                peer,
                msg: Wire::Forward { to, msg, proof },
                ..
            } => self.forward_for(peer, to.0, msg, proof),
            TransportEvent::Message {
                peer,
                msg: Wire::Forwarded { from, msg, proof },
                ..
            } => {
                // Only this node's own relay passes messages on, only overlay upkeep, and only
                // as the sender signed it.
                let me = OverlayId(self.transport.node_id());
                let from_relay = self.nat.relay.as_ref().is_some_and(|(r, _)| *r == peer);
                if from_relay
                    && forwardable(&msg)
                    && from != me
                    && proof.verify(&from.0, &forward_bytes(&me, &msg))
                {
                    self.overlay.handle_message(now, from, msg);
                } else {
                    self.counters.forwards_refused += 1;
                    debug!(peer = %peer.short(), "refused a forwarded message: not our relay, or not signed by its sender");
                }
            }
            TransportEvent::IncomingStream { peer, .. } => {
                // No service uses raw streams yet; dropping them resets the stream.
                debug!(peer = %peer.short(), "refused a raw stream: no handler");
            }
            other => debug!(event = ?other, "transport event this runtime does not know"),
        }
    }
}
