//! Where the demo crashes a node: a child process running `p2ps node` joins the ring and is
//! SIGKILLed (no goodbye, no QUIC close); its neighbours must detect it by silence and the ring
//! must repair without it.

use super::child::probe_node_command;
use super::departure::Departure;
use super::ring_check::{status_of, true_ring, wait_for_ring, RingReport};
use super::{Demo, DemoArgs};
use anyhow::{Context, Result};
use p2ps::id::ring_id_of;
use p2ps::{Node, NodeId};
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// The name of the crash step's check, also when it is skipped or its victim fails to start.
pub(super) const CRASH_CHECK: &str = "crash detected and repaired";

impl Demo {
    /// Starts a child node, waits until the ring includes it, kills it, and checks that its
    /// neighbours detect the crash and the ring repairs (`leaver` left before). Skipped when
    /// this program cannot run `p2ps node`.
    pub(super) async fn crash_step(&mut self, args: &DemoArgs, leaver: NodeId) -> Result<()> {
        let exe = std::env::current_exe().context("finding this program's path")?;
        let probe = {
            let exe = exe.clone();
            tokio::task::spawn_blocking(move || probe_node_command(&exe))
                .await
                .context("probing `p2ps node`")?
        };
        let help = match probe {
            Ok(h) => h,
            Err(why) => {
                self.skip(CRASH_CHECK, format!("crash step needs `p2ps node` ({why})"));
                return Ok(());
            }
        };
        let Some(mut victim) = self.start_victim(&exe, &help).await? else {
            return Ok(());
        };
        let vid = victim.id;

        // Wait until the ring includes it (ground truth with the child).
        let live = self.live();
        let with_child = true_ring(live.iter().map(Node::id).chain([vid]));
        let (ok, _, r) = wait_for_ring(
            &live,
            &with_child,
            self.list_len,
            &[leaver],
            Duration::from_secs(20),
            RingReport::neighbours_ok,
        )
        .await?;
        let member = if ok {
            match timeout(Duration::from_secs(10), live[0].lookup(ring_id_of(&vid))).await {
                Ok(Ok(a)) => a.node == vid,
                _ => false,
            }
        } else {
            false
        };
        self.check(
            "child node joined",
            ok && member,
            victim.spawned.elapsed(),
            if ok && member {
                format!(
                    "child {} is in the ring: its neighbours point at it and a lookup of its \
                     position names it",
                    vid.short()
                )
            } else {
                format!(
                    "{} (lookup of its position named it: {member})",
                    r.describe()
                )
            },
        );
        if !(ok && member) {
            return Ok(());
        }

        // SIGKILL: no goodbye, no QUIC close. Detection is by silence.
        let (neighbours, around) = self.neighbours_of(&with_child, &vid);
        let before = sum_counters(&live).await?;
        let t_kill = Instant::now();
        victim.child.kill()?;
        self.p
            .say(format!("SIGKILLed the child {} ({around})", vid.short()));
        let seen = self
            .neighbour_down(&neighbours, vid, t_kill, Duration::from_secs(20))
            .await;
        self.crash_times.0 = seen.as_ref().ok().map(Duration::as_secs_f64);
        let after = sum_counters(&live).await?;
        self.check(
            "crash detected",
            seen.is_ok(),
            t_kill.elapsed(),
            match &seen {
                Ok(detect) => format!(
                    "the victim's predecessor and successor emitted NeighbourDown({}) {:.2} s \
                     after the kill (across nodes: {} QUIC idle timeouts, {} peers declared \
                     failed by the overlay)",
                    vid.short(),
                    detect.as_secs_f64(),
                    after.0.saturating_sub(before.0),
                    after.1.saturating_sub(before.1)
                ),
                Err(missing) => format!("neighbours without NeighbourDown after 20 s: {missing:?}"),
            },
        );
        let departure = Departure {
            event: "crash",
            gone: vid,
            who: "the victim",
            departed: &[leaver, vid],
            since: t_kill,
            after: |t| format!("{:.2} s after the kill", t.as_secs_f64()),
        };
        let repaired = self.check_repaired(&departure, &live, args).await?;
        self.crash_times.1 = Some(repaired.as_secs_f64());
        Ok(())
    }
}

/// (connections timed out, peers declared failed) summed over `nodes`.
async fn sum_counters(nodes: &[Node]) -> Result<(u64, u64)> {
    let mut sum = (0, 0);
    for n in nodes {
        let c = status_of(n).await?.counters;
        sum.0 += c.peers_timed_out;
        sum.1 += c.peers_failed;
    }
    Ok(sum)
}
