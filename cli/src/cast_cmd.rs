//! `p2ps broadcast`, `p2ps range` and `p2ps group join|leave|send`: group communication from
//! the command line, carried out by a running `p2ps node` through its control socket.

use crate::control::client::ControlOpts;
use crate::control::protocol::{parse_raw_key, Request};
use crate::control::render::print_json;
use anyhow::{bail, Result};
use clap::Subcommand;
use p2ps::RingId;

/// Arguments of `p2ps broadcast`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  p2ps broadcast 'hello, everyone'")]
pub struct BroadcastArgs {
    #[command(flatten)]
    control: ControlOpts,
    #[arg(value_name = "TEXT", help = crate::payload::TEXT_HELP)]
    text: String,
    /// Print `{"seq","delivered","complete"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps broadcast`: sends a message to every node and reports how many received it.
pub fn broadcast(args: BroadcastArgs) -> Result<()> {
    let v = args.control.call(&Request::Broadcast {
        payload: crate::payload::message(&args.text)?,
    })?;
    report(&v, args.json, "every node")
}

/// Arguments of `p2ps range`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps range 0 3fffffffffffffffffffffffffffffff 'to the first quarter \
                  of the ring'\n  p2ps range 0 ffffffffffffffffffffffffffffffff 'to every node'"
)]
pub struct RangeArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Lower end of the range of ring positions (1 to 32 hex digits, left-padded with zeros:
    /// `0` is the start of the ring).
    #[arg(value_name = "LO", value_parser = parse_raw_key)]
    lo: RingId,
    /// Upper end, included (clockwise from LO; the same form).
    #[arg(value_name = "HI", value_parser = parse_raw_key)]
    hi: RingId,
    #[arg(value_name = "TEXT", help = crate::payload::TEXT_HELP)]
    text: String,
    /// Print `{"seq","delivered","complete"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps range`: sends a message to the nodes responsible for a range of ring positions.
pub fn range(args: RangeArgs) -> Result<()> {
    let v = args.control.call(&Request::Range {
        lo: args.lo.to_string(),
        hi: args.hi.to_string(),
        payload: crate::payload::message(&args.text)?,
    })?;
    report(&v, args.json, "the nodes of the range")
}

fn report(v: &serde_json::Value, json: bool, whom: &str) -> Result<()> {
    if json {
        return print_json(v);
    }
    let delivered = v.get("delivered").and_then(|d| d.as_u64());
    let complete = v.get("complete").and_then(|d| d.as_bool());
    match (delivered, complete) {
        (Some(d), Some(true)) => eprintln!("sent to {whom}: {d} nodes received it"),
        (Some(d), _) => eprintln!(
            "sent to {whom}: {d} nodes received it; some parts of the tree did not answer"
        ),
        _ => bail!("the node's answer is malformed: {v}"),
    }
    Ok(())
}

/// `p2ps group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Join a group: the running node prints the group's messages.
    Join(GroupArgs),
    /// Leave a group.
    Leave(GroupArgs),
    /// Send a message to every member of a group (the node need not be a member).
    Send(GroupSendArgs),
}

/// A group name.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The group's name (1 to 255 bytes).
    #[arg(value_name = "GROUP")]
    group: String,
}

/// A group name and a message.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  p2ps group send chess 'e2e4'")]
pub struct GroupSendArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The group's name.
    #[arg(value_name = "GROUP")]
    group: String,
    #[arg(value_name = "TEXT", help = crate::payload::TEXT_HELP)]
    text: String,
}

/// `p2ps group join|leave|send`.
pub fn group(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::Join(a) => {
            a.control.call(&Request::GroupJoin {
                group: a.group.clone(),
            })?;
            eprintln!("joined group {}", a.group);
        }
        GroupCommand::Leave(a) => {
            a.control.call(&Request::GroupLeave {
                group: a.group.clone(),
            })?;
            eprintln!("left group {}", a.group);
        }
        GroupCommand::Send(a) => {
            a.control.call(&Request::GroupSend {
                group: a.group.clone(),
                payload: crate::payload::message(&a.text)?,
            })?;
            // Group messages flow down the group's tree with no report back (unlike
            // broadcast and range), so the node cannot say how many members got one.
            eprintln!(
                "sent to group {} (best effort: members do not confirm receipt)",
                a.group
            );
        }
    }
    Ok(())
}
