//! `p2ps fuzz`: runs every decoder that takes bytes from outside (frames, overlay and service
//! messages, dictionary records, transport control messages, relay headers, tickets, control
//! socket requests, config files) and the nodes' message handlers on mutated inputs, for a
//! bounded time or number of inputs, and reports any input that made one panic.
//!
//! Why not `cargo fuzz`: it needs a nightly toolchain and LLVM's sanitizers, which CI here does
//! not have; this runs on stable, in the test suite too (a short pass of every target). It is
//! not coverage-guided: inputs are valid examples mutated (`mutate.rs`: bit flips, boundary
//! bytes, huge varints, cut, repeated and spliced pieces) plus random bytes, seeded so that a
//! run can be repeated. A panic is caught, counted, and its input kept (hex) for the report
//! and, with `--crashes DIR`, written to a file.

mod mutate;
mod targets;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};
pub(crate) use targets::TARGETS;

/// Arguments of `p2ps fuzz`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps fuzz --secs 60          # every target, 60 s each\n  \
                        p2ps fuzz overlay handlers --inputs 100000\n  p2ps fuzz --list"
)]
pub struct FuzzArgs {
    /// Targets to run (default: all; see --list).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Stop a target after this many inputs, whichever comes first.
    #[arg(long)]
    inputs: Option<u64>,
    /// Seed of the mutations (a run with the same seed and --inputs tries the same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write each input that made a target panic to a file in this directory.
    #[arg(long, value_name = "DIR")]
    crashes: Option<PathBuf>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What one target did.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TargetReport {
    pub(crate) target: &'static str,
    pub(crate) inputs: u64,
    /// Inputs the decoder accepted.
    pub(crate) accepted: u64,
    pub(crate) panics: u64,
    /// The first inputs that panicked, hex.
    pub(crate) crashing: Vec<String>,
    pub(crate) secs: f64,
}

/// Runs `target` on mutated inputs until `limit` or `inputs` is reached.
pub(crate) fn run_target(
    target: &targets::Target,
    limit: Duration,
    inputs: Option<u64>,
    seed: u64,
    crashes: Option<&PathBuf>,
) -> Result<TargetReport> {
    let seeds = (target.seeds)().with_context(|| format!("making seeds for {}", target.name))?;
    let mut run = (target.make)().with_context(|| format!("setting up {}", target.name))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t = Instant::now();
    let mut r = TargetReport {
        target: target.name,
        inputs: 0,
        accepted: 0,
        panics: 0,
        crashing: Vec::new(),
        secs: 0.0,
    };
    // Valid seeds first: each must be accepted, or the target tests nothing.
    let mut queue: Vec<Vec<u8>> = seeds.clone();
    queue.reverse();
    loop {
        if inputs.is_some_and(|n| r.inputs >= n) || (queue.is_empty() && t.elapsed() >= limit) {
            break;
        }
        let seeded = !queue.is_empty();
        let input = queue
            .pop()
            .unwrap_or_else(|| mutate::input(&mut rng, &seeds));
        r.inputs += 1;
        match catch_unwind(AssertUnwindSafe(|| run(&input))) {
            Ok(true) => r.accepted += 1,
            Ok(false) if seeded => {
                bail!(
                    "target {}: a valid example was refused: {}",
                    target.name,
                    hex(&input)
                )
            }
            Ok(false) => {}
            Err(_) => {
                r.panics += 1;
                if r.crashing.len() < 5 {
                    r.crashing.push(hex(&input));
                }
                if let Some(dir) = crashes {
                    let f = dir.join(format!("{}-{}", target.name, r.panics));
                    std::fs::write(&f, &input)
                        .with_context(|| format!("writing {}", f.display()))?;
                }
                // A target's state may be broken by a panic: start it again.
                run = (target.make)().with_context(|| format!("setting up {}", target.name))?;
            }
        }
    }
    r.secs = t.elapsed().as_secs_f64();
    Ok(r)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the targets asked for and prints what they found; fails if any panicked.
pub fn run(args: FuzzArgs) -> Result<()> {
    if args.list {
        for t in TARGETS {
            println!("{:<18} {}", t.name, t.about);
        }
        return Ok(());
    }
    for name in &args.targets {
        if !TARGETS.iter().any(|t| t.name == name) {
            bail!("no fuzz target {name:?} (p2ps fuzz --list names them)");
        }
    }
    if let Some(d) = &args.crashes {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Panics are caught and counted; their messages would drown the report.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut reports = Vec::new();
    let mut result = Ok(());
    for t in TARGETS
        .iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|n| n == t.name))
    {
        match run_target(
            t,
            Duration::from_secs(args.secs),
            args.inputs,
            args.seed,
            args.crashes.as_ref(),
        ) {
            Ok(r) => {
                if !args.json {
                    println!(
                        "{:<18} {:>9} inputs ({:>5.1} % accepted) in {:>5.1} s: {}",
                        r.target,
                        r.inputs,
                        100.0 * r.accepted as f64 / r.inputs.max(1) as f64,
                        r.secs,
                        if r.panics == 0 {
                            "no panic".to_string()
                        } else {
                            format!("{} PANICS, e.g. {}", r.panics, r.crashing[0])
                        }
                    );
                }
                reports.push(r);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    result?;
    if args.json {
        println!("{}", serde_json::to_string(&reports)?);
    }
    let panics: u64 = reports.iter().map(|r| r.panics).sum();
    if panics > 0 {
        bail!("{panics} inputs made a decoder or handler panic");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The short pass CI runs: every target, 20 000 inputs each, no panic, and every
    /// target accepts its valid examples (checked by `run_target`) and some mutated inputs.
    #[test]
    fn every_target_survives_a_short_pass() {
        for t in TARGETS {
            let r = run_target(t, Duration::from_secs(60), Some(20_000), 7, None).unwrap();
            assert_eq!(r.panics, 0, "{}: {:?}", t.name, r.crashing);
            assert_eq!(r.inputs, 20_000, "{}", t.name);
            assert!(r.accepted > 0, "{}", t.name);
        }
    }

    /// A target that panics on some inputs is caught, counted and survives.
    #[test]
    fn a_panicking_target_is_caught_and_counted() {
        let t = targets::Target {
            name: "test",
            about: "panics on a leading zero",
            seeds: || Ok(vec![vec![1, 2, 3]]),
            make: || {
                Ok(Box::new(|b: &[u8]| {
                    assert!(b.first() != Some(&0), "a leading zero");
                    true
                }))
            },
        };
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = run_target(&t, Duration::from_secs(5), Some(2000), 3, None);
        std::panic::set_hook(hook);
        let r = r.unwrap();
        assert!(r.panics > 0);
        assert!(r.crashing.iter().all(|h| h.starts_with("00")));
    }
}
