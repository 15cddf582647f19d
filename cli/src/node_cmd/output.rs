//! What `p2ps node` prints on stdout: its id, its ticket once it is part of a network, then a
//! line per incoming message and per neighbour change, as text for people or, with `--json`,
//! as JSON lines for scripts; and on stderr how a join is going.
//!
//! Payloads come from other nodes: they are printed escaped, on one line; in text, a flood is
//! summarised rather than printed line by line (`flood.rs`).

use super::flood::{FloodGate, Hidden, SHOWN_PER_SEC};
use super::run::Mode;
use p2ps::{Delivery, JoinStep, Node, NodeEvent, NodeId, Via};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// What the node prints on stdout: human lines, or JSON lines with `--json`.
pub(super) struct Output {
    /// JSON lines rather than text.
    json: bool,
    /// Text output under a flood: counted, not printed (see `flood.rs`).
    gate: RefCell<FloodGate>,
    /// The join's bootstrap was connected (for the progress lines).
    join_connected: Cell<bool>,
}

impl Output {
    /// Output as text, or as JSON lines.
    pub(super) fn new(json: bool) -> Self {
        Output {
            json,
            gate: RefCell::new(FloodGate::new(Instant::now())),
            join_connected: Cell::new(false),
        }
    }

    /// Says what a flood's window held back, once it ended (called every second or so).
    pub(super) fn flood_summary(&self) {
        if self.json {
            return;
        }
        let hidden = self.gate.borrow_mut().summary(Instant::now());
        if let Some(h) = hidden {
            self.print_hidden(&h);
        }
    }

    fn print_hidden(&self, h: &Hidden) {
        let _ = writeln!(
            std::io::stdout().lock(),
            "… {} more messages in the last second from {} sender(s), not shown (more than {} \
             a second; `--json` prints every one)",
            h.messages,
            h.senders,
            SHOWN_PER_SEC
        );
    }
    /// Prints one line: `human` as text, or `json` as a JSON line with `--json`.
    fn line(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
        let text = if self.json {
            json().to_string()
        } else {
            human()
        };
        // A closed stdout must not stop the node.
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// The node has started: its id, addresses and control socket. Its ticket comes once it is
    /// part of a network ([`Output::joined`]): a ticket printed before would lead others to a
    /// node that may never join.
    pub(super) fn started(&self, node: &Node, control: &Path) {
        if self.json {
            self.line(String::new, || {
                serde_json::json!({
                    "event": "started",
                    "id": node.id().to_string(),
                    "addrs": node.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "control": control.display().to_string(),
                    "network": node.network().map(|n| n.to_string()),
                })
            });
            return;
        }
        let addrs: Vec<String> = node.addrs().iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            std::io::stdout().lock(),
            "id: {}\naddresses: {}\ncontrol: {}",
            node.id(),
            addrs.join(" "),
            control.display()
        );
        if let Some(name) = node.network() {
            let _ = writeln!(
                std::io::stdout().lock(),
                "network: {name} (private: only nodes with its network key connect)"
            );
        }
    }

