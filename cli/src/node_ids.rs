//! Node ids as a user types them: the whole id (64 hex digits) or, as git takes commit ids, a
//! prefix of at least [`MIN_PREFIX`] hex digits (such as the 10-digit short ids that `p2ps
//! status` and incoming messages show) that names exactly one node the node knows: its routing
//! table, its connections, its groups' trees, and who sent it messages lately.

use p2ps::{NodeId, Status};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

/// Fewest hex digits of a prefix.
pub(crate) const MIN_PREFIX: usize = 4;
/// Senders remembered.
const RECENT_SENDERS: usize = 1024;

/// A node id as given: whole, or a prefix to look up (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IdArg {
    /// All 64 hex digits.
    Full(NodeId),
    /// [`MIN_PREFIX`] to 63 hex digits.
    Prefix(String),
}

impl std::fmt::Display for IdArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdArg::Full(id) => write!(f, "{id}"),
            IdArg::Prefix(p) => f.write_str(p),
        }
    }
}

/// Parses a whole id or a prefix of one.
pub(crate) fn parse_id_arg(s: &str) -> Result<IdArg, String> {
    let s = s.trim();
    let hex = s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || s.len() < MIN_PREFIX || s.len() > 64 {
        return Err(format!(
            "{s:?} is not a node id: give its 64 hex digits, or a prefix of at least \
             {MIN_PREFIX} of them that names one node this node knows (as `p2ps status` and \
             incoming messages show them)"
        ));
    }
    if s.len() == 64 {
        return s
            .parse::<NodeId>()
            .map(IdArg::Full)
            .map_err(|e| format!("{s:?} is not a node id: {e}"));
    }
    Ok(IdArg::Prefix(s.to_ascii_lowercase()))
}

/// The one id among `known` that starts with `prefix` (lowercase hex).
pub(crate) fn resolve_prefix(
    prefix: &str,
    known: impl IntoIterator<Item = NodeId>,
) -> Result<NodeId, String> {
    let matches: BTreeSet<NodeId> = known
        .into_iter()
        .filter(|id| id.to_string().starts_with(prefix))
        .collect();
    let mut it = matches.iter();
    match (it.next(), it.next()) {
        (Some(id), None) => Ok(*id),
        (None, _) => Err(format!(
            "no node this node knows has an id starting with {prefix} (it knows its routing \
             table, connections, group trees and recent senders); give all 64 hex digits of \
             the id to send to another node"
        )),
        (Some(_), Some(_)) => Err(format!(
            "{prefix} is ambiguous: it starts the ids of {}; give more digits",
            matches
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Every node id a status names.
pub(crate) fn known_ids(s: &Status) -> BTreeSet<NodeId> {
    let mut ids = BTreeSet::from([s.id]);
    ids.extend(s.successors.iter().chain(&s.predecessors).chain(&s.relay));
    ids.extend(s.fingers.iter().map(|f| f.node));
    ids.extend(s.connections.iter().map(|c| c.node));
    ids.extend(s.connections.iter().flat_map(|c| c.relayed_by.iter()));
    for g in &s.groups {
        ids.extend(g.parent.iter().chain(&g.children));
    }
    ids
}

/// The authors of the last [`RECENT_SENDERS`] distinct senders' messages, shared by the
/// node's message loop (which records them) and its control server (which looks prefixes up).
#[derive(Debug, Default)]
pub(crate) struct RecentSenders {
    ids: Mutex<VecDeque<NodeId>>,
}

impl RecentSenders {
    /// Remembers that `id` sent a message (the oldest sender is forgotten beyond the limit).
    pub(crate) fn record(&self, id: NodeId) {
        let Ok(mut ids) = self.ids.lock() else {
            return;
        };
        ids.retain(|i| *i != id);
        ids.push_back(id);
        if ids.len() > RECENT_SENDERS {
            ids.pop_front();
        }
    }

    /// The senders remembered.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.ids
            .lock()
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, second: u8) -> NodeId {
        let mut b = [7u8; 32];
        b[0] = first;
        b[1] = second;
        NodeId::from_bytes(b)
    }

    #[test]
    fn whole_ids_and_prefixes_parse() {
        let a = id(0xd6, 0x73);
        assert_eq!(parse_id_arg(&a.to_string()), Ok(IdArg::Full(a)));
        assert_eq!(
            parse_id_arg(&a.to_string().to_uppercase()),
            Ok(IdArg::Full(a))
        );
        assert_eq!(
            parse_id_arg("D67394b546"),
            Ok(IdArg::Prefix("d67394b546".into()))
        );
        for bad in ["", "d67", "not-an-id", "d673 94", &"a".repeat(65)] {
            let e = parse_id_arg(bad).unwrap_err();
            assert!(e.contains("not a node id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_prefix_names_one_known_id_or_says_why_not() {
        let (a, b, c) = (id(0xd6, 0x73), id(0xd6, 0x74), id(0x12, 0x34));
        let known = [a, b, c];
        assert_eq!(resolve_prefix("d673", known), Ok(a));
        assert_eq!(resolve_prefix(&a.short().to_string(), known), Ok(a));
        assert_eq!(resolve_prefix("1234", known), Ok(c));
        let e = resolve_prefix("d67", known).unwrap_err();
        assert!(
            e.contains("ambiguous") && e.contains(&a.to_string()) && e.contains(&b.to_string()),
            "{e}"
        );
        assert!(!e.contains(&c.to_string()), "{e}");
        let e = resolve_prefix("ffff", known).unwrap_err();
        assert!(
            e.contains("no node this node knows") && e.contains("ffff"),
            "{e}"
        );
        // The same id from two sources is one candidate.
        assert_eq!(resolve_prefix("d673", [a, a]), Ok(a));
    }

    #[test]
    fn recent_senders_are_bounded_and_kept_once() {
        let r = RecentSenders::default();
        r.record(id(1, 1));
        r.record(id(2, 2));
        r.record(id(1, 1));
        assert_eq!(r.ids(), vec![id(2, 2), id(1, 1)]);
        for i in 0..=RECENT_SENDERS {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            r.record(NodeId::from_bytes(b));
        }
        assert_eq!(r.ids().len(), RECENT_SENDERS);
        assert!(!r.ids().contains(&id(1, 1)));
    }
}
