//! Where the demo starts its nodes: each with a fresh key and short protocol intervals on
//! loopback; node 0 creates the network, the others join one by one through the ticket of a
//! random node already in.

use super::output::short_ticket;
use super::{Demo, DemoArgs};
use anyhow::{bail, Context, Result};
use p2ps::{Identity, Node, NodeConfig, NodeEvent};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// The demo's node settings: short intervals so that everything happens within seconds.
fn demo_config(seed: u64) -> Result<NodeConfig> {
    let identity = Identity::generate().context("generating a node key")?;
    let mut c = NodeConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
    c.overlay.stabilize_interval = Duration::from_millis(300);
    c.overlay.stabilize_timeout = Duration::from_millis(1500);
    c.overlay.finger_refresh_period = Duration::from_secs(5);
    c.overlay.seed = seed;
    c.idle_timeout = Duration::from_secs(2);
    c.keep_alive = Duration::from_millis(500);
    Ok(c)
}

impl Demo {
    /// Starts `--nodes` nodes, makes node 0 create the network and the others join, and checks
    /// that every join succeeded with a `Joined` event (events count from `t_start`). Fails if
    /// a node could not join.
    pub(super) async fn start_and_join(&mut self, args: &DemoArgs, t_start: Instant) -> Result<()> {
        let n = args.nodes;
        let mut ports = Vec::new();
        for i in 0..n {
            let cfg = demo_config(args.seed.wrapping_add(i as u64))?;
            let node = Node::start(cfg)
                .await
                .with_context(|| format!("starting node {i}"))?;
            ports.extend(node.addrs().iter().map(|a| a.port()));
            self.events.watch(i, &node);
            self.nodes.push(node);
            self.alive.push(false);
        }
        self.p.say(format!(
            "{n} nodes started, each with its own key, UDP socket and QUIC endpoint (ports {}..{})",
            ports.iter().min().copied().unwrap_or(0),
            ports.iter().max().copied().unwrap_or(0)
        ));
        self.nodes[0]
            .create()
            .await
            .context("node 0 creating the network")?;
        self.alive[0] = true;
        self.p.say(format!(
            "node  0 {} created the network",
            self.nodes[0].id().short()
        ));

        let t_join = Instant::now();
        let mut join_failures = Vec::new();
        for i in 1..n {
            let via = self.rng.below(i);
            let ticket = self.nodes[via].ticket();
            let t = Instant::now();
            let r = timeout(Duration::from_secs(30), self.nodes[i].join(&ticket)).await;
            match r {
                Ok(Ok(())) => {
                    self.alive[i] = true;
                    if n <= 32 || i % 16 == 0 || i == n - 1 {
                        self.p.say(format!(
                            "node {i:>2} {} joined via node {via} in {:>3} ms, ticket {}",
                            self.nodes[i].id().short(),
                            t.elapsed().as_millis(),
                            short_ticket(&ticket)
                        ));
                    }
                }
                // With its causes: why the bootstrap node could not be reached.
                Ok(Err(e)) => join_failures.push(format!("node {i}: {:#}", anyhow::Error::new(e))),
                Err(_) => join_failures.push(format!("node {i}: no answer in 30 s")),
            }
        }
        let joined = self.alive.iter().filter(|a| **a).count();
        let joiners: Vec<usize> = (1..n).filter(|i| self.alive[*i]).collect();
        let missing_joined_events = self
            .events
            .wait_all(
                &joiners,
                t_start,
                &NodeEvent::Joined,
                Duration::from_secs(2),
            )
            .await
            .err()
            .unwrap_or_default();
        self.p.say(format!("{joined} nodes joined"));
        self.check(
            "join through tickets",
            join_failures.is_empty() && missing_joined_events.is_empty(),
            t_join.elapsed(),
            if join_failures.is_empty() && missing_joined_events.is_empty() {
                format!(
                    "{} joins succeeded, each node emitted NodeEvent::Joined",
                    n - 1
                )
            } else {
                format!(
                    "join failures: {join_failures:?}; joined without a Joined event: \
                     {missing_joined_events:?}"
                )
            },
        );
        if !join_failures.is_empty() {
            bail!("some nodes could not join; stopping here");
        }
        Ok(())
    }
}
