//! The node's side of a `watch` request: the one control request answered by a stream of
//! lines (see `crate::control::protocol`). The watch lasts while the client keeps the
//! connection open and takes what it is sent; it ends (and the dictionary's watch with it)
//! as soon as the client closes the connection, writes anything, or stops reading.

use crate::control::protocol::{Response, WatchEvent, MAX_WATCH_STREAMS};
use p2ps::Node;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::debug;

/// How long writing one event may take before the client is taken for gone.
const EVENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams the changes of the open key `key` to the client until it leaves or the node stops;
/// `streams` bounds the watches served at once ([`MAX_WATCH_STREAMS`]).
pub(super) async fn serve(
    mut read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    node: &Node,
    key: String,
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
    let mut watch = match node.dict().watch(key.clone()).await {
        Ok(w) => w,
        Err(e) => {
            let _ = send(
                &mut write,
                &Response::err(format!("cannot watch {key}: {e}")),
            )
            .await;
            return;
        }
    };
    debug!(%key, "control socket: watch started");
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            event = watch.next() => {
                let Some(record) = event else {
                    let stopped = Response::err("the node stopped; the watch ended");
                    let _ = send(&mut write, &stopped).await;
                    break;
                };
                let line = Response::ok(WatchEvent::of(&key, record.as_ref()));
                if !send(&mut write, &line).await {
                    debug!(%key, "control socket: a watch client stopped reading");
                    break;
                }
            }
            // End of file (the client left), an error, or bytes the protocol does not expect.
            _ = read.read(&mut scratch) => {
                debug!(%key, "control socket: a watch client left");
                break;
            }
        }
    }
    // Dropping `watch` ends the dictionary's watch.
}

/// Writes one response line; `false` if the client did not take it in time.
pub(super) async fn send(write: &mut (impl AsyncWrite + Unpin), resp: &Response) -> bool {
    let mut text = serde_json::to_vec(resp)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the event"}"#.to_vec());
    text.push(b'\n');
    let written = tokio::time::timeout(EVENT_WRITE_TIMEOUT, async {
        write.write_all(&text).await?;
        write.flush().await
    })
    .await;
    matches!(written, Ok(Ok(())))
}
