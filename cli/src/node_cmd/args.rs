//! The flags of `p2ps node` and the examples of its `--help`.
//!
//! The parsers of flag values live here too: the `--config` file's settings go through the
//! same ones, so that a value is spelt the same way in both places.

use super::dict_limits::DictLimitArgs;
use super::limits::LimitArgs;
use p2ps::{FingerStrategy, LookupMode, Ticket};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The examples at the end of `p2ps node --help`.
const EXAMPLES: &str = "\
Examples:
  # Start a new network; the node prints its id and `ticket: p2ps1…`.
  p2ps node --create

  # On the same machine, a second node joins through that ticket.
  p2ps node --name second --join p2ps1…

  # Reachable from other machines, with a key kept elsewhere and the ticket saved for scripts.
  p2ps node --create --listen 0.0.0.0:4433 --advertise 192.0.2.7:4433 \\
      --key ~/p2ps/a.key --ticket-file /tmp/a.ticket

  # A private network: only nodes holding the same key (made once, copied to each) connect.
  p2ps network-key new net.key
  p2ps node --create --network-key net.key

  # The dictionary's records in a directory of your choice, or in memory only.
  p2ps node --create --data-dir /var/lib/p2ps/a
  p2ps node --create --no-persist

  # Keep at most 1000 keys and 8 MiB of any one writer.
  p2ps node --create --dict-max-keys-per-writer 1000 --dict-max-bytes-per-writer 8388608

  # Every setting from a TOML file (flags and P2PS_* variables override it):
  #   key = \"/home/me/p2ps/a.key\"        listen = \"0.0.0.0:4433\"
  #   advertise = [\"192.0.2.7:4433\"]     name = \"a\"
  #   strategy = \"tango\"                 stabilize_interval_ms = 1000
  #   upnp = true   relay_serve = true     log = \"info\"
  #   network_key = \"/home/me/p2ps/net.key\"
  #   and in a [limits] table: max_connections = 256, max_connections_per_ip = 8, …
  #   and in a [dict] table: max_keys_per_writer = 1000, max_bytes = 104857600, …
  p2ps node --create --config node.toml

Then, from another terminal: `p2ps status`, `p2ps lookup KEY`, `p2ps send NODE_ID TEXT`,
`p2ps route KEY TEXT`, `p2ps leave` (with --name NAME or --control PATH for other nodes).

Output: `id: …` first, `ticket: …` once the node created or joined its network, then one
line per incoming message (`message from <short id> (<hops> hops, to node|key): <text>`) and
per neighbour change. With --json every line is a JSON object with an \"event\" field.
A join's progress (connecting, connected, join request k of n) and logs go to stderr (--log).";

