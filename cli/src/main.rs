//! `p2ps`: run, simulate and benchmark P2PS nodes.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

mod bench_cluster;
mod bench_metrics;
mod bench_transport;
mod bench_trust;
mod cast_cmd;
mod census_cmd;
mod control;
mod demo;
mod dict_cmd;
mod error_report;
mod fuzz;
mod network_key_cmd;
mod node_cmd;
mod node_ids;
mod payload;
mod progress;
mod sim;
mod sim_adversary;
mod sim_cast;
mod sim_census;
mod sim_dict;
mod top;
mod watch_node_cmd;

/// P2PS: a peer-to-peer middleware on the Tango overlay over authenticated QUIC.
#[derive(Debug, Parser)]
#[command(name = "p2ps", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `p2ps_transport=debug`; logs go
    /// to stderr, coloured only on a terminal [default: warn, or `log` in `p2ps node --config`].
    #[arg(long, global = true, env = "P2PS_LOG", value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground: create a network or join one through a ticket.
    Node(Box<node_cmd::NodeArgs>),
    /// Show a running node's state: id, addresses, neighbours, fingers, connections, counters.
    Status(control::commands::StatusArgs),
    /// Send a message from a running node to a node id.
    Send(control::commands::SendArgs),
    /// Send a message from a running node to whichever node holds a key.
    Route(control::commands::RouteArgs),
    /// Ask a running node who holds a key.
    Lookup(control::commands::LookupArgs),
    /// Make a running node leave its network gracefully and stop.
    Leave(control::commands::LeaveArgs),
    /// Send a message from a running node to every node of the network.
    Broadcast(cast_cmd::BroadcastArgs),
    /// Send a message from a running node to the nodes responsible for a range of positions.
    Range(cast_cmd::RangeArgs),
    /// Join or leave a group, or send a message to a group, through a running node.
    #[command(subcommand)]
    Group(cast_cmd::GroupCommand),
    /// Write a value under a key of the replicated dictionary, through a running node.
    Put(dict_cmd::PutArgs),
    /// Read a key of the replicated dictionary, through a running node.
    Get(dict_cmd::GetArgs),
    /// Delete a key of the replicated dictionary, through a running node.
    Del(dict_cmd::DelArgs),
    /// Print every change of a key of the replicated dictionary as it happens, through a
    /// running node.
    Watch(dict_cmd::WatchArgs),
    /// Watch any node of the network through a running node: print when it fails (confirmed
    /// by the running node's own probe) or leaves.
    WatchNode(watch_node_cmd::WatchNodeArgs),
    /// A live view of a running node, redrawn every second: neighbours, connections by path,
    /// message and byte rates, lookup latency, what its dictionary holds.
    Top(top::TopArgs),
    /// The replicated dictionary's state on a running node.
    #[command(subcommand)]
    Dict(dict_cmd::DictCommand),
    /// Gather the figures of every node of the network through a running node (node count,
    /// NAT classes, versions, table sizes, load, dictionary keys and bytes).
    Census(census_cmd::CensusArgs),
    /// Draw the network as an SVG picture, from a census through a running node or a file.
    Ring(census_cmd::RingArgs),
    /// Start a local network on loopback and exercise every primitive.
    Demo(demo::DemoArgs),
    /// Run the discrete-event simulator of the Tango overlay (every finger strategy side by side).
    Sim(sim::SimArgs),
    /// Benchmarks measured against a baseline in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Make a private network's key (`new FILE`) or show its public name (`name FILE`).
    #[command(subcommand)]
    NetworkKey(network_key_cmd::NetworkKeyCommand),
    /// Feed every decoder of outside bytes, and the nodes' handlers, mutated inputs for a
    /// bounded time; report inputs that make one panic.
    Fuzz(fuzz::FuzzArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// P2PS transport against bare quinn on loopback: bulk throughput, 1 KiB messages, setup.
    Transport(bench_transport::TransportBenchArgs),
    /// A local cluster on loopback: formation time, lookup latency, memory and upkeep per node.
    Cluster(bench_cluster::ClusterBenchArgs),
    /// What signed origins cost per message: signing, verifying and bytes, against the codec.
    Trust(bench_trust::TrustBenchArgs),
    /// What recording metrics costs: throughput with metrics on against off, alternated.
    Metrics(bench_metrics::MetricsBenchArgs),
}

/// Runs the command; a failure prints its chain of causes (never a backtrace, whatever
/// `RUST_BACKTRACE` says: these are the user's errors, not the program's) and exits 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", error_report::render(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // `p2ps node --config FILE` may set the log filter; the flag and P2PS_LOG come first.
    let file_log = match &cli.command {
        Command::Node(args) => node_cmd::config_log(args)?,
        _ => None,
    };
    let filter = cli.log.or(file_log).unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&filter))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: not in a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Node(args) => node_cmd::run(*args),
        Command::Status(args) => control::commands::status(args),
        Command::Send(args) => control::commands::send(args),
        Command::Route(args) => control::commands::route(args),
        Command::Lookup(args) => control::commands::lookup(args),
        Command::Leave(args) => control::commands::leave(args),
        Command::Broadcast(args) => cast_cmd::broadcast(args),
        Command::Range(args) => cast_cmd::range(args),
        Command::Group(cmd) => cast_cmd::group(cmd),
        Command::Put(args) => dict_cmd::put(args),
        Command::Get(args) => dict_cmd::get(args),
        Command::Del(args) => dict_cmd::del(args),
        Command::Watch(args) => dict_cmd::watch(args),
        Command::WatchNode(args) => watch_node_cmd::run(args),
        Command::Dict(cmd) => dict_cmd::dict(cmd),
        Command::Top(args) => top::run(args),
        Command::Census(args) => census_cmd::census(args),
        Command::Ring(args) => census_cmd::ring(args),
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Bench(BenchCommand::Transport(args)) => bench_transport::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::NetworkKey(cmd) => network_key_cmd::run(cmd),
        Command::Bench(BenchCommand::Cluster(args)) => bench_cluster::run(args),
        Command::Bench(BenchCommand::Trust(args)) => bench_trust::run(args),
        Command::Bench(BenchCommand::Metrics(args)) => bench_metrics::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn usage(sub: &str) -> String {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .map(|c| c.render_usage().to_string())
            .unwrap_or_default()
    }

    fn help(sub: &str) -> String {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .map(|c| c.render_help().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn lookup_shows_that_a_key_is_required() {
        let u = usage("lookup");
        assert!(u.contains("<KEY|--raw-key <HEX>>"), "{u}");
        assert!(!u.contains("[KEY]"), "{u}");
        // clap lists an optional positional as `[KEY]`: its help says when it is required.
        let h = help("lookup");
        assert!(h.contains("required unless --raw-key is given"), "{h}");
        assert!(Cli::try_parse_from(["p2ps", "lookup"]).is_err());
        assert!(Cli::try_parse_from(["p2ps", "lookup", "k"]).is_ok());
        assert!(Cli::try_parse_from(["p2ps", "lookup", "--raw-key", "8"]).is_ok());
        assert!(Cli::try_parse_from(["p2ps", "lookup", "k", "--raw-key", "8"]).is_err());
    }

    #[test]
    fn range_takes_short_positions() {
        let parsed = Cli::try_parse_from(["p2ps", "range", "0", "e8", "hi"]);
        assert!(parsed.is_ok(), "{parsed:?}");
        let e = Cli::try_parse_from(["p2ps", "range", "0", "xyz", "hi"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 to 32 hex digits"), "{e}");
    }
}
