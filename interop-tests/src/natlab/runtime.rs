//! A tokio runtime that lives inside a lab namespace, for long-running async code (a node's
//! transport) driven from the test thread.
//!
//! [`super::NatLab::block_on`] runs one future to completion; a node, though, must keep
//! serving while the test talks to other nodes. An [`NsRuntime`] is a thread that entered the
//! namespace and drives a current-thread runtime until it is dropped; futures handed to it run
//! on that thread, so every socket they open is in the namespace.

use super::error::{NatLabError, Result};
use super::netns;
use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long starting the runtime thread may take.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A current-thread tokio runtime on its own thread inside a lab namespace; dropping it stops
/// the runtime (cancelling its tasks) and joins the thread.
#[derive(Debug)]
pub struct NsRuntime {
    ns: String,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl NsRuntime {
    /// Starts a runtime inside namespace `ns`.
    pub fn start(ns: &str) -> Result<NsRuntime> {
        let (handle_tx, handle_rx) = mpsc::sync_channel(1);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = netns::spawn_in(ns, move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            // Ends when the sender is sent to or dropped.
            let _ = runtime.block_on(stop_rx);
        })?;
        let io_err = |what: &str, source| NatLabError::Io {
            what: format!("{what} in {ns}"),
            source,
        };
        let handle = match handle_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => return Err(io_err("building a tokio runtime", e)),
            Err(_) => {
                // The thread could not enter the namespace (its error is in the join result).
                return match thread.join() {
                    Ok(Err(e)) => Err(e),
                    _ => Err(NatLabError::ThreadPanicked(ns.to_string())),
                };
            }
        };
        Ok(NsRuntime {
            ns: ns.to_string(),
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The namespace the runtime lives in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The runtime's handle (spawned tasks run on the namespace's thread).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on the runtime (inside the namespace) and waits up to `timeout` for its
    /// output. On timeout the task is aborted.
    pub fn run<F>(&self, timeout: Duration, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(timeout) {
            Ok(out) => Ok(out),
            Err(e) => {
                task.abort();
                Err(NatLabError::Io {
                    what: format!("a task in {}", self.ns),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        match e {
                            mpsc::RecvTimeoutError::Timeout => {
                                format!("no result within {timeout:?}")
                            }
                            mpsc::RecvTimeoutError::Disconnected => {
                                "the task ended without a result (panicked?)".to_string()
                            }
                        },
                    ),
                })
            }
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