/// Arguments of `p2ps node`.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = EXAMPLES,
    group(clap::ArgGroup::new("mode").required(true).args(["create", "join"]))
)]
pub struct NodeArgs {
    /// Start a new network with this node as its first member.
    #[arg(long)]
    create: bool,
    /// Join the network of the node whose ticket this is (the `ticket: p2ps1…` line it printed).
    #[arg(long, value_name = "TICKET", value_parser = parse_ticket)]
    pub(super) join: Option<Ticket>,
    /// The node's key file (created if missing; same key, same node id); default:
    /// `$XDG_DATA_HOME/p2ps/<NAME>.key` or `~/.local/share/p2ps/<NAME>.key`, that is `node.key`
    /// for the default name. An explicit path's directory must exist.
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "FILE",
        env = "P2PS_KEY",
        help = "The node's key file (created if missing; same key, same node id) [default: \
                $XDG_DATA_HOME/p2ps/<NAME>.key or ~/.local/share/p2ps/<NAME>.key, that is \
                node.key for the default name]. An explicit path's directory must exist"
    )]
    pub(super) key: Option<PathBuf>,
    /// UDP address to listen on, IP:PORT or HOST:PORT (a host name is resolved, its first
    /// IPv4 address preferred) [default: 127.0.0.1:0, loopback only on a free port; use e.g.
    /// 0.0.0.0:4433 to be reachable from other machines].
    #[arg(long, value_name = "ADDR", env = "P2PS_LISTEN", value_parser = resolve_listen)]
    pub(super) listen: Option<SocketAddr>,
    /// Address to put in the ticket and tell peers (repeatable) [default: the bound address].
    #[arg(long, value_name = "ADDR")]
    pub(super) advertise: Vec<SocketAddr>,
    /// Control socket for `p2ps status` and friends (default:
    /// `$XDG_RUNTIME_DIR/p2ps/<NAME>.sock`, or `/tmp/p2ps-<uid>/<NAME>.sock`).
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "PATH",
        env = "P2PS_CONTROL",
        help = "Control socket for `p2ps status` and friends [default: \
                $XDG_RUNTIME_DIR/p2ps/<NAME>.sock, or /tmp/p2ps-<uid>/<NAME>.sock]"
    )]
    pub(super) control: Option<PathBuf>,
    /// This node's name on this machine: picks the default key file and control socket
    /// [default: node].
    #[arg(long, value_name = "NAME", env = "P2PS_NAME")]
    pub(super) name: Option<String>,
    /// The private network's key file (64 hex characters, mode 0600; make one with `p2ps
    /// network-key new FILE`): only nodes with the same key can connect to this one, and its
    /// ticket carries the network's public name [default: none, an open network].
    #[arg(long, value_name = "FILE", env = "P2PS_NETWORK_KEY")]
    pub(super) network_key: Option<PathBuf>,
    /// Write the node's ticket to this file once it is part of a network.
    #[arg(long, value_name = "FILE")]
    pub(super) ticket_file: Option<PathBuf>,
    /// Where the node keeps its data (the dictionary's records, in `dict.redb`), so that it
    /// keeps them when restarted with the same key; created if missing (mode 0700); default:
    /// beside the key file, `<KEY>.data` for the key `<KEY>.key`.
    // The help text is written out: clap would show the backticks above.
    #[arg(
        long,
        value_name = "DIR",
        env = "P2PS_DATA_DIR",
        conflicts_with = "no_persist",
        value_parser = parse_data_dir,
        help = "Where the node keeps its data (the dictionary's records, in dict.redb), so that \
                it keeps them when restarted with the same key; created if missing (mode 0700) \
                [default: beside the key file, <KEY>.data for the key <KEY>.key]"
    )]
    pub(super) data_dir: Option<PathBuf>,
    /// Keep the dictionary's records in memory only: a restarted node starts empty (and gets
    /// its keys back from the other replicas).
    #[arg(long)]
    pub(super) no_persist: bool,
    /// Serve the node's HTTP interface on this address, e.g. 127.0.0.1:9090 (port 0: any free
    /// port, printed at start): a dashboard at `/`, `/metrics` for Prometheus, `/status` and
    /// `/census` as JSON, `/ring.svg`, the JSON API `POST /api` (control requests) and
    /// server-sent events (`/events`, `/watch?key=K`, `/watch-node?node=ID`). An address other
    /// than loopback needs --http-token; without one, every user of this machine may use the
    /// node's commands, so give one on a shared machine.
    #[arg(long, value_name = "ADDR", env = "P2PS_HTTP")]
    pub(super) http: Option<SocketAddr>,
    /// A file holding the bearer token every HTTP request (but the dashboard page, which holds
    /// no data) must carry (`Authorization: Bearer <token>`); created with a random token
    /// (mode 0600) if missing; refused if others may read it.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub(super) http_token: Option<PathBuf>,
    /// A TOML file with any of these settings (key, network_key, listen, advertise, control,
    /// name, ticket_file, data_dir, persist (false: --no-persist), strategy, lookup_mode, upnp,
    /// relay_serve, log, and the overlay tunables
    /// with their flag names in snake_case; resource limits in a [limits] table, likewise;
    /// dictionary quotas in a [dict] table, without the flags' `dict-` prefix).
    /// Relative paths in it are relative to the file. Flags and P2PS_* variables override it.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Finger strategy: tango, chord or tango+ [default: tango].
    #[arg(long, value_name = "NAME", value_parser = parse_strategy)]
    pub(super) strategy: Option<FingerStrategy>,
    /// How lookups find the responsible node: `routed` (hop by hop through the overlay, the
    /// answer back along the route) or `steered` (this node asks the nodes nearest the key
    /// itself, taking only signed records and judging answers: sturdier against hostile nodes,
    /// about as many messages, a connection to each node asked) [default: routed].
    #[arg(long, value_name = "MODE", value_parser = parse_lookup_mode)]
    pub(super) lookup_mode: Option<LookupMode>,
    /// Print machine-readable JSON lines on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// Protocol version to speak (for testing version handling: nodes of other versions refuse
    /// each other).
    #[arg(long, hide = true, value_name = "N")]
    pub(super) protocol_version: Option<u32>,
    /// Ask the local UPnP gateway to forward the node's port (off by default: discovery sends
    /// SSDP multicast on the local network).
    #[arg(long)]
    pub(super) upnp: bool,
    /// Relay traffic for nodes behind NATs that cannot be reached directly (end-to-end
    /// encrypted: this node sees only ciphertext).
    #[arg(long)]
    pub(super) relay_serve: bool,
    #[command(flatten)]
    pub(super) tunables: Tunables,
    #[command(flatten)]
    pub(super) limits: LimitArgs,
    #[command(flatten)]
    pub(super) dict: DictLimitArgs,
}

