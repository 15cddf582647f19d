//! `p2ps put`, `get`, `del`, `watch` and `dict status|replicas`: the replicated dictionary
//! from the command line, through a running node (open keys, text values), with per-call
//! options (acknowledgements, read quorum, time to live, compare-and-swap).

use crate::control::client::ControlOpts;
use crate::control::protocol::{KeyState, Request, WatchEvent};
use crate::control::render::{print_json, write_stdout};
use anyhow::{bail, Context, Result};

/// Arguments of `p2ps put`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps put colour blue\n  p2ps put notes @notes.txt\n  \
                        date | p2ps put today -\n  p2ps put colour red --acks 3 --ttl 3600\n  \
                        p2ps put counter 8 --if-version 7   # only if it is at version 7"
)]
pub struct PutArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// The value, as UTF-8 text (at most 64 KiB, or the nodes' --dict-max-value-bytes): the
    /// text itself, `-` to read it from standard input, or `@FILE` to read a file (`@@…` for a
    /// text that starts with `@`).
    #[arg(value_name = "VALUE")]
    value: String,
    /// Replicas that must hold the value before the answer [default: a majority, 2 of 3]; more
    /// than the key has count as all of them.
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u8).range(1..))]
    acks: Option<u8>,
    /// How long the value lives, in seconds (at most 24 h by default) [default: 600].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    ttl: Option<u64>,
    /// Compare-and-swap: write only if the key is at version V now (0: only if it holds
    /// nothing); the value becomes version V + 1. Otherwise fail, naming the version the key
    /// is at.
    #[arg(long, value_name = "V")]
    if_version: Option<u64>,
    /// The node writes the value again (same version, new expiry) before it expires, for as
    /// long as it runs, or until the key is written again without this.
    #[arg(long)]
    republish: bool,
    /// Print the answer as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `p2ps get`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps get colour\n  p2ps get colour --json | jq .version\n  \
                  p2ps get colour --quorum 1   # a fast read, from one replica"
)]
pub struct GetArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// Replicas asked; the newest version among them wins [default: a majority, 2 of 3].
    /// 1 is a fast read that may miss the newest write.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u8).range(1..))]
    quorum: Option<u8>,
    /// Print the answer as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `p2ps del`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps del colour\n  p2ps del colour --acks 3")]
pub struct DelArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// Replicas that must hold the deletion before the answer [default: a majority, 2 of 3].
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u8).range(1..))]
    acks: Option<u8>,
    /// Compare-and-swap: delete only if the key is at version V now (the deletion becomes
    /// version V + 1). Otherwise fail, naming the version the key is at.
    #[arg(long, value_name = "V")]
    if_version: Option<u64>,
    /// Print the answer as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `p2ps watch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The first line is what the key holds when the watch starts; then one line per \
                  change (a new value, a deletion, or `holds nothing` once a value expired).\n\n\
                  Examples:\n  p2ps watch colour\n  p2ps watch colour --json --count 1"
)]
pub struct WatchArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (any text).
    #[arg(value_name = "KEY")]
    key: String,
    /// Exit after this many changes (the first line, the key's state when the watch starts,
    /// is not counted) [default: watch until interrupted].
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print every event as one line of JSON: `{"key","state","value","version"}`, `state`
    /// being `set`, `deleted` or `empty`.
    #[arg(long)]
    json: bool,
}

/// Arguments of `p2ps dict replicas`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps dict replicas colour\n  p2ps dict replicas colour --json"
)]
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

/// `p2ps put`: writes a value under a key, answered once `--acks` replicas (default: a
/// quorum) hold it; with `--if-version`, only if the key is at that version.
pub fn put(args: PutArgs) -> Result<()> {
    let value = crate::payload::message(&args.value)?;
    let v = args.control.call(&Request::Put {
        key: args.key.clone(),
        value,
        acks: args.acks,
        ttl_secs: args.ttl,
        if_version: args.if_version,
        republish: args.republish,
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
pub fn get(args: GetArgs) -> Result<()> {
    let v = args.control.call(&Request::Get {
        key: args.key.clone(),
        quorum: args.quorum,
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
pub fn del(args: DelArgs) -> Result<()> {
    let v = args.control.call(&Request::Del {
        key: args.key.clone(),
        acks: args.acks,
        if_version: args.if_version,
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

/// `p2ps watch`: prints what a key holds, then every change, until interrupted or `--count`
/// changes have come.
pub fn watch(args: WatchArgs) -> Result<()> {
    let req = Request::Watch {
        key: args.key.clone(),
    };
    let mut changes: Option<u64> = None;
    args.control.stream(&req, |v| {
        if args.json {
            print_json(&v)?;
        } else {
            let e: WatchEvent = serde_json::from_value(v.clone())
                .with_context(|| format!("the node sent a malformed event: {v}"))?;
            write_stdout(&render_event(&e))?;
        }
        // The first event is the state the watch started from, not a change.
        let seen = changes.map_or(0, |c| c + 1);
        changes = Some(seen);
        Ok(args.count.is_none_or(|n| seen < n))
    })
}

/// One line for a watch event.
fn render_event(e: &WatchEvent) -> String {
    let version = e.version.unwrap_or(0);
    match (e.state, &e.value) {
        (KeyState::Set, Some(v)) => format!("{} = {v} (version {version})", e.key),
        (KeyState::Set, None) => format!("{} set (version {version})", e.key),
        (KeyState::Deleted, _) => format!("{} deleted (version {version})", e.key),
        (KeyState::Empty, _) => format!("{} holds nothing", e.key),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_read_plainly() {
        let e = |state, value: Option<&str>, version| WatchEvent {
            key: "colour".into(),
            state,
            value: value.map(String::from),
            version,
        };
        assert_eq!(
            render_event(&e(KeyState::Set, Some("blue"), Some(3))),
            "colour = blue (version 3)"
        );
        assert_eq!(
            render_event(&e(KeyState::Deleted, None, Some(4))),
            "colour deleted (version 4)"
        );
        assert_eq!(
            render_event(&e(KeyState::Empty, None, None)),
            "colour holds nothing"
        );
        // The JSON form the node sends and `--json` prints.
        let text = serde_json::to_string(&e(KeyState::Deleted, None, Some(4))).unwrap();
        assert_eq!(
            text,
            r#"{"key":"colour","state":"deleted","value":null,"version":4}"#
        );
    }
}
