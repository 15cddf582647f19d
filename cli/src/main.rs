//! `p2ps`: run, simulate and benchmark P2PS nodes.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench_transport;
mod sim;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Bench(BenchCommand::Transport(args)) => bench_transport::run(args),
    }
}
