//! The client subcommands that talk to a running node: `p2ps status`, `send`, `route`, `lookup`
//! and `leave` (the broadcast and group ones are in `crate::cast_cmd`).

use super::client::ControlOpts;
use super::protocol::{parse_raw_key, LookupAnswer, Request};
use super::render::{print_json, render_status, write_stdout};
use anyhow::{anyhow, bail, Context, Result};
use p2ps::{NodeId, Status};

/// A key given as text (hashed) or as a raw ring position.
#[derive(Debug, Clone)]
struct KeyChoice {
    /// A text key, hashed onto the ring.
    key: Option<String>,
    /// A ring position, 1 to 32 hex digits.
    raw_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// p2ps status

/// Arguments of `p2ps status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps status\n  p2ps status --name second --json | jq .successors"
)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Print the node's status as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps status`: shows a running node's state.
pub fn status(args: StatusArgs) -> Result<()> {
    let v = args.control.call(&Request::Status {})?;
    if args.json {
        return print_json(&v);
    }
    let s: Status = serde_json::from_value(v).context("the node's status is malformed")?;
    write_stdout(&render_status(&s))
}

// ---------------------------------------------------------------------------------------------
// p2ps send

/// Arguments of `p2ps send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps send d67394b546 'hello there'\n  \
                        p2ps send d67394b546 @notes.txt\n  date | p2ps send d673 -")]
pub struct SendArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The addressee's node id: all 64 hex digits, or a prefix of at least 4 (such as the short
    /// id `p2ps status` and incoming messages show) that names one node the running node
    /// knows (its routing table, connections, group trees or recent senders).
    #[arg(value_name = "NODE_ID", value_parser = crate::node_ids::parse_id_arg)]
    to: crate::node_ids::IdArg,
    #[arg(value_name = "TEXT", help = crate::payload::TEXT_HELP)]
    text: String,
}

/// `p2ps send`: sends a message from the running node to a node id.
pub fn send(args: SendArgs) -> Result<()> {
    let req = Request::Send {
        to: args.to.to_string(),
        payload: crate::payload::message(&args.text)?,
    };
    let v = args.control.call(&req)?;
    let to = v
        .get("to")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<NodeId>().ok())
        .with_context(|| format!("the node's answer is malformed: {v}"))?;
    eprintln!("sent to {} (best effort)", to.short());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// p2ps route

/// Arguments of `p2ps route`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "p2ps route [OPTIONS] KEY TEXT\n       p2ps route [OPTIONS] --raw-key HEX TEXT",
    after_help = "Examples:\n  p2ps route colour:blue 'who holds colour:blue gets this'\n  \
                  p2ps route --raw-key 80000000000000000000000000000000 'to the middle of the ring'"
)]
pub struct RouteArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key to route to (hashed onto the ring), then the message; with --raw-key, only the
    /// message. The message is sent as UTF-8 (at most 1 MiB): the text itself, `-` to read it
    /// from standard input, or `@FILE` to read a file (`@@…` for a text that starts with `@`).
    #[arg(value_name = "KEY TEXT", num_args = 1..=2, required = true)]
    args: Vec<String>,
    /// A ring position (1 to 32 hex digits, left-padded with zeros) instead of a key to hash.
    #[arg(long, value_name = "HEX")]
    raw_key: Option<String>,
}

/// `p2ps route`: sends a message from the running node to whoever holds a key.
pub fn route(args: RouteArgs) -> Result<()> {
    let (key, payload) = match (args.raw_key, args.args.as_slice()) {
        (None, [k, t]) => (
            KeyChoice {
                key: Some(k.clone()),
                raw_key: None,
            },
            crate::payload::message(t)?,
        ),
        (Some(r), [t]) => {
            parse_raw_key(&r).map_err(|e| anyhow!(e))?;
            (
                KeyChoice {
                    key: None,
                    raw_key: Some(r),
                },
                crate::payload::message(t)?,
            )
        }
        (None, _) => bail!("give a KEY and a TEXT (or --raw-key HEX and a TEXT)"),
        (Some(_), _) => bail!("with --raw-key, give only the TEXT"),
    };
    let req = Request::Route {
        key: key.key,
        raw_key: key.raw_key,
        payload,
    };
    let v = args.control.call(&req)?;
    let pos = v.get("key").and_then(|k| k.as_str()).unwrap_or("?");
    eprintln!("routed towards ring position {pos} (best effort)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// p2ps lookup

/// Arguments of `p2ps lookup`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps lookup colour:blue\n  p2ps lookup --raw-key 1 --json",
    // KEY or --raw-key, one of them required: the usage line shows `<KEY|--raw-key <HEX>>`.
    group(clap::ArgGroup::new("target").required(true).args(["key", "raw_key"]))
)]
pub struct LookupArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The key (hashed onto the ring with SHA-256); required unless --raw-key is given.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    /// A ring position (1 to 32 hex digits, left-padded with zeros) instead of a key to hash.
    #[arg(long, value_name = "HEX", value_parser = |s: &str| parse_raw_key(s).map(|_| s.to_string()))]
    raw_key: Option<String>,
    /// Print `{"key","node","hops"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps lookup`: asks the running node who holds a key.
pub fn lookup(args: LookupArgs) -> Result<()> {
    let req = Request::Lookup {
        key: args.key,
        raw_key: args.raw_key,
    };
    let v = args.control.call(&req)?;
    if args.json {
        return print_json(&v);
    }
    let a: LookupAnswer = serde_json::from_value(v).context("the node's answer is malformed")?;
    match (a.node, a.hops) {
        (Some(node), Some(hops)) => write_stdout(&format!("{node} ({hops} hops)")),
        _ => bail!(a.error.unwrap_or_else(|| "the lookup failed".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// p2ps leave

/// Arguments of `p2ps leave`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  p2ps leave --name second")]
pub struct LeaveArgs {
    #[command(flatten)]
    control: ControlOpts,
}

/// `p2ps leave`: makes the running node leave gracefully and stop.
pub fn leave(args: LeaveArgs) -> Result<()> {
    args.control.call(&Request::Leave {})?;
    eprintln!("the node left its network and stopped");
    Ok(())
}