    /// How far the join has come, on stderr (stdout stays for what scripts read): whatever the
    /// log level, a join that takes long or fails shows what it tried.
    pub(super) fn join_step(&self, step: &JoinStep) {
        let line = match step {
            JoinStep::Dialing { via, addrs } => {
                let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                format!(
                    "joining through {}: connecting to {}",
                    via.short(),
                    addrs.join(", ")
                )
            }
            JoinStep::Connected { via, addr } => {
                self.join_connected.set(true);
                format!("connected to {} at {addr}", via.short())
            }
            JoinStep::Requested { attempt, of } => {
                let waiting = if self.join_connected.get() {
                    ""
                } else {
                    ", waiting for the connection"
                };
                format!("join request {attempt} of {of} sent{waiting}")
            }
            // Steps of newer versions of the library.
            _ => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// The HTTP interface listens on `addr`.
    pub(super) fn http(&self, addr: std::net::SocketAddr) {
        if self.json {
            self.line(
                String::new,
                || serde_json::json!({"event": "http", "addr": addr.to_string()}),
            );
            return;
        }
        let _ = writeln!(std::io::stdout().lock(), "http: http://{addr}");
    }

    /// The node is part of a network: one it created, or one it joined; then its ticket.
    pub(super) fn joined(&self, node: &Node, mode: &Mode) {
        let via = match mode {
            Mode::Create => None,
            Mode::Join(t) => Some(t.id),
        };
        let ticket = node.ticket().to_string();
        self.line(
            || match via {
                None => format!("created a new network\nticket: {ticket}"),
                Some(v) => format!("joined the network through {}\nticket: {ticket}", v.short()),
            },
            || {
                serde_json::json!({
                    "event": "joined",
                    "id": node.id().to_string(),
                    "created": via.is_none(),
                    "via": via.map(|v| v.to_string()),
                    "ticket": ticket,
                })
            },
        );
    }

    /// A message for this node (in text, counted instead when too many come at once).
    pub(super) fn message(&self, m: &Delivery) {
        if !self.json {
            let (print, ended) = self.gate.borrow_mut().admit(Instant::now(), m.from);
            if let Some(h) = ended {
                self.print_hidden(&h);
            }
            if !print {
                return;
            }
        }
        let to = m.via.to_string();
        self.line(
            || {
                format!(
                    "message from {} ({} hops, to {to}): {}",
                    m.from.short(),
                    m.hops,
                    printable(&m.payload)
                )
            },
            || message_json(m),
        );
    }

    /// A neighbour change, a dropped group child, or isolation; other events are not printed.
    pub(super) fn event(&self, e: &NodeEvent) {
        let (what, id): (&str, NodeId) = match e {
            NodeEvent::NeighbourUp(id) => ("neighbour_up", *id),
            NodeEvent::NeighbourDown(id) => ("neighbour_down", *id),
            NodeEvent::GroupChildDropped { group, peer } => {
                let group = group.to_string();
                self.line(
                    || {
                        format!(
                            "slow child {} dropped from group tree {group}",
                            peer.short()
                        )
                    },
                    || {
                        serde_json::json!({
                            "event": "group_child_dropped",
                            "group": group,
                            "node": peer.to_string(),
                        })
                    },
                );
                return;
            }
            NodeEvent::Isolated => {
                self.line(
                    || "isolated: lost every neighbour, joining again".to_string(),
                    || serde_json::json!({"event": "isolated"}),
                );
                return;
            }
            // Joining and leaving are printed where they happen (and events of newer versions
            // of the library are not printed).
            _ => return,
        };
        self.line(
            || format!("{}: {}", what.replace('_', " "), id.short()),
            || serde_json::json!({"event": what, "node": id.to_string()}),
        );
    }

    /// The node has stopped: it left the network, or (`joined` false) it was stopped before it
    /// was part of one.
    pub(super) fn left(&self, joined: bool) {
        self.line(
            || {
                if joined {
                    "left the network".to_string()
                } else {
                    "stopped before joining a network".to_string()
                }
            },
            || serde_json::json!({"event": "left", "joined": joined}),
        );
    }
}

/// A message for this node as JSON: what `--json` prints and `GET /events` streams
/// (`{"event":"message","from","hops","to","group","key","payload"}`).
pub(super) fn message_json(m: &Delivery) -> serde_json::Value {
    serde_json::json!({
        "event": "message",
        "from": m.from.to_string(),
        "hops": m.hops,
        "to": m.via.to_string(),
        "group": match &m.via {
            Via::Group(g) => Some(g.clone()),
            _ => None,
        },
        "key": m.key.to_string(),
        "payload": String::from_utf8_lossy(&m.payload),
    })
}

/// A payload as one line of text: UTF-8 (lossy) with control characters escaped, so that a
/// peer can neither break the line structure nor send terminal escapes.
fn printable(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_print_on_one_line() {
        assert_eq!(printable(b"hello"), "hello");
        assert_eq!(printable(b"a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }
}
