//! The node's UPnP port mapper ([`p2ps_transport::portmap`]) run inside a lab namespace, so
//! that its SSDP search and gateway calls go out of the site's host.

use super::error::{NatLabError, Result};
use super::netns;
use p2ps_transport::portmap::{MappingState, PortMapConfig, PortMapError, PortMapper};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A [`PortMapper`] running on its own thread (with a current-thread tokio runtime) inside a
/// lab namespace. Every state it goes through is recorded; dropping this stops the mapper.
#[derive(Debug)]
pub struct NsPortMapper {
    states: mpsc::Receiver<MappingState>,
    seen: Vec<MappingState>,
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<Result<(), PortMapError>>,
    shutdown_limit: Duration,
}

impl NsPortMapper {
    /// Starts mapping UDP port `port` of the host in namespace `ns`.
    pub fn start(ns: &str, config: PortMapConfig, port: u16) -> Result<NsPortMapper> {
        let (state_tx, states) = mpsc::channel();
        let (done_tx, done) = mpsc::sync_channel(1);
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        let shutdown_limit = config.call_timeout * 2 + Duration::from_secs(3);
        let ns_name = ns.to_string();
        netns::spawn_in(ns, move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = done_tx.send(Err(PortMapError::Task(format!(
                        "no tokio runtime in {ns_name}: {e}"
                    ))));
                    return;
                }
            };
            let result = runtime.block_on(async move {
                let mapper = PortMapper::start(config, port)?;
                let mut watch = mapper.watch();
                let _ = state_tx.send(watch.borrow_and_update().clone());
                loop {
                    tokio::select! {
                        changed = watch.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            let _ = state_tx.send(watch.borrow_and_update().clone());
                        }
                        _ = &mut stop_rx => break,
                    }
                }
                let result = mapper.shutdown().await;
                let _ = state_tx.send(watch.borrow().clone());
                result
            });
            let _ = done_tx.send(result);
        })?;
        Ok(NsPortMapper {
            states,
            seen: Vec::new(),
            stop: Some(stop),
            done,
            shutdown_limit,
        })
    }

    /// Waits up to `timeout` for a state that satisfies `pred` and returns it (None: none came;
    /// see [`history`](Self::history)).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&MappingState) -> bool,
    ) -> Option<MappingState> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let state = self.states.recv_timeout(left).ok()?;
            self.seen.push(state.clone());
            if pred(&state) {
                return Some(state);
            }
        }
    }

    /// Waits up to `timeout` for the first state other than `Searching`.
    pub fn wait_settled(&mut self, timeout: Duration) -> Option<MappingState> {
        self.wait_for(timeout, MappingState::is_settled)
    }

    /// Every state received so far.
    pub fn history(&self) -> &[MappingState] {
        &self.seen
    }

    /// Stops the mapper (removing its mapping) and returns what its shutdown reported.
    pub fn shutdown(mut self) -> Result<Result<(), PortMapError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = self
            .done
            .recv_timeout(self.shutdown_limit)
            .map_err(|_| NatLabError::Io {
                what: "stopping the port mapper".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no result within {:?}", self.shutdown_limit),
                ),
            });
        while let Ok(state) = self.states.try_recv() {
            self.seen.push(state);
        }
        result
    }
}
