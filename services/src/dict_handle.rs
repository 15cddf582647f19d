//! [`DictHandle`]: the replicated dictionary as the application uses it (`node.dict()`).
//!
//! Values live on the node responsible for their key and the nodes after it (3 by default),
//! signed by their writer, which every replica and reader checks. A write returns once a
//! quorum of replicas holds it; a read asks a quorum and takes the newest version. See the
//! `p2ps_dict` crate for the data model and what holds under churn.

use crate::error::NodeError;
use crate::id::OverlayId;
use crate::metrics::{DictOp, Metrics};
use crate::runtime::commands::{Command, DictCall};
use bytes::Bytes;
use p2ps_dict::{DictError, DictEvent, DictKey, PutOptions, Record, ReplicaHealth};
use tokio::sync::{mpsc, oneshot};

/// The dictionary of a node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DictHandle {
    commands: mpsc::Sender<Command>,
    me: OverlayId,
    metrics: Metrics,
}

impl DictHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, me: OverlayId, metrics: Metrics) -> Self {
        DictHandle {
            commands,
            me,
            metrics,
        }
    }

    /// The open key `name` (anyone may write it).
    pub fn open_key(&self, name: impl Into<Bytes>) -> DictKey<OverlayId> {
        DictKey::open(name)
    }

    /// This node's own key `name` (only this node may write it; anyone may read it).
    pub fn own_key(&self, name: impl Into<Bytes>) -> DictKey<OverlayId> {
        DictKey::owned(self.me, name)
    }

    async fn run(&self, call: DictCall) -> Result<DictEvent<OverlayId>, NodeError> {
        let t = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dict(call, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        let r = rx.await.map_err(|_| NodeError::Stopped)?;
        let op = match &r {
            Ok(DictEvent::Put { result, .. }) => Some((DictOp::Write, result.is_ok())),
            Ok(DictEvent::Got { result, .. }) => Some((DictOp::Read, result.is_ok())),
            _ => None,
        };
        if let Some((op, ok)) = op {
            self.metrics.dict(op, t.elapsed(), ok);
        }
        r
    }

    /// Writes `value` under `key`; returns the version stored and how many replicas hold it.
    pub async fn put_key(
        &self,
        key: DictKey<OverlayId>,
        value: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<(u64, u8), NodeError> {
        let value = value.into();
        let call: DictCall = Box::new(move |d, ctx| d.put(ctx, &key, value, opts));
        put_result(self.run(call).await?)
    }

    /// Writes `value` under the open key `name`; returns the version stored.
    pub async fn put(
        &self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, NodeError> {
        let key = self.open_key(name);
        Ok(self.put_key(key, value, PutOptions::default()).await?.0)
    }

    /// Compare-and-swap on the open key `name`: writes `value` only if the key's version is
    /// `expect` now (0: the key holds nothing), as version `expect + 1`. A concurrent writer
    /// that got there first makes it fail with [`DictError::Conflict`], which names the
    /// version to read and try again from.
    pub async fn cas(
        &self,
        name: impl Into<Bytes>,
        expect: u64,
        value: impl Into<Bytes>,
    ) -> Result<u64, NodeError> {
        let key = self.open_key(name);
        let opts = PutOptions {
            expect: Some(expect),
            ..PutOptions::default()
        };
        Ok(self.put_key(key, value, opts).await?.0)
    }

    /// Deletes `key` (a deletion wins over every older value); returns its version.
    pub async fn delete_key(&self, key: DictKey<OverlayId>) -> Result<u64, NodeError> {
        Ok(self.delete_key_with(key, PutOptions::default()).await?.0)
    }

    /// Deletes `key` with per-call options (acknowledgements `w`, the deletion's time to live,
    /// compare-and-swap on the version); returns the deletion's version and how many replicas
    /// hold it.
    pub async fn delete_key_with(
        &self,
        key: DictKey<OverlayId>,
        opts: PutOptions,
    ) -> Result<(u64, u8), NodeError> {
        let call: DictCall = Box::new(move |d, ctx| d.delete(ctx, &key, opts));
        put_result(self.run(call).await?)
    }

    /// Deletes the open key `name`.
    pub async fn delete(&self, name: impl Into<Bytes>) -> Result<u64, NodeError> {
        self.delete_key(self.open_key(name)).await
    }

    /// The newest record of `key` among `r` replicas (default: the read quorum); a deletion is
    /// a record without a value.
    pub async fn get_record(
        &self,
        key: DictKey<OverlayId>,
        r: Option<u8>,
    ) -> Result<Option<Record<OverlayId>>, NodeError> {
        let call: DictCall = Box::new(move |d, ctx| d.get(ctx, &key, r));
        match self.run(call).await? {
            DictEvent::Got { result, .. } => result.map_err(NodeError::from),
            _ => Err(NodeError::Dict(DictError::Forged)),
        }
    }

    /// How many of `key`'s replicas hold its newest version right now (its primary asks every
    /// replica; those that lack it get it).
    pub async fn replicas_of(&self, key: DictKey<OverlayId>) -> Result<ReplicaHealth, NodeError> {
        let call: DictCall = Box::new(move |d, ctx| d.replicas(ctx, &key));
        match self.run(call).await? {
            DictEvent::Replicas { result, .. } => result.map_err(NodeError::from),
            _ => Err(NodeError::Dict(DictError::Forged)),
        }
    }

    /// [`DictHandle::replicas_of`] the open key `name`.
    pub async fn replicas(&self, name: impl Into<Bytes>) -> Result<ReplicaHealth, NodeError> {
        self.replicas_of(self.open_key(name)).await
    }

    /// Watches `key`: the stream yields the record the key holds now, then every change
    /// (`None`: nothing there any more, e.g. expired), newest versions only, until it is
    /// dropped. The watch follows the key when the nodes responsible for it change.
    pub async fn watch_key(&self, key: DictKey<OverlayId>) -> Result<KeyWatch, NodeError> {
        let (events_tx, events_rx) = mpsc::channel(WATCH_BUFFER);
        let (tx, rx) = oneshot::channel();
        let call: DictCall = Box::new(move |d, ctx| d.watch(ctx, &key));
        self.commands
            .send(Command::DictWatch(call, events_tx, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        let req = rx.await.map_err(|_| NodeError::Stopped)??;
        Ok(KeyWatch {
            req,
            events: events_rx,
            commands: self.commands.clone(),
        })
    }

    /// Watches the open key `name` (see [`DictHandle::watch_key`]).
    pub async fn watch(&self, name: impl Into<Bytes>) -> Result<KeyWatch, NodeError> {
        self.watch_key(self.open_key(name)).await
    }

    /// The value of the open key `name` (`None`: nothing there, or deleted), with its version.
    pub async fn get(&self, name: impl Into<Bytes>) -> Result<Option<(Bytes, u64)>, NodeError> {
        let key = self.open_key(name);
        Ok(self
            .get_record(key, None)
            .await?
            .and_then(|r| r.value.map(|v| (v, r.version))))
    }
}

fn put_result(e: DictEvent<OverlayId>) -> Result<(u64, u8), NodeError> {
    match e {
        DictEvent::Put { result, .. } => result.map_err(NodeError::from),
        _ => Err(NodeError::Dict(DictError::Forged)),
    }
}

/// Changes buffered for a watcher that does not keep up; beyond, the oldest are dropped (the
/// next change brings the newest record again).
const WATCH_BUFFER: usize = 64;

/// A watch of one key (see [`DictHandle::watch_key`]); dropping it ends the watch.
#[derive(Debug)]
pub struct KeyWatch {
    req: u64,
    events: mpsc::Receiver<Option<Record<OverlayId>>>,
    commands: mpsc::Sender<Command>,
}

impl KeyWatch {
    /// The next state of the key (`Some(None)`: it holds nothing); `None` once the node stops.
    pub async fn next(&mut self) -> Option<Option<Record<OverlayId>>> {
        self.events.recv().await
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        // Best effort: a full command queue leaves the watch to run out its lease.
        let _ = self.commands.try_send(Command::DictUnwatch(self.req));
    }
}
