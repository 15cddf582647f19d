//! `p2ps`: run, simulate and benchmark P2PS nodes.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench_cluster;
mod bench_transport;
mod bench_trust;
mod cast_cmd;
mod control;
mod demo;
mod node_cmd;
mod sim;
mod sim_adversary;
mod sim_cast;

/// P2PS: a peer-to-peer middleware on the Tango overlay over authenticated QUIC.
#[derive(Debug, Parser)]
#[command(name = "p2ps", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `p2ps_transport=debug`.
    #[arg(long, global = true, env = "P2PS_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground: create a network or join one through a ticket.
    Node(Box<node_cmd::NodeArgs>),
    /// Show a running node's state: id, addresses, neighbours, fingers, connections, counters.
    Status(control::StatusArgs),
    /// Send a message from a running node to a node id.
    Send(control::SendArgs),
    /// Send a message from a running node to whichever node holds a key.
    Route(control::RouteArgs),
    /// Ask a running node who holds a key.
    Lookup(control::LookupArgs),
    /// Make a running node leave its network gracefully and stop.
    Leave(control::LeaveArgs),
    /// Send a message from a running node to every node of the network.
    Broadcast(cast_cmd::BroadcastArgs),
    /// Send a message from a running node to the nodes responsible for a range of positions.
    Range(cast_cmd::RangeArgs),
    /// Join or leave a group, or send a message to a group, through a running node.
    #[command(subcommand)]
    Group(cast_cmd::GroupCommand),
    /// Start a local network on loopback and exercise every primitive.
    Demo(demo::DemoArgs),
    /// Run the discrete-event simulator of the Tango overlay (every finger strategy side by side).
    Sim(sim::SimArgs),
    /// Benchmarks measured against a baseline in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// P2PS transport against bare quinn on loopback: bulk throughput, 1 KiB messages, setup.
    Transport(bench_transport::TransportBenchArgs),
    /// A local cluster on loopback: formation time, lookup latency, memory and upkeep per node.
    Cluster(bench_cluster::ClusterBenchArgs),
    /// What signed origins cost per message: signing, verifying and bytes, against the codec.
    Trust(bench_trust::TrustBenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Node(args) => node_cmd::run(*args),
        Command::Status(args) => control::status(args),
        Command::Send(args) => control::send(args),
        Command::Route(args) => control::route(args),
        Command::Lookup(args) => control::lookup(args),
        Command::Leave(args) => control::leave(args),
        Command::Broadcast(args) => cast_cmd::broadcast(args),
        Command::Range(args) => cast_cmd::range(args),
        Command::Group(cmd) => cast_cmd::group(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Bench(BenchCommand::Transport(args)) => bench_transport::run(args),
        Command::Bench(BenchCommand::Cluster(args)) => bench_cluster::run(args),
        Command::Bench(BenchCommand::Trust(args)) => bench_trust::run(args),
    }
}