/// The overlay's and transport's timing knobs (defaults suit the internet; tests shorten them).
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Overlay tunables")]
pub(super) struct Tunables {
    /// Exchange lists with the immediate neighbours this often [default: 2000].
    #[arg(long, value_name = "MS")]
    pub(super) stabilize_interval_ms: Option<u64>,
    /// A neighbour silent this long after a stabilisation request is taken for crashed
    /// [default: 3000].
    #[arg(long, value_name = "MS")]
    pub(super) stabilize_timeout_ms: Option<u64>,
    /// Re-probe every finger slot once per this period [default: 120000].
    #[arg(long, value_name = "MS")]
    pub(super) finger_refresh_ms: Option<u64>,
    /// Successors kept, and as many predecessors [default: 8].
    #[arg(long, value_name = "N")]
    pub(super) list_len: Option<usize>,
    /// Wait this long for an answer to a join request [default: 5000].
    #[arg(long, value_name = "MS")]
    pub(super) join_timeout_ms: Option<u64>,
    /// Join attempts before giving up [default: 5].
    #[arg(long, value_name = "N")]
    pub(super) join_attempts: Option<u32>,
    /// Wait this long for a lookup's answer before trying again [default: 3000].
    #[arg(long, value_name = "MS")]
    pub(super) lookup_timeout_ms: Option<u64>,
    /// A peer silent this long is taken for crashed (QUIC idle timeout) [default: 5000].
    #[arg(long, value_name = "MS")]
    pub(super) idle_timeout_ms: Option<u64>,
    /// Confirm this node's place in each group tree this often [default: 20000].
    #[arg(long, value_name = "MS")]
    pub(super) group_refresh_ms: Option<u64>,
    /// Ask a node lost earlier (a partition may have healed) to route a join request for this
    /// node this often, so that rings that formed apart merge [default: 30000].
    #[arg(long, value_name = "MS")]
    pub(super) merge_probe_ms: Option<u64>,
}

impl Tunables {
    /// `self`'s values, falling back to `other`'s.
    pub(super) fn or(self, other: Tunables) -> Tunables {
        Tunables {
            stabilize_interval_ms: self.stabilize_interval_ms.or(other.stabilize_interval_ms),
            stabilize_timeout_ms: self.stabilize_timeout_ms.or(other.stabilize_timeout_ms),
            finger_refresh_ms: self.finger_refresh_ms.or(other.finger_refresh_ms),
            list_len: self.list_len.or(other.list_len),
            join_timeout_ms: self.join_timeout_ms.or(other.join_timeout_ms),
            join_attempts: self.join_attempts.or(other.join_attempts),
            lookup_timeout_ms: self.lookup_timeout_ms.or(other.lookup_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(other.idle_timeout_ms),
            group_refresh_ms: self.group_refresh_ms.or(other.group_refresh_ms),
            merge_probe_ms: self.merge_probe_ms.or(other.merge_probe_ms),
        }
    }
}

/// Resolves a listening address: `IP:PORT` as it is, `HOST:PORT` through the system's resolver
/// (the first IPv4 address if there is one, since the default and most tickets are IPv4).
pub(super) fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} (expected IP:PORT or HOST:PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Parses `--data-dir`: any path but an empty one.
fn parse_data_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty (--no-persist keeps the dictionary in memory)".into());
    }
    Ok(PathBuf::from(s))
}

/// Parses `--join`'s ticket (the `p2ps1…` text a node prints).
fn parse_ticket(s: &str) -> Result<Ticket, p2ps::TicketError> {
    s.parse()
}

/// Parses a lookup mode: `routed` or `steered`.
pub(super) fn parse_lookup_mode(s: &str) -> Result<LookupMode, String> {
    match s.trim() {
        "routed" => Ok(LookupMode::Routed),
        "steered" => Ok(LookupMode::Steered),
        other => Err(format!(
            "unknown lookup mode {other:?}: expected routed or steered"
        )),
    }
}

/// Parses a finger strategy: `tango`, `chord` or `tango+`.
pub(super) fn parse_strategy(s: &str) -> Result<FingerStrategy, String> {
    FingerStrategy::parse(s.trim())
        .ok_or_else(|| format!("unknown strategy {s:?}: expected tango, chord or tango+"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use clap::Parser;
    use p2ps::NodeId;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    /// Parses `p2ps node`'s arguments (without the program name) as the command would.
    pub(in crate::node_cmd) fn parse(args: &[&str]) -> Result<NodeArgs, clap::Error> {
        let mut v = vec!["p2ps-node"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| c.node)
    }

    #[test]
    fn exactly_one_of_create_and_join() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--create"]).is_ok());
        let t = Ticket::new(
            NodeId::from_bytes([3; 32]),
            vec!["127.0.0.1:1".parse().unwrap()],
        );
        assert!(parse(&["--join", &t.to_string()]).is_ok());
        assert!(parse(&["--create", "--join", &t.to_string()]).is_err());
        let e = parse(&["--join", "p2ps1abc"]).unwrap_err().to_string();
        assert!(e.contains("ticket"), "{e}");
        let e = parse(&["--create", "--strategy", "kademlia"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tango, chord or tango+"), "{e}");
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        let a = parse(&["--create", "--listen", "localhost:0"]).unwrap();
        let l = a.listen.unwrap();
        assert!(l.ip().is_loopback() && l.port() == 0, "{l}");
        assert_eq!(
            resolve_listen("0.0.0.0:4433"),
            Ok("0.0.0.0:4433".parse().unwrap())
        );
        let e = parse(&["--create", "--listen", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
