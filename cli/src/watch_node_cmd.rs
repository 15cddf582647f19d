//! `p2ps watch-node ID`: what becomes of a node of the network, through a running node: a
//! line when it answers, then one when it fails (its ring neighbours report it, and the
//! running node's own probe confirms it) or leaves, and the command exits.

use crate::control::client::ControlOpts;
use crate::control::protocol::{NodeFate, NodeWatchLine, Request};
use crate::control::render::{print_json, write_stdout};
use anyhow::{bail, Context, Result};

/// Arguments of `p2ps watch-node`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps watch-node d67394b546\n  p2ps watch-node \
                        d67394b546 --json\n\nExits 0 once the node failed or left, 1 if the \
                        watch cannot start or the running node stops."
)]
pub struct WatchNodeArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The node to watch: its 64 hex digits, or a prefix of at least 4 that names one node the
    /// running node knows.
    #[arg(value_name = "ID")]
    id: String,
    /// Print every event as one line of JSON: `{"node","event",…}`, `event` being `watching`,
    /// `failed` (with `reported_by`, `probe_ms`, `at_unix_ms`) or `left` (with `at_unix_ms`).
    #[arg(long)]
    json: bool,
}

/// Runs `p2ps watch-node`.
pub fn run(args: WatchNodeArgs) -> Result<()> {
    crate::node_ids::parse_id_arg(&args.id).map_err(anyhow::Error::msg)?;
    let req = Request::WatchNode {
        node: args.id.clone(),
    };
    let mut ended = false;
    let streamed = args.control.stream(&req, |v| {
        let line: NodeWatchLine = serde_json::from_value(v.clone())
            .with_context(|| format!("the node sent a malformed event: {v}"))?;
        if args.json {
            print_json(&v)?;
        } else {
            write_stdout(&render(&line))?;
        }
        ended = line.event != NodeFate::Watching;
        Ok(!ended)
    });
    match streamed {
        Ok(()) => Ok(()),
        // The node closes the stream after the final line; it may come first.
        Err(_) if ended => Ok(()),
        Err(e) => Err(e),
    }
    .and_then(|()| {
        if ended {
            Ok(())
        } else {
            bail!("the watch ended without a word on the node")
        }
    })
}

/// One line for a node watch event.
fn render(l: &NodeWatchLine) -> String {
    let short = l.node.get(..10).unwrap_or(&l.node);
    match l.event {
        NodeFate::Watching => format!("watching {short} (it answered)"),
        NodeFate::Failed => {
            let by = l
                .reported_by
                .as_deref()
                .map_or("this node's own evidence".to_string(), |r| {
                    format!("reported by {}", r.get(..10).unwrap_or(r))
                });
            let probe = l.probe_ms.unwrap_or(0) as f64 / 1000.0;
            format!("{short} failed ({by}; unanswered probe {probe:.1} s)")
        }
        NodeFate::Left => format!("{short} left the network"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_sentences() {
        let mut l = NodeWatchLine {
            node: "d67394b546".repeat(6) + "abcd",
            event: NodeFate::Watching,
            reported_by: None,
            probe_ms: None,
            at_unix_ms: None,
        };
        assert_eq!(render(&l), "watching d67394b546 (it answered)");
        l.event = NodeFate::Failed;
        l.probe_ms = Some(2_004);
        l.reported_by = Some("0123456789abcdef".into());
        assert_eq!(
            render(&l),
            "d67394b546 failed (reported by 0123456789; unanswered probe 2.0 s)"
        );
        l.event = NodeFate::Left;
        assert_eq!(render(&l), "d67394b546 left the network");
    }
}
