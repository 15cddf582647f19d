//! The node events the checks wait for (`Joined`, `Left`, `NeighbourDown`), collected from every
//! node as they happen, with the time each was seen.

use p2ps::{Node, NodeEvent};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Node events of every node, collected by one forwarding task per node.
pub(super) struct EventLog {
    tx: mpsc::UnboundedSender<(usize, Instant, NodeEvent)>,
    rx: mpsc::UnboundedReceiver<(usize, Instant, NodeEvent)>,
    seen: Vec<(usize, Instant, NodeEvent)>,
    tasks: Vec<JoinHandle<()>>,
}

impl EventLog {
    /// An empty log, watching no node yet.
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        EventLog {
            tx,
            rx,
            seen: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts collecting the events of node `idx` (ends when the node stops).
    pub(super) fn watch(&mut self, idx: usize, node: &Node) {
        let mut sub = node.events();
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if tx.send((idx, Instant::now(), e)).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }));
    }

    /// Moves the events forwarded so far into `seen`.
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// When node `idx` first emitted an event matching `want` at or after `since`.
    fn when(&mut self, idx: usize, since: Instant, want: &NodeEvent) -> Option<Instant> {
        self.drain();
        self.seen
            .iter()
            .find(|(i, t, e)| *i == idx && *t >= since && e == want)
            .map(|(_, t, _)| *t)
    }

    /// Waits (bounded) until every node in `idxs` emitted `want` after `since`; returns the
    /// latest of those times, or the nodes that did not.
    pub(super) async fn wait_all(
        &mut self,
        idxs: &[usize],
        since: Instant,
        want: &NodeEvent,
        limit: Duration,
    ) -> std::result::Result<Instant, Vec<usize>> {
        let t = Instant::now();
        loop {
            let times: Vec<(usize, Option<Instant>)> = idxs
                .iter()
                .map(|i| (*i, self.when(*i, since, want)))
                .collect();
            if times.iter().all(|(_, t)| t.is_some()) {
                return Ok(times.iter().filter_map(|(_, t)| *t).max().unwrap_or(since));
            }
            if t.elapsed() >= limit {
                return Err(times
                    .iter()
                    .filter(|(_, t)| t.is_none())
                    .map(|(i, _)| *i)
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every forwarding task.
    pub(super) fn stop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
