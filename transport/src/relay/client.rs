//! The ends of circuits: asking a relay for a circuit and connecting over it
//! (`Transport::connect_relayed`), and accepting circuits a relay announces.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use crate::class::StreamClass;
use crate::connections::Shared;
use crate::identity::NodeId;
use crate::log_limit::LogLimit;
use crate::relay::protocol::{
    self, encode_header, read_header, CircuitEnd, ConnectReply, ConnectRequest, HeaderError,
    IncomingCircuit, IncomingReply, RefuseCode, TAG_CONNECT,
};
use crate::relay::{PathKind, RelayError};
use crate::stats::bump;

/// Log lines about circuits a relay announces: a relay can announce them at will.
static CIRCUIT_LOG: LogLimit<NodeId> = LogLimit::new(crate::connections::LOG_INTERVAL, 10, 3);

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens a circuit to `peer` through `relay` and connects to `peer` over it. Returns the path
    /// of the connection to `peer` (an existing connection is kept and reported as is).
    pub(crate) async fn connect_relayed(
        self: &Arc<Self>,
        peer: NodeId,
        relay: NodeId,
    ) -> Result<PathKind, RelayError> {
        if self.is_closing() {
            return Err(RelayError::ShuttingDown);
        }
        if peer == self.node_id || relay == self.node_id || relay == peer {
            return Err(RelayError::BadRequest(
                "peer, relay and this node must be three different nodes",
            ));
        }
        if let Some(path) = self.path(&peer) {
            return Ok(path);
        }
        let relay_conn = self
            .current_connection(&relay)
            .ok_or(RelayError::RelayNotConnected { relay })?;
        let failed = |reason: String| RelayError::Protocol { relay, reason };
        let (mut send, mut recv) = relay_conn
            .conn
            .open_bi()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = send.set_priority(StreamClass::User.priority());
        let mut request = vec![TAG_CONNECT];
        let header = encode_header(&ConnectRequest::Connect {
            target: *peer.as_bytes(),
        })
        .map_err(|e| failed(e.to_string()))?;
        request.extend_from_slice(&header);
        send.write_all(&request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let limits = match read_header::<ConnectReply>(&mut recv, self.config.connect_timeout).await
        {
            Ok(ConnectReply::Accepted { limits }) => limits,
            Ok(ConnectReply::Refused { code, reason }) => {
                return Err(match code {
                    RefuseCode::TargetNotConnected => RelayError::TargetNotConnected {
                        relay,
                        target: peer,
                    },
                    RefuseCode::LimitExceeded => RelayError::LimitExceeded { reason },
                    code => RelayError::Refused {
                        relay,
                        code,
                        reason,
                    },
                });
            }
            Err(HeaderError::TimedOut(_)) => return Err(RelayError::TimedOut { relay }),
            Err(e) => return Err(failed(e.to_string())),
        };
        let Some(registered) = self.relay.socket.register(peer, relay, limits, true) else {
            let code = CircuitEnd::Closed.varint();
            let _ = send.reset(code);
            let _ = recv.stop(code);
            return Err(RelayError::LimitExceeded {
                reason: format!(
                    "this node is already an end of {} relayed circuits",
                    self.config.relay.max_client_circuits
                ),
            });
        };
        let addr = registered.addr;
        bump(&self.relay.counters.client_circuits_opened);
        info!(peer = %peer.short(), relay = %relay.short(), %addr, ?limits, "relay circuit open, connecting over it");
        tokio::spawn(self.relay.socket.clone().run(
            registered,
            send,
            recv,
            self.circuit_unused_after(),
        ));
        self.connect(peer, vec![addr]).await?;
        Ok(self
            .path(&peer)
            .unwrap_or(PathKind::Relayed { relay, addr }))
    }

    /// Answers a relay announcing a circuit (stream tagged `TAG_INCOMING`).
    pub(crate) async fn accept_circuit(
        self: Arc<Self>,
        relay: NodeId,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let counters = &self.relay.counters;
        let incoming = match read_header::<IncomingCircuit>(&mut recv, self.config.connect_timeout)
            .await
        {
            Ok(incoming) => incoming,
            Err(e) => {
                bump(&counters.malformed);
                if let Some(suppressed) = CIRCUIT_LOG.check(relay) {
                    info!(relay = %relay.short(), error = %e, suppressed, "bad circuit announcement: closed that stream");
                }
                let code = CircuitEnd::Malformed.varint();
                let _ = recv.stop(code);
                let _ = send.reset(code);
                return;
            }
        };
        let from = protocol::node_id(incoming.from);
        let refused = if !self.config.relay.accept {
            Some("this node does not accept relayed circuits".to_string())
        } else if from == self.node_id {
            Some("circuit from ourselves".to_string())
        } else {
            None
        };
        let registered = match refused {
            Some(reason) => Err(reason),
            None => self
                .relay
                .socket
                .register(from, relay, incoming.limits, false)
                .ok_or_else(|| "this node has too many relayed circuits".to_string()),
        };
        let registered = match registered {
            Ok(r) => r,
            Err(reason) => {
                if let Some(suppressed) = CIRCUIT_LOG.check(relay) {
                    info!(from = %from.short(), relay = %relay.short(), %reason, suppressed, "refused relayed circuit");
                }
                if let Ok(h) = encode_header(&IncomingReply::Refused { reason }) {
                    let _ = send.write_all(&h).await;
                }
                let _ = send.finish();
                return;
            }
        };
        let Ok(header) = encode_header(&IncomingReply::Accepted) else {
            return;
        };
        if send.write_all(&header).await.is_err() {
            return;
        }
        bump(&counters.client_circuits_accepted);
        info!(from = %from.short(), relay = %relay.short(), addr = %registered.addr, limits = ?incoming.limits, "accepted relayed circuit");
        let unused_after = self.circuit_unused_after();
        self.relay
            .socket
            .clone()
            .run(registered, send, recv, unused_after)
            .await;
    }

    /// A circuit no connection has used by then is closed.
    fn circuit_unused_after(&self) -> std::time::Duration {
        self.config.connect_timeout * 2
    }
}
