//! `p2ps put`, `get`, `del` and `dict status|replicas`: the replicated dictionary from the
//! command line, through a running node (open keys, text values).

use crate::control::client::ControlOpts;
use crate::control::protocol::Request;
use crate::control::render::{print_json, write_stdout};
use anyhow::{bail, Context, Result};

/// Arguments of `p2ps put`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps put colour blue\n  p2ps put notes @notes.txt\n  \
                        date | p2ps put today -"
)]
pub struct PutArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// The value, as UTF-8 text (at most 64 KiB): the text itself, `-` to read it from standard
    /// input, or `@FILE` to read a file (`@@…` for a text that starts with `@`).
    #[arg(value_name = "VALUE")]
    value: String,
    /// Print the answer as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `p2ps get` and `p2ps del`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps get colour\n  p2ps get colour --json | jq .version")]
pub struct KeyArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// Print the answer as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps put`: writes a value under a key, answered once a quorum of replicas holds it.
pub fn put(args: PutArgs) -> Result<()> {
    let value = crate::payload::message(&args.value)?;
    let v = args.control.call(&Request::Put {
        key: args.key.clone(),
        value,
    })?;
    if args.json {
        return print_json(&v);
    }
    let version = v.get("version").and_then(|x| x.as_u64());
    let replicas = v.get("replicas").and_then(|x| x.as_u64());
    let (Some(version), Some(replicas)) = (version, replicas) else {
        bail!("the node's answer is malformed: {v}");
    };
    write_stdout(&format!(
        "stored {} (version {version}, on {replicas} replicas)",
        args.key
    ))
}

/// `p2ps get`: prints the value of a key; fails if the key holds nothing.
pub fn get(args: KeyArgs) -> Result<()> {
    let v = args.control.call(&Request::Get {
        key: args.key.clone(),
    })?;
    if args.json {
        return print_json(&v);
    }
    match v.get("value") {
        Some(serde_json::Value::String(s)) => write_stdout(s),
        Some(serde_json::Value::Null) => bail!("no value for key {}", args.key),
        _ => bail!("the node's answer is malformed: {v}"),
    }
}

/// `p2ps del`: deletes a key (the deletion wins over every older value).
pub fn del(args: KeyArgs) -> Result<()> {
    let v = args.control.call(&Request::Del {
        key: args.key.clone(),
    })?;
    if args.json {
        return print_json(&v);
    }
    let version = v
        .get("version")
        .and_then(|x| x.as_u64())
        .with_context(|| format!("the node's answer is malformed: {v}"))?;
    write_stdout(&format!("deleted {} (version {version})", args.key))
}

/// `p2ps dict …`: the dictionary's state on a running node.
#[derive(Debug, clap::Subcommand)]
pub enum DictCommand {
    /// The node's share of the dictionary: keys and bytes held, refusals, repairs.
    Status(StatusArgs),
    /// How many of a key's replicas hold its newest version (and those that lack it get it).
    Replicas(KeyArgs),
}

/// Arguments of `p2ps dict status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Print the counters as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `p2ps dict` subcommand.
pub fn dict(cmd: DictCommand) -> Result<()> {
    match cmd {
        DictCommand::Status(args) => status(args),
        DictCommand::Replicas(args) => replicas(args),
    }
}

fn status(args: StatusArgs) -> Result<()> {
    let v = args.control.call(&Request::Status {})?;
    let s: p2ps::Status = serde_json::from_value(v).context("the node's status is malformed")?;
    let Some(d) = s
        .services
        .iter()
        .find(|s| s.name == p2ps::dict::service::NAME)
    else {
        bail!("the node runs no dictionary");
    };
    if args.json {
        return print_json(&d.counters);
    }
    let line = d
        .counters
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    write_stdout(&format!("dictionary on {}: {line}", s.id.short()))
}

fn replicas(args: KeyArgs) -> Result<()> {
    let v = args.control.call(&Request::DictReplicas {
        key: args.key.clone(),
    })?;
    if args.json {
        return print_json(&v);
    }
    let n = |f: &str| v.get(f).and_then(|x| x.as_u64());
    let (Some(version), Some(current), Some(answered), Some(replicas)) =
        (n("version"), n("current"), n("answered"), n("replicas"))
    else {
        bail!("the node's answer is malformed: {v}");
    };
    write_stdout(&format!(
        "{}: {current} of {replicas} replicas hold version {version} ({answered} answered)",
        args.key
    ))
}
