//! `p2ps broadcast`, `p2ps range` and `p2ps group join|leave|send`: group communication from
//! the command line, carried out by a running `p2ps node` through its control socket.

use crate::control::client::ControlOpts;
use crate::control::protocol::{parse_raw_key, Request};
use crate::control::render::print_json;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use p2ps::RingId;
use std::path::PathBuf;

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
    #[command(
        after_help = "Examples:\n  p2ps group join chess\n  p2ps group join chess --key chess.key   \
                      (a closed group: only holders of the key can join, send and read)"
    )]
    Join(GroupArgs),
    /// Leave a group.
    Leave(GroupArgs),
    /// Send a message to every member of a group (the node need not be a member).
    Send(GroupSendArgs),
    /// Closed groups' keys.
    #[command(subcommand)]
    Key(GroupKeyCommand),
}

/// `p2ps group key …`.
#[derive(Debug, Subcommand)]
pub enum GroupKeyCommand {
    /// Make a new random group key in FILE (mode 0600; an existing file is never replaced).
    /// Give it to every member, over a channel you trust: whoever holds it is a member.
    New {
        /// Where to write the key.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// A group name.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// The group's name (1 to 255 bytes).
    #[arg(value_name = "GROUP")]
    group: String,
    #[command(flatten)]
    key: GroupKeyOpt,
}

/// The key of a closed group.
#[derive(Debug, clap::Args)]
pub struct GroupKeyOpt {
    /// The closed group's key file (`p2ps group key new FILE`); without it, the open group of
    /// that name (or, for leave and send, the closed group of that name the node joined).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl GroupKeyOpt {
    /// The key file's secret as hex, for the request (checked and read here).
    fn hex(&self) -> Result<Option<String>> {
        self.key
            .as_ref()
            .map(|f| {
                p2ps::group_key::load(f)
                    .map(|s| p2ps::group_key::to_hex(&s))
                    .with_context(|| format!("reading the group key {}", f.display()))
            })
            .transpose()
    }
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
    #[command(flatten)]
    key: GroupKeyOpt,
    /// Print `{"group","bytes","seq","members","complete"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps group join|leave|send`.
pub fn group(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::Join(a) => {
            let key = a.key.hex()?;
            let closed = if key.is_some() { "closed " } else { "" };
            a.control.call(&Request::GroupJoin {
                group: a.group.clone(),
                key,
            })?;
            eprintln!("joined {closed}group {}", a.group);
        }
        GroupCommand::Leave(a) => {
            a.control.call(&Request::GroupLeave {
                group: a.group.clone(),
                key: a.key.hex()?,
            })?;
            eprintln!("left group {}", a.group);
        }
        GroupCommand::Key(GroupKeyCommand::New { file }) => {
            p2ps::group_key::create(&file)
                .with_context(|| format!("making a group key in {}", file.display()))?;
            println!(
                "group key written to {} (mode 0600)\ngive it to every member over a channel you \
                 trust; join with: p2ps group join NAME --key {}",
                file.display(),
                file.display()
            );
        }
        GroupCommand::Send(a) => {
            let v = a.control.call(&Request::GroupSend {
                group: a.group.clone(),
                key: a.key.hex()?,
                payload: crate::payload::message(&a.text)?,
            })?;
            if a.json {
                return print_json(&v);
            }
            let members = v.get("members").and_then(|d| d.as_u64());
            let complete = v.get("complete").and_then(|d| d.as_bool());
            match (members, complete) {
                (Some(n), Some(true)) => {
                    eprintln!("sent to group {}: reached {n} members", a.group)
                }
                (Some(n), _) => eprintln!(
                    "sent to group {}: reached {n} members; some parts of the tree did not \
                     answer in time",
                    a.group
                ),
                _ => bail!("the node's answer is malformed: {v}"),
            }
        }
    }
    Ok(())
}
