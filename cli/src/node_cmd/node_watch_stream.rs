//! The node's side of a `watch_node` request: a streaming control request like `watch` (see
//! `crate::control::protocol`). It sends a line when the watched node answers, then a final
//! line when the node fails or leaves, and closes the connection; a client that leaves (closes
//! the connection, writes anything, stops reading) ends the watch.

use super::watch_stream::send;
use crate::control::protocol::{NodeWatchLine, Response, MAX_WATCH_STREAMS};
use p2ps::{Node, NodeId};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::Semaphore;
use tracing::debug;

/// Streams what becomes of node `id` (or says why not: `id` is the error resolving it) until
/// the watch ends, the client leaves or the node stops; `streams` bounds the streams served at
/// once, shared with `watch`.
pub(super) async fn serve(
    mut read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    node: &Node,
    id: Result<NodeId, String>,
    streams: &Arc<Semaphore>,
) {
    let Ok(_slot) = streams.clone().try_acquire_owned() else {
        let e = format!(
            "the node already serves {MAX_WATCH_STREAMS} watches, as many as it may at once; \
             end one or try again later"
        );
        let _ = send(&mut write, &Response::err(e)).await;
        return;
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            let _ = send(&mut write, &Response::err(e)).await;
            return;
        }
    };
    let mut watch = match node.watch_node(id).await {
        Ok(w) => w,
        Err(e) => {
            let e = format!("cannot watch node {}: {e}", id.short());
            let _ = send(&mut write, &Response::err(e)).await;
            return;
        }
    };
    debug!(node = %id.short(), "control socket: node watch started");
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            event = watch.next() => {
                let Some(e) = event else {
                    let stopped = Response::err("the node stopped; the watch ended");
                    let _ = send(&mut write, &stopped).await;
                    break;
                };
                let line = Response::ok(NodeWatchLine::of(&e));
                if !send(&mut write, &line).await || e.is_final() {
                    break;
                }
            }
            _ = read.read(&mut scratch) => {
                debug!(node = %id.short(), "control socket: a node watch client left");
                break;
            }
        }
    }
    // Dropping `watch` stops it (if it has not ended).
}
