//! The relay side of circuits: admission (opt-in, limits, target connected), set-up with the
//! target, then copying bytes between the two ends under the circuit's limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::class::StreamClass;
use crate::connections::{lock, Shared};
use crate::identity::NodeId;
use crate::log_limit::LogLimit;
use crate::relay::limits::{CircuitLimits, TokenBucket};
use crate::relay::protocol::{
    self, encode_header, read_header, CircuitEnd, ConnectReply, ConnectRequest, HeaderError,
    IncomingCircuit, IncomingReply, RefuseCode, TAG_INCOMING,
};
use crate::relay::tap::RelayTap;
use crate::relay::{RelayCounters, RelayState};
use crate::stats::{add, bump};

/// Largest chunk copied at once.
const COPY_CHUNK: usize = 64 * 1024;

/// Holds a relayed circuit's place in the relay's counts until dropped.
struct Slot<'a> {
    state: &'a RelayState,
    ends: [NodeId; 2],
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut served = lock(&self.state.served);
        served.total = served.total.saturating_sub(1);
        for end in self.ends {
            if let Some(n) = served.per_peer.get_mut(&end) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    served.per_peer.remove(&end);
                }
            }
        }
        self.state
            .counters
            .circuits_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl RelayState {
    /// Takes a place for a circuit between `a` and `b`, or says which limit is reached.
    fn admit(
        &self,
        limits: &crate::relay::RelayLimits,
        a: NodeId,
        b: NodeId,
    ) -> Result<Slot<'_>, String> {
        let mut served = lock(&self.served);
        if served.total >= limits.max_circuits {
            return Err(format!(
                "relay carries its maximum of {} circuits",
                limits.max_circuits
            ));
        }
        for end in [a, b] {
            if served.per_peer.get(&end).copied().unwrap_or(0) >= limits.max_circuits_per_peer {
                return Err(format!(
                    "{} already has the maximum of {} circuits through this relay",
                    end.short(),
                    limits.max_circuits_per_peer
                ));
            }
        }
        served.total += 1;
        for end in [a, b] {
            *served.per_peer.entry(end).or_default() += 1;
        }
        self.counters
            .circuits_active
            .fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            state: self,
            ends: [a, b],
        })
    }
}

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Serves one circuit request from `from` (stream tagged `TAG_CONNECT`).
    pub(crate) async fn serve_circuit(
        self: Arc<Self>,
        from: NodeId,
        mut send_a: quinn::SendStream,
        mut recv_a: quinn::RecvStream,
    ) {
        let counters = &self.relay.counters;
        let timeout = self.config.connect_timeout;
        let target = match read_header::<ConnectRequest>(&mut recv_a, timeout).await {
            Ok(ConnectRequest::Connect { target }) => protocol::node_id(target),
            Err(e) => {
                refuse_malformed(counters, from, &mut send_a, &mut recv_a, &e);
                return;
            }
        };
        let refuse = |code: RefuseCode, reason: String| {
            bump(&counters.circuits_refused);
            static LOG: LogLimit<NodeId> = LogLimit::new(crate::connections::LOG_INTERVAL, 10, 3);
            if let Some(suppressed) = LOG.check(from) {
                info!(from = %from.short(), target = %target.short(), ?code, %reason, suppressed, "refused relay circuit");
            }
            ConnectReply::Refused { code, reason }
        };
        let config = &self.config.relay;
        let admitted = if !config.serve {
            Err(refuse(
                RefuseCode::NotServing,
                "this node does not relay".into(),
            ))
        } else if target == from || target == self.node_id {
            Err(refuse(
                RefuseCode::BadRequest,
                "circuit to oneself or to the relay".into(),
            ))
        } else {
            match self.relay.admit(&config.limits, from, target) {
                Ok(slot) => match self.current_connection(&target) {
                    Some(ctx) => Ok((slot, ctx.conn.clone())),
                    None => Err(refuse(
                        RefuseCode::TargetNotConnected,
                        format!("relay is not connected to {}", target.short()),
                    )),
                },
                Err(reason) => Err(refuse(RefuseCode::LimitExceeded, reason)),
            }
        };
        let (slot, conn_b) = match admitted {
            Ok(v) => v,
            Err(reply) => {
                reply_and_finish(&mut send_a, &reply).await;
                return;
            }
        };
        let limits = config.limits.circuit;
        let (send_b, recv_b) = match self.open_to_target(&conn_b, from, target, limits).await {
            Ok(streams) => streams,
            Err(reason) => {
                drop(slot);
                let reply = refuse(RefuseCode::TargetRefused, reason);
                reply_and_finish(&mut send_a, &reply).await;
                return;
            }
        };
        let accepted = ConnectReply::Accepted { limits };
        let Ok(header) = encode_header(&accepted) else {
            return;
        };
        if send_a.write_all(&header).await.is_err() {
            // The requester went away: dropping the streams to the target ends the circuit there.
            return;
        }
        bump(&counters.circuits_served);
        debug!(from = %from.short(), target = %target.short(), "relaying circuit");
        let end = copy_circuit(
            counters,
            config.tap.as_ref(),
            limits,
            (send_a, recv_a),
            (send_b, recv_b),
        )
        .await;
        if matches!(end, CircuitEnd::ByteLimit | CircuitEnd::DurationLimit) {
            bump(&counters.circuits_limited);
            info!(from = %from.short(), target = %target.short(), code = end.to_u64(), %end, "relay circuit ended on a limit");
        } else {
            debug!(from = %from.short(), target = %target.short(), %end, "relay circuit ended");
        }
        drop(slot);
    }

    /// Announces the circuit to the target and waits for its answer.
    async fn open_to_target(
        &self,
        conn: &quinn::Connection,
        from: NodeId,
        target: NodeId,
        limits: CircuitLimits,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let _ = send.set_priority(StreamClass::User.priority());
        let mut out = vec![TAG_INCOMING];
        let header = encode_header(&IncomingCircuit {
            from: *from.as_bytes(),
            limits,
        })
        .map_err(|e| e.to_string())?;
        out.extend_from_slice(&header);
        send.write_all(&out).await.map_err(|e| e.to_string())?;
        match read_header::<IncomingReply>(&mut recv, self.config.connect_timeout).await {
            Ok(IncomingReply::Accepted) => Ok((send, recv)),
            Ok(IncomingReply::Refused { reason }) => {
                Err(format!("{} refused: {reason}", target.short()))
            }
            Err(e) => Err(format!("{} did not accept: {e}", target.short())),
        }
    }
}

