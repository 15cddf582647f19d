//! How the client subcommands show what a node answered: JSON as is, or the human view of a
//! status.

use anyhow::{Context, Result};
use p2ps::{NodeId, Status};
use serde::Serialize;
use std::io::Write;

/// Prints `v` as one line of JSON on stdout.
pub(crate) fn print_json(v: &impl Serialize) -> Result<()> {
    let s = serde_json::to_string(v).context("encoding JSON")?;
    write_stdout(&s)
}

/// Prints `s` and a newline on stdout.
pub(crate) fn write_stdout(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").context("writing to stdout")
}

/// Short ids separated by spaces, or `-` for none.
fn short_list(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(|i| i.short().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human view of a status.
pub(crate) fn render_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let addrs = s
        .addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(o, "id:            {}", s.id);
    let _ = writeln!(
        o,
        "state:         {} (strategy {}, up {:.1} s)",
        s.state, s.strategy, s.uptime_secs
    );
    let _ = writeln!(o, "addresses:     {addrs}");
    let external = s
        .external_addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        o,
        "reachability:  {} (seen at: {}; UPnP: {}; relay: {})",
        s.reachability,
        if external.is_empty() { "-" } else { &external },
        s.port_mapping,
        short_list(&s.relay)
    );
    let _ = writeln!(o, "ring position: {}", s.ring_position);
    let _ = writeln!(o, "successors:    {}", short_list(&s.successors));
    let _ = writeln!(o, "predecessors:  {}", short_list(&s.predecessors));
    let fingers = if s.fingers.is_empty() {
        "-".to_string()
    } else {
        s.fingers
            .iter()
            .map(|f| format!("{}{}:{}", f.dir, f.level, f.node.short()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(o, "fingers:       {fingers}");
    let _ = writeln!(o, "neighbours:    {} distinct", s.distinct_neighbours);
    if let Some(n) = s.network_size_estimate {
        let _ = writeln!(o, "network size:  about {n} nodes (from ring density)");
    }
    let _ = writeln!(o, "connections:   {}", s.connections.len());
    for c in &s.connections {
        let path = if c.relayed_by.is_empty() {
            String::new()
        } else {
            format!("  relayed by {}", short_list(&c.relayed_by))
        };
        let _ = writeln!(
            o,
            "  {}  {:<22} {:<3}  rtt {:.2} ms{path}",
            c.node.short(),
            c.addr.to_string(),
            if c.outbound { "out" } else { "in" },
            c.rtt_ms
        );
    }
    let _ = writeln!(o, "groups:        {}", s.groups.len());
    for g in &s.groups {
        let role = match (g.member, g.root) {
            (true, true) => "member, root",
            (true, false) => "member",
            (false, true) => "forwarder, root",
            (false, false) => "forwarder",
        };
        let _ = writeln!(
            o,
            "  {:<20} {:<16} parent {}  children {}",
            g.name.as_deref().unwrap_or("(unnamed)"),
            role,
            short_list(&g.parent),
            short_list(&g.children)
        );
    }
    let c = &s.counters;
    let _ = writeln!(o, "counters:");
    let _ = writeln!(
        o,
        "  messages in/out  {} / {}   bytes in/out {} / {} (routing {}, tree {}, user {})   \
         UDP bytes in/out {} / {}",
        c.messages_in,
        c.messages_out,
        c.bytes_in,
        c.bytes_out,
        c.routing_bytes_out,
        c.tree_bytes_out,
        c.user_bytes_out,
        c.udp_bytes_in,
        c.udp_bytes_out
    );
    let _ = writeln!(
        o,
        "  routed           forwarded {}  delivered {}  dropped {}",
        c.forwarded, c.delivered, c.dropped
    );
    let _ = writeln!(
        o,
        "  lookups          ok {}  failed {}",
        c.lookups_ok, c.lookups_failed
    );
    let _ = writeln!(
        o,
        "  trust            forged {}  stale {}  unverified contacts {}  bad answers {}  \
         rejoins {}",
        c.forged, c.stale, c.unverified, c.bad_answers, c.rejoins
    );
    let _ = writeln!(
        o,
        "  NAT              traversals {} (failed {})  sent via a relay {}  passed on for \
         peers {}  forwards refused {}",
        c.traversals,
        c.traversals_failed,
        c.forwarded_via_relay,
        c.forwarded_for_peers,
        c.forwards_refused
    );
    let _ = write!(
        o,
        "  failures         peers failed {}  timed out {}  queue full {} (tree {})  send failed {}  \
         inbox dropped {}  over a peer's rate {}  frame errors {}  handshakes failed {}",
        c.peers_failed,
        c.peers_timed_out,
        c.send_queue_full,
        c.tree_queue_full,
        c.send_failed,
        c.inbox_dropped,
        c.rate_limited,
        c.frame_errors,
        c.handshakes_failed
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_shows_its_typed_values_in_words() {
        let text = render_status(&crate::control::protocol::sample_status());
        for line in [
            "state:         rejoining (strategy tango+, up 12.5 s)",
            "reachability:  port-mapped (seen at: 203.0.113.7:4433; UPnP: mapped \
             203.0.113.7:4433 (2 renewals); relay: 0909090909)",
            "fingers:       +0:0202020202 -3:0404040404",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
