//! The send path: per-peer, per-class byte-bounded queues and the writer tasks that drain them
//! onto class streams.
//!
//! A queue's budget is a semaphore counting bytes: `send` waits for permits, `try_send` fails
//! when there are none, and the writer gives them back once quinn has taken the frames. The
//! writer follows the peer's current connection (a `watch` channel), opens its class stream
//! lazily (tag byte first, quinn priority of the class), writes many frames per quinn call, and
//! opens a fresh stream when the peer stops the old one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use crate::class::StreamClass;
use crate::connections::{lock, ConnCtx};
use crate::identity::NodeId;
use crate::log_limit::LogLimit;
use crate::stats::{add, bump, Counters};

/// Most bytes gathered into one write on a class stream.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most frames gathered into one write on a class stream.
const MAX_BATCH_FRAMES: usize = 1024;
/// Below this many frames a writer yields once to let running senders add to the batch.
const SMALL_BATCH_FRAMES: usize = 8;
/// How often a writer reopens a class stream for the same batch without progress before it
/// drops the frame at the front (a peer that refuses every stream must not make us spin).
const MAX_REOPENS_WITHOUT_PROGRESS: u32 = 3;

/// What writers follow: the connection currently used for a peer, if any.
pub(crate) type Link = Option<Arc<ConnCtx>>;

/// A byte-bounded queue of encoded frames for one class of one peer.
pub(crate) struct ClassQueue {
    tx: mpsc::UnboundedSender<Bytes>,
    budget: Arc<Semaphore>,
    capacity: usize,
    /// The writer task, started with the first frame (most peers never use every class).
    seed: Mutex<Option<Writer>>,
    started: AtomicBool,
}

pub(crate) enum PushError {
    Full,
    Closed,
}

fn cost(len: usize, capacity: usize) -> u32 {
    // capacity <= u32::MAX is checked by TransportConfig::validate. A frame larger than the whole
    // budget takes the whole budget (it waits for an empty queue) instead of never fitting.
    u32::try_from(len.min(capacity)).unwrap_or(u32::MAX)
}

impl ClassQueue {
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let permit = self
            .budget
            .acquire_many(cost(frame.len(), self.capacity))
            .await
            .map_err(|_| PushError::Closed)?;
        permit.forget();
        self.tx.send(frame).map_err(|_| PushError::Closed)
    }

    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        match self
            .budget
            .try_acquire_many(cost(frame.len(), self.capacity))
        {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(PushError::Full),
            Err(TryAcquireError::Closed) => return Err(PushError::Closed),
        }
        self.tx.send(frame).map_err(|_| PushError::Closed)
    }
}

/// The three class queues of one peer.
pub(crate) struct PeerQueues {
    classes: [ClassQueue; 3],
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerQueues {
    /// Queues for `peer`, with writers (started on first use) following `link`.
    pub(crate) fn new(
        peer: NodeId,
        capacity: usize,
        link: &watch::Sender<Link>,
        counters: &Arc<Counters>,
        finish_timeout: Duration,
    ) -> Self {
        let classes = StreamClass::ALL.map(|class| {
            let (tx, rx) = mpsc::unbounded_channel();
            let budget = Arc::new(Semaphore::new(capacity));
            let writer = Writer {
                peer,
                class,
                rx,
                budget: budget.clone(),
                capacity,
                link: link.subscribe(),
                link_open: true,
                counters: counters.clone(),
                finish_timeout,
            };
            ClassQueue {
                tx,
                budget,
                capacity,
                seed: Mutex::new(Some(writer)),
                started: AtomicBool::new(false),
            }
        });
        Self {
            classes,
            writers: Mutex::new(Vec::new()),
        }
    }

    /// The queue of `class`, its writer task started.
    pub(crate) fn get(&self, class: StreamClass) -> &ClassQueue {
        let q = &self.classes[class.index()];
        if !q.started.load(Ordering::Acquire) {
            if let Some(writer) = lock(&q.seed).take() {
                q.started.store(true, Ordering::Release);
                lock(&self.writers).push(tokio::spawn(writer.run()));
            }
        }
        q
    }

    pub(crate) fn close(&self) {
        for q in &self.classes {
            q.budget.close();
        }
    }

    pub(crate) fn take_writers(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.writers))
    }
}

type StoppedFuture =
    Pin<Box<dyn Future<Output = Result<Option<quinn::VarInt>, quinn::StoppedError>> + Send>>;

/// Our open class stream on one connection.
struct ClassStream {
    ctx: Arc<ConnCtx>,
    send: quinn::SendStream,
    stopped: StoppedFuture,
}

