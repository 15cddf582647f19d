//! The transport's own control channel: one unidirectional stream per connection and direction,
//! opened with the reserved tag [`CONTROL_TAG`], carrying length-prefixed postcard frames of
//! [`Control`].
//!
//! NAT traversal needs a few messages of its own (observed addresses, hole-punch coordination)
//! that must not leak into the application's message type `M`, so they travel on a stream the
//! class readers never see. Frames are small ([`MAX_CONTROL_FRAME`]); an oversized or malformed
//! frame stops only that stream (the sender opens a fresh one for its next message), and a frame
//! whose variant this version does not know is skipped with a log line, so newer nodes can add
//! variants without breaking older ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, trace};

use crate::connections::{lock, ConnCtx, Shared};
use crate::error::FrameError;
use crate::event::StreamStopCode;
use crate::frame::{self, FrameDecoder};
use crate::holepunch::PunchState;
use crate::identity::NodeId;
use crate::observed::Report;
use crate::reachability::ReachabilityTracker;
use crate::relay::is_relayed;
use crate::stats::bump;

/// First byte of a control stream. Class tags are small numbers; this one is far from them.
pub(crate) const CONTROL_TAG: u8 = 0xC0;

/// Largest control frame body accepted or sent.
pub(crate) const MAX_CONTROL_FRAME: usize = 1024;

/// quinn priority of control streams: above every class stream (punch timing matters).
const CONTROL_PRIORITY: i32 = 40;

/// Upper bound on sending one control message (stream credit, flow control).
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A node id on the wire.
pub(crate) type WireId = [u8; 32];

/// Messages of the control channel. Variants are only ever appended (the variant index is the
/// first byte of a frame and older nodes skip indexes they do not know).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// "I see you at this address" (sent once by each side right after a connection is set up).
    Observed(SocketAddr),
    /// Requester to introducer: please introduce me to `target`; here are my addresses.
    PunchRequest {
        /// Chosen by the requester, unique among its requests.
        id: u64,
        /// The node the requester wants a direct connection to.
        target: WireId,
        /// The requester's advertised addresses.
        candidates: Vec<SocketAddr>,
    },
    /// Introducer to target: `from` wants a direct connection; dial it at these addresses (the
    /// first is where the introducer sees it).
    PunchOffer {
        /// The requester's id for this punch.
        id: u64,
        /// The requester.
        from: WireId,
        /// Where to dial the requester.
        candidates: Vec<SocketAddr>,
    },
    /// Target to introducer: accepted (and dialing); these are my addresses.
    PunchAccept {
        /// The requester's id for this punch.
        id: u64,
        /// The requester.
        requester: WireId,
        /// The target's advertised addresses.
        candidates: Vec<SocketAddr>,
    },
    /// Target to introducer: declined (see [`crate::PunchRefusal`] for codes).
    PunchDecline {
        /// The requester's id for this punch.
        id: u64,
        /// The requester.
        requester: WireId,
        /// Why.
        code: u32,
    },
    /// Introducer to requester: the target accepted and is dialing you; dial it at these
    /// addresses (the first is where the introducer sees it).
    PunchGo {
        /// The requester's id for this punch.
        id: u64,
        /// The target.
        target: WireId,
        /// Where to dial the target.
        candidates: Vec<SocketAddr>,
    },
    /// Introducer to requester: no punch (see [`crate::PunchRefusal`] for codes).
    PunchRefused {
        /// The requester's id for this punch.
        id: u64,
        /// The target.
        target: WireId,
        /// Why.
        code: u32,
    },
}

/// Number of [`Control`] variants this version knows.
const KNOWN_VARIANTS: u8 = 7;

impl Control {
    /// The frame for this message.
    pub(crate) fn encode(&self) -> Result<Bytes, FrameError> {
        Ok(frame::encode(self, MAX_CONTROL_FRAME)?.into_bytes())
    }
}

/// Decodes one control frame body: `Ok(None)` for a variant this version does not know.
pub(crate) fn parse(body: &[u8]) -> Result<Option<Control>, FrameError> {
    // postcard writes the variant index first as a varint; one byte below 0x80 is the index.
    match body.first() {
        Some(&b) if b >= KNOWN_VARIANTS => Ok(None),
        _ => frame::decode(body).map(Some),
    }
}

/// Why a control message could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// No live connection to the peer.
    #[error("not connected to {0}")]
    NotConnected(crate::identity::ShortNodeId),
    /// The connection failed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing failed twice (stream stopped or connection lost).
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Stream credit or flow control did not allow sending in time.
    #[error("timed out")]
    TimedOut,
    /// The message does not encode (too large).
    #[error(transparent)]
    Encode(#[from] FrameError),
}

/// Control state of one connection: our control stream (opened on first use) and whether the
/// peer already reported our address on it.
#[derive(Debug, Default)]
pub(crate) struct ConnControl {
    stream: tokio::sync::Mutex<Option<quinn::SendStream>>,
    /// One report per connection counts: a peer repeating itself cannot flap our status.
    observed_reported: AtomicBool,
}

