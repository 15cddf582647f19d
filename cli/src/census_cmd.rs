//! `p2ps census` (the figures of every node, through a running node) and `p2ps ring --svg`
//! (the picture of the ring drawn from a census, through a running node or from files).

use crate::control::client::ControlOpts;
use crate::control::protocol::Request;
use crate::control::render::{print_json, write_stdout};
use anyhow::{Context, Result};
use p2ps::census::{Colouring, Focus};
use p2ps::{CensusReport, OverlayId, Status};
use p2ps_overlay::PeerId;
use std::path::PathBuf;

/// Arguments of `p2ps census`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  p2ps census\n  p2ps census --json | jq .nodes\n  \
                        p2ps census --rows 100"
)]
pub struct CensusArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Also list up to N nodes one by one (in ring order, evenly thinned; at most 4096).
    #[arg(long, value_name = "N", default_value_t = 0)]
    rows: u32,
    /// Print the census as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// `p2ps census`: asks a running node for a census of its network.
pub fn census(args: CensusArgs) -> Result<()> {
    let counting = crate::progress::spinner("counting the network", args.json);
    let v = args.control.call(&Request::Census {
        rows: Some(args.rows),
    });
    counting.finish_and_clear();
    let v = v?;
    if args.json {
        return print_json(&v);
    }
    let r: CensusReport = serde_json::from_value(v).context("the node's census is malformed")?;
    write_stdout(r.to_text().trim_end())
}

/// What the nodes of the picture are coloured by.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum ColourArg {
    /// NAT class.
    #[default]
    Nat,
    /// Messages per second.
    Load,
}

impl From<ColourArg> for Colouring {
    fn from(c: ColourArg) -> Colouring {
        match c {
            ColourArg::Nat => Colouring::Nat,
            ColourArg::Load => Colouring::Load,
        }
    }
}

/// Arguments of `p2ps ring`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  p2ps ring --svg ring.svg\n  \
                        p2ps ring --svg ring.svg --colour load\n  \
                        p2ps census --json --rows 4096 > c.json; p2ps ring --svg ring.svg \
                        --from-census c.json")]
pub struct RingArgs {
    #[command(flatten)]
    control: ControlOpts,
    /// Where to write the picture (SVG).
    #[arg(long, value_name = "FILE")]
    svg: PathBuf,
    /// Draw from a census saved with `p2ps census --json --rows N` instead of asking a node.
    #[arg(long, value_name = "FILE.json")]
    from_census: Option<PathBuf>,
    /// With --from-census: the node whose lists and fingers are drawn as chords, as saved
    /// with `p2ps status --json`.
    #[arg(long, value_name = "FILE.json", requires = "from_census")]
    from_status: Option<PathBuf>,
    /// What the nodes are coloured by.
    #[arg(long, value_enum, default_value_t = ColourArg::Nat)]
    colour: ColourArg,
    /// Most nodes drawn (the census's rows; at most 4096).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    rows: u32,
}

/// `p2ps ring --svg FILE`: draws the ring from a census.
pub fn ring(args: RingArgs) -> Result<()> {
    let (report, status) = match &args.from_census {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the census {}", file.display()))?;
            let report: CensusReport = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a census (p2ps census --json)", file.display())
            })?;
            let status = match &args.from_status {
                None => None,
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading the status {}", f.display()))?;
                    Some(serde_json::from_str::<Status>(&text).with_context(|| {
                        format!("{} is not a status (p2ps status --json)", f.display())
                    })?)
                }
            };
            (report, status)
        }
        None => {
            let counting = crate::progress::spinner("counting the network", false);
            let v = args.control.call(&Request::Census {
                rows: Some(args.rows),
            });
            counting.finish_and_clear();
            let v = v?;
            let report: CensusReport =
                serde_json::from_value(v).context("the node's census is malformed")?;
            let v = args.control.call(&Request::Status {})?;
            let status: Status =
                serde_json::from_value(v).context("the node's status is malformed")?;
            (report, Some(status))
        }
    };
    let svg = picture(&report, status.as_ref(), args.colour.into());
    std::fs::write(&args.svg, svg)
        .with_context(|| format!("writing the picture to {}", args.svg.display()))?;
    eprintln!(
        "{}: {} of {} nodes drawn",
        args.svg.display(),
        report.rows.len(),
        report.nodes
    );
    Ok(())
}

/// The ring position of a node id.
fn pos(id: p2ps::NodeId) -> p2ps::RingId {
    OverlayId(id).ring_id()
}

/// The node of `status` as the picture's focus: its lists and fingers as chords.
pub(crate) fn focus(s: &Status) -> Focus {
    Focus {
        name: s.id.to_string(),
        pos: s.ring_position,
        successors: s.successors.iter().map(|id| pos(*id)).collect(),
        predecessors: s.predecessors.iter().map(|id| pos(*id)).collect(),
        fingers: s.fingers.iter().map(|f| pos(f.node)).collect(),
    }
}

/// The picture of `report`, with the lists and fingers of the node of `status` if given.
pub(crate) fn picture(report: &CensusReport, status: Option<&Status>, colour: Colouring) -> String {
    let focus = status.map(focus);
    p2ps::census::svg(report, focus.as_ref(), colour)
}
