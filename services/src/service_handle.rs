//! [`ServiceHandle`]: the application's side of a service of its own, registered with
//! [`crate::NodeBuilder::service`].

use crate::error::NodeError;
use crate::id::OverlayId;
use crate::runtime::commands::Command;
use p2ps_overlay::service::{Context, Emits, Service};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A handle on a service running in a node: runs its commands in the node's actor and reads
/// what it emits. Cheap to clone; the events go to whichever clone reads them.
pub struct ServiceHandle<S: Emits> {
    commands: mpsc::Sender<Command>,
    events: Arc<Mutex<Option<mpsc::Receiver<S::Event>>>>,
    dropped: Arc<AtomicU64>,
    _service: PhantomData<fn() -> S>,
}

impl<S: Emits> Clone for ServiceHandle<S> {
    fn clone(&self) -> Self {
        ServiceHandle {
            commands: self.commands.clone(),
            events: self.events.clone(),
            dropped: self.dropped.clone(),
            _service: PhantomData,
        }
    }
}

impl<S: Emits> std::fmt::Debug for ServiceHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S> ServiceHandle<S>
where
    S: Service<OverlayId> + Emits,
{
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        events: Arc<Mutex<Option<mpsc::Receiver<S::Event>>>>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        ServiceHandle {
            commands,
            events,
            dropped,
            _service: PhantomData,
        }
    }

    /// Runs `f` on the service, in the node's actor, with the service's [`Context`] (to route,
    /// send, look at the ring), then carries out what it set in motion; returns `f`'s result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: FnOnce(&mut S, &mut Context<'_, OverlayId>) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |overlay: &mut p2ps_overlay::Node<OverlayId>, now| {
            let _ = tx.send(overlay.command::<S, R>(now, f));
        });
        self.commands
            .send(Command::Service(run))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .ok_or(NodeError::NoService)
    }

    /// The next event the service emitted; `None` once the node has stopped (or another task
    /// is reading the events at the same time).
    pub async fn next_event(&self) -> Option<S::Event> {
        // Take the receiver out while waiting, so that the lock is not held across the await.
        let mut rx = self.events.lock().ok()?.take()?;
        let e = rx.recv().await;
        if let Ok(mut slot) = self.events.lock() {
            *slot = Some(rx);
        }
        e
    }

    /// Events dropped because the application did not read them fast enough.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