impl ConnControl {
    /// Sends `msg` on `conn`'s control stream, opening (or, after the peer stopped it,
    /// reopening) the stream as needed.
    pub(crate) async fn send(
        &self,
        conn: &quinn::Connection,
        msg: &Control,
    ) -> Result<(), ControlError> {
        let frame = msg.encode()?;
        tokio::time::timeout(CONTROL_SEND_TIMEOUT, async {
            let mut slot = self.stream.lock().await;
            let mut last = None;
            for _ in 0..2 {
                let stream = match slot.as_mut() {
                    Some(s) => s,
                    None => {
                        let mut s = conn.open_uni().await?;
                        let _ = s.set_priority(CONTROL_PRIORITY);
                        s.write_all(&[CONTROL_TAG]).await?;
                        slot.insert(s)
                    }
                };
                match stream.write_all(&frame).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        *slot = None;
                        last = Some(e);
                    }
                }
            }
            Err(last.map_or(ControlError::TimedOut, ControlError::Write))
        })
        .await
        .map_err(|_| ControlError::TimedOut)?
    }
}

/// Per-transport state of the NAT traversal protocols.
#[derive(Debug, Default)]
pub(crate) struct Traversal {
    /// Observed-address reports and the classification derived from them.
    pub(crate) reach: std::sync::Mutex<ReachabilityTracker>,
    /// Hole punching: our requests, our introductions, our accepted offers.
    pub(crate) punch: PunchState,
    /// `connect_any`: counters and background upgrades of relayed connections.
    pub(crate) traverse: crate::traverse::TraverseState,
}

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Hook called by `register` for every freshly authenticated connection: tells the peer
    /// where we see it (not over relayed connections, whose addresses are synthetic).
    pub(crate) fn on_connection_up(self: &Arc<Self>, ctx: &Arc<ConnCtx>) {
        if is_relayed(&ctx.remote) {
            return;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = ctx
                .control
                .send(&ctx.conn, &Control::Observed(canonical(ctx.remote)))
                .await
            {
                debug!(peer = %ctx.peer.short(), error = %e, "could not send observed address");
            }
        });
    }

    /// Sends `msg` to `peer` on its current connection.
    pub(crate) async fn send_control(
        &self,
        peer: NodeId,
        msg: &Control,
    ) -> Result<(), ControlError> {
        let ctx = self
            .current_connection(&peer)
            .ok_or(ControlError::NotConnected(peer.short()))?;
        ctx.control.send(&ctx.conn, msg).await
    }

    /// Reads the peer's control stream on one connection until it ends or misbehaves.
    pub(crate) async fn read_control_stream(
        self: Arc<Self>,
        ctx: Arc<ConnCtx>,
        mut recv: quinn::RecvStream,
    ) {
        let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
        loop {
            let chunk = match recv.read_chunk(MAX_CONTROL_FRAME, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => {
                    if let Err(e) = decoder.finish() {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            None,
                            StreamStopCode::MalformedFrame,
                            &e,
                        );
                    }
                    return;
                }
                Err(e) => {
                    trace!(peer = %ctx.peer.short(), error = %e, "control stream ended");
                    return;
                }
            };
            decoder.push(&chunk);
            loop {
                let parsed = match decoder.next_frame() {
                    Ok(Some(body)) => parse(body),
                    Ok(None) => break,
                    Err(e) => {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            None,
                            StreamStopCode::FrameTooLarge,
                            &e,
                        );
                        return;
                    }
                };
                match parsed {
                    Ok(Some(msg)) => self.on_control(&ctx, msg).await,
                    Ok(None) => {
                        debug!(peer = %ctx.peer.short(), "skipped a control message of an unknown kind (newer peer)");
                    }
                    Err(e) => {
                        self.refuse_stream(
                            &ctx,
                            &mut recv,
                            None,
                            StreamStopCode::MalformedFrame,
                            &e,
                        );
                        return;
                    }
                }
            }
        }
    }

    async fn on_control(self: &Arc<Self>, ctx: &Arc<ConnCtx>, msg: Control) {
        trace!(peer = %ctx.peer.short(), ?msg, "control message");
        match msg {
            Control::Observed(addr) => self.on_observed(ctx, addr),
            Control::PunchRequest {
                id,
                target,
                candidates,
            } => {
                self.on_punch_request(ctx, id, NodeId::from_bytes(target), candidates)
                    .await
            }
            Control::PunchOffer {
                id,
                from,
                candidates,
            } => {
                self.on_punch_offer(ctx, id, NodeId::from_bytes(from), candidates)
                    .await
            }
            Control::PunchAccept {
                id,
                requester,
                candidates,
            } => {
                self.on_punch_answer(ctx, id, NodeId::from_bytes(requester), Ok(candidates))
                    .await
            }
            Control::PunchDecline {
                id,
                requester,
                code,
            } => {
                self.on_punch_answer(ctx, id, NodeId::from_bytes(requester), Err(code))
                    .await
            }
            Control::PunchGo {
                id,
                target,
                candidates,
            } => self.on_punch_reply(ctx, id, NodeId::from_bytes(target), Ok(candidates)),
            Control::PunchRefused { id, target, code } => {
                self.on_punch_reply(ctx, id, NodeId::from_bytes(target), Err(code))
            }
        }
    }

    /// A peer told us where it sees us.
    fn on_observed(&self, ctx: &ConnCtx, observed: SocketAddr) {
        bump(&self.counters.observed_reports);
        let observed = canonical(observed);
        if is_relayed(&ctx.remote)
            || !crate::reachability::usable_candidate(&observed)
            || ctx.control.observed_reported.swap(true, Ordering::AcqRel)
        {
            debug!(peer = %ctx.peer.short(), %observed, "ignored an observed-address report");
            return;
        }
        let report = Report {
            reporter: ctx.peer,
            reporter_addr: canonical(ctx.remote),
            observed,
            local: self.local_addr_of(ctx),
        };
        let connected = self.connected_peers();
        let changed = lock(&self.traversal.reach).record(report, Instant::now(), |p| {
            connected.binary_search(p).is_ok()
        });
        if let Some(status) = changed {
            info!(
                class = ?status.class,
                external = ?status.external_addrs.iter().map(|e| e.addr).collect::<Vec<_>>(),
                mapping = ?status.mapping_behaviour,
                reporters = status.reporters,
                "reachability changed"
            );
        }
    }

    /// Our address on `ctx`: the connection's local IP (known for incoming connections), else
    /// the bound IP if it is specific, else the source IP the OS routes to the peer from; with
    /// our socket's port.
    pub(crate) fn local_addr_of(&self, ctx: &ConnCtx) -> Option<SocketAddr> {
        let bound = self.endpoint.local_addr().ok()?;
        let ip = ctx
            .conn
            .local_ip()
            .or_else(|| (!bound.ip().is_unspecified()).then(|| bound.ip()))
            .or_else(|| route_source_ip(canonical(ctx.remote)))?;
        Some(SocketAddr::new(ip.to_canonical(), bound.port()))
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned into IPv4 (dual-stack sockets report them).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The local IP the OS would send from to reach `remote`: connecting a UDP socket only picks
/// the route, nothing is sent. Needed for connections we dialed from a wildcard-bound socket,
/// where quinn does not know the local IP; without it a LAN peer and an internet peer seeing us
/// at different addresses would look like a symmetric NAT.
fn route_source_ip(remote: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = if remote.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    socket.connect(remote).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::frame::HEADER_LEN;

    fn all() -> Vec<Control> {
        let a: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:65535".parse().unwrap();
        vec![
            Control::Observed(a),
            Control::PunchRequest {
                id: 1,
                target: [1; 32],
                candidates: vec![a, b],
            },
            Control::PunchOffer {
                id: 2,
                from: [2; 32],
                candidates: vec![b],
            },
            Control::PunchAccept {
                id: 3,
                requester: [3; 32],
                candidates: vec![],
            },
            Control::PunchDecline {
                id: 4,
                requester: [4; 32],
                code: 9,
            },
            Control::PunchGo {
                id: u64::MAX,
                target: [5; 32],
                candidates: vec![a],
            },
            Control::PunchRefused {
                id: 6,
                target: [6; 32],
                code: 1,
            },
        ]
    }

    #[test]
    fn route_source_of_loopback_is_loopback() {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(route_source_ip(remote), Some(IpAddr::from([127, 0, 0, 1])));
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:7".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:7".parse().unwrap());
    }

    #[test]
    fn every_variant_round_trips() {
        let msgs = all();
        assert_eq!(msgs.len(), usize::from(KNOWN_VARIANTS));
        for (i, m) in msgs.into_iter().enumerate() {
            let frame = m.encode().unwrap();
            assert_eq!(
                frame[HEADER_LEN] as usize, i,
                "variant index is the first body byte"
            );
            assert_eq!(parse(&frame[HEADER_LEN..]).unwrap(), Some(m));
        }
    }

    #[test]
    fn largest_message_fits_a_frame() {
        let v6: SocketAddr = "[2001:db8::1]:65535".parse().unwrap();
        let m = Control::PunchRequest {
            id: u64::MAX,
            target: [0xff; 32],
            candidates: vec![v6; crate::reachability::MAX_ADVERTISED],
        };
        assert!(m.encode().unwrap().len() < MAX_CONTROL_FRAME);
    }

    #[test]
    fn unknown_variants_are_skipped_and_garbage_is_refused() {
        assert_eq!(parse(&[KNOWN_VARIANTS, 1, 2, 3]).unwrap(), None);
        assert_eq!(
            parse(&[0x85, 0x01]).unwrap(),
            None,
            "multi-byte variant index"
        );
        assert!(parse(&[]).is_err());
        // Observed with a truncated address.
        assert!(parse(&[0, 0, 1]).is_err());
        // A valid message followed by trailing bytes.
        let mut body = Control::Observed("1.2.3.4:5".parse().unwrap())
            .encode()
            .unwrap()[HEADER_LEN..]
            .to_vec();
        body.push(0);
        assert!(parse(&body).is_err());
    }
}