fn refuse_malformed(
    counters: &RelayCounters,
    from: NodeId,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    error: &HeaderError,
) {
    bump(&counters.malformed);
    static LOG: LogLimit<NodeId> = LogLimit::new(crate::connections::LOG_INTERVAL, 10, 3);
    if let Some(suppressed) = LOG.check(from) {
        warn!(from = %from.short(), %error, suppressed, "bad circuit request: closed that stream, the connection stays up");
    }
    let code = CircuitEnd::Malformed.varint();
    let _ = recv.stop(code);
    let _ = send.reset(code);
}

async fn reply_and_finish(send: &mut quinn::SendStream, reply: &ConnectReply) {
    if let Ok(header) = encode_header(reply) {
        let _ = send.write_all(&header).await;
    }
    let _ = send.finish();
}

/// Copies both directions until one end leaves or a limit is hit; then ends both streams with
/// the reason's code.
async fn copy_circuit(
    counters: &RelayCounters,
    tap: Option<&RelayTap>,
    limits: CircuitLimits,
    (mut send_a, mut recv_a): (quinn::SendStream, quinn::RecvStream),
    (mut send_b, mut recv_b): (quinn::SendStream, quinn::RecvStream),
) -> CircuitEnd {
    let total = AtomicU64::new(0);
    let deadline = async {
        match limits.max_duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let a_to_b = copy_one_way(counters, tap, &limits, &total, &mut recv_a, &mut send_b);
    let b_to_a = copy_one_way(counters, tap, &limits, &total, &mut recv_b, &mut send_a);
    // One direction ending cleanly (its sender finished) lets the other run on until it ends too.
    let end = tokio::select! {
        () = deadline => Some(CircuitEnd::DurationLimit),
        end = async {
            let (x, y) = tokio::join!(a_to_b, b_to_a);
            x.or(y)
        } => end,
    };
    // Both ends left cleanly: their streams are finished, nothing to cut.
    let Some(end) = end else {
        return CircuitEnd::PeerClosed;
    };
    let code = end.varint();
    for send in [&mut send_a, &mut send_b] {
        let _ = send.reset(code);
    }
    for recv in [&mut recv_a, &mut recv_b] {
        let _ = recv.stop(code);
    }
    end
}

/// Copies `recv` to `send`. `None`: the sender finished cleanly (and `send` was finished);
/// `Some(end)`: the circuit must end.
async fn copy_one_way(
    counters: &RelayCounters,
    tap: Option<&RelayTap>,
    limits: &CircuitLimits,
    total: &AtomicU64,
    recv: &mut quinn::RecvStream,
    send: &mut quinn::SendStream,
) -> Option<CircuitEnd> {
    let mut bucket = limits.max_rate.map(TokenBucket::new);
    loop {
        let chunk = match recv.read_chunk(COPY_CHUNK, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                let _ = send.finish();
                return None;
            }
            Err(e) => return Some(super::socket::read_end(e)),
        };
        let n = chunk.len() as u64;
        let before = total.fetch_add(n, Ordering::Relaxed);
        if limits.max_bytes.is_some_and(|max| before + n > max) {
            return Some(CircuitEnd::ByteLimit);
        }
        if let Some(bucket) = &mut bucket {
            let wait = bucket.take(chunk.len());
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(tap) = tap {
            tap.record(&chunk);
        }
        match send.write_chunk(chunk).await {
            Ok(()) => {}
            // The receiving end left without an error: a clean end of this direction.
            Err(quinn::WriteError::Stopped(code)) if code.into_inner() == 0 => return None,
            Err(e) => return Some(super::socket::write_end(e)),
        }
        add(&counters.bytes_relayed, n);
    }
}