/// Resolves when the peer stops the stream or the connection dies; never if there is no stream.
async fn stream_stopped(
    stream: &mut Option<ClassStream>,
) -> Result<Option<quinn::VarInt>, quinn::StoppedError> {
    match stream {
        Some(s) => s.stopped.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Finishes a stream we no longer write to and, once the peer acknowledged everything (or the
/// timeout passed), lets its connection know.
fn retire(mut stream: ClassStream, timeout: Duration) {
    tokio::spawn(async move {
        let _ = stream.send.finish();
        let _ = tokio::time::timeout(timeout, stream.stopped).await;
        stream.ctx.send_stream_done();
    });
}

struct NoConnection;

/// Drains one class queue of one peer onto the class stream of the peer's current connection.
struct Writer {
    peer: NodeId,
    class: StreamClass,
    rx: mpsc::UnboundedReceiver<Bytes>,
    budget: Arc<Semaphore>,
    capacity: usize,
    link: watch::Receiver<Link>,
    /// False once the peer state (the sending side of `link`) is gone.
    link_open: bool,
    counters: Arc<Counters>,
    finish_timeout: Duration,
}

impl Writer {
    async fn run(mut self) {
        let mut stream: Option<ClassStream> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut lens: Vec<usize> = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    frame = self.rx.recv() => match frame {
                        Some(f) => batch.push(f),
                        None => {
                            // Peer state gone or shutdown: deliver nothing more, finish cleanly.
                            if let Some(s) = stream.take() {
                                self.finish(s).await;
                            }
                            return;
                        }
                    },
                    res = stream_stopped(&mut stream) => {
                        if let Some(s) = stream.take() {
                            self.on_stream_gone(s, res);
                        }
                    }
                    changed = self.link.changed(), if self.link_open => {
                        if changed.is_err() {
                            self.link_open = false;
                        }
                        let moved = stream.as_ref().is_some_and(|s| {
                            !self.current().is_some_and(|c| Arc::ptr_eq(&c, &s.ctx))
                        });
                        if moved {
                            if let Some(s) = stream.take() {
                                retire(s, self.finish_timeout);
                            }
                        }
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let mut bytes = batch[0].len();
                self.gather(&mut batch, &mut bytes);
                if batch.len() < SMALL_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
                    // Let senders that are running right now add to this batch: one quinn write
                    // (and one wake-up of the connection) for many frames instead of one each.
                    tokio::task::yield_now().await;
                    self.gather(&mut batch, &mut bytes);
                }
            }
            if self
                .write_batch(&mut stream, &mut batch, &mut lens)
                .await
                .is_err()
                && !self.wait_for_connection().await
            {
                let dropped = batch.len() as u64 + self.drain_queue();
                self.drop_frames(dropped);
                return;
            }
        }
    }

    /// Moves queued frames into `batch` up to the batch limits.
    fn gather(&mut self, batch: &mut Vec<Bytes>, bytes: &mut usize) {
        while *bytes < MAX_BATCH_BYTES && batch.len() < MAX_BATCH_FRAMES {
            match self.rx.try_recv() {
                Ok(f) => {
                    *bytes += f.len();
                    batch.push(f);
                }
                Err(_) => break,
            }
        }
    }

    /// The live connection writers should use now.
    fn current(&self) -> Option<Arc<ConnCtx>> {
        self.link
            .borrow()
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }

    async fn wait_for_connection(&mut self) -> bool {
        loop {
            if self.current().is_some() {
                return true;
            }
            if !self.link_open {
                return false;
            }
            if self.link.changed().await.is_err() {
                self.link_open = false;
            }
        }
    }

    fn drain_queue(&mut self) -> u64 {
        self.rx.close();
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    fn drop_frames(&self, n: u64) {
        if n > 0 {
            add(&self.counters.frames_dropped, n);
            debug!(peer = %self.peer.short(), class = ?self.class, frames = n, "dropped queued frames: peer gone");
        }
    }

    /// Hands the frames to QUIC on the class stream of the current connection, opening a stream
    /// when needed. On return `batch` holds the frames not yet written.
    async fn write_batch(
        &mut self,
        stream: &mut Option<ClassStream>,
        batch: &mut Vec<Bytes>,
        lens: &mut Vec<usize>,
    ) -> Result<(), NoConnection> {
        let mut reopens = 0u32;
        loop {
            let ctx = self.current().ok_or(NoConnection)?;
            if stream.as_ref().is_some_and(|s| !Arc::ptr_eq(&s.ctx, &ctx)) {
                if let Some(old) = stream.take() {
                    retire(old, self.finish_timeout);
                }
            }
            if stream.is_none() {
                *stream = Some(self.open_stream(ctx).await?);
            }
            let Some(s) = stream.as_mut() else {
                return Err(NoConnection);
            };
            // quinn takes fully written frames out of `batch` and advances a partially written
            // one in place, so remember the lengths (for counters and queue budget).
            lens.clear();
            lens.extend(batch.iter().map(Bytes::len));
            let mut done = 0;
            let mut partial = false;
            let mut failure = None;
            while done < batch.len() {
                match s.send.write_chunks(&mut batch[done..]).await {
                    Ok(written) => {
                        self.sent(&lens[done..done + written.chunks]);
                        done += written.chunks;
                        partial = done < batch.len() && batch[done].len() < lens[done];
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            batch.drain(..done);
            lens.drain(..done);
            match failure {
                None => return Ok(()),
                Some(quinn::WriteError::Stopped(code)) => {
                    if let Some(s) = stream.take() {
                        self.on_stream_gone(s, Ok(Some(code)));
                    }
                    reopens = if done == 0 { reopens + 1 } else { 1 };
                    // A frame cut in the middle by the stop cannot be resent whole; so is a frame
                    // the peer keeps refusing.
                    if partial || (reopens >= MAX_REOPENS_WITHOUT_PROGRESS && !batch.is_empty()) {
                        batch.remove(0);
                        self.release(lens.remove(0));
                        self.drop_frames(1);
                        if !partial {
                            static LOG: LogLimit<NodeId> =
                                LogLimit::new(crate::connections::LOG_INTERVAL, 10, 3);
                            if let Some(suppressed) = LOG.check(self.peer) {
                                warn!(peer = %self.peer.short(), class = ?self.class, suppressed, "peer keeps refusing a frame; dropped it");
                            }
                        }
                        reopens = 0;
                    }
                    if batch.is_empty() {
                        return Ok(());
                    }
                }
                Some(other) => {
                    if let Some(s) = stream.take() {
                        self.on_stream_gone(s, Ok(None));
                    }
                    if partial {
                        batch.remove(0);
                        self.release(lens.remove(0));
                        self.drop_frames(1);
                    }
                    if !matches!(other, quinn::WriteError::ClosedStream) {
                        // Connection lost: wait for the next one.
                        return Err(NoConnection);
                    }
                    if batch.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn open_stream(&self, ctx: Arc<ConnCtx>) -> Result<ClassStream, NoConnection> {
        let send = ctx.conn.open_uni().await.map_err(|_| NoConnection)?;
        ctx.open_send.fetch_add(1, Ordering::AcqRel);
        let _ = send.set_priority(self.class.priority());
        let stopped: StoppedFuture = Box::pin(send.stopped());
        let mut s = ClassStream { ctx, send, stopped };
        if s.send.write_all(&[self.class.tag()]).await.is_err() {
            s.ctx.send_stream_done();
            return Err(NoConnection);
        }
        trace!(peer = %self.peer.short(), class = ?self.class, "opened class stream");
        Ok(s)
    }

    fn on_stream_gone(
        &self,
        stream: ClassStream,
        result: Result<Option<quinn::VarInt>, quinn::StoppedError>,
    ) {
        if let Ok(Some(code)) = result {
            bump(&self.counters.streams_stopped_by_peer);
            info!(
                peer = %self.peer.short(),
                class = ?self.class,
                code = code.into_inner(),
                "peer stopped our class stream; later frames go on a fresh stream"
            );
        }
        stream.ctx.send_stream_done();
    }

    /// Accounts frames of these lengths as handed to QUIC.
    fn sent(&self, frames: &[usize]) {
        if frames.is_empty() {
            return;
        }
        let bytes: usize = frames.iter().sum();
        let permits: usize = frames
            .iter()
            .map(|len| cost(*len, self.capacity) as usize)
            .sum();
        let k = self.counters.class(self.class);
        add(&k.messages_out, frames.len() as u64);
        add(&k.bytes_out, bytes as u64);
        self.budget.add_permits(permits);
    }

    fn release(&self, len: usize) {
        self.budget.add_permits(cost(len, self.capacity) as usize);
    }

    async fn finish(&self, mut s: ClassStream) {
        let _ = s.send.finish();
        let _ = tokio::time::timeout(self.finish_timeout, s.stopped.as_mut()).await;
        s.ctx.send_stream_done();
    }
}
