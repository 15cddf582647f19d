//! A snapshot of a running node, for monitoring (`p2ps status`, dashboards).
//!
//! Node ids are written as their full hex form, so the snapshot reads well as JSON.

use p2ps_transport::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Everything a node can tell about itself at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node's id.
    #[serde(with = "hex_id")]
    pub id: NodeId,
    /// Its ring position (hex).
    #[serde(with = "hex_ring")]
    pub ring_position: p2ps_overlay::RingId,
    /// Addresses it advertises.
    pub addrs: Vec<SocketAddr>,
    /// How others can reach it: `unknown`, `public`, `port-mapped`, `cone` or `symmetric`.
    pub reachability: String,
    /// External addresses peers reported seeing it at (best supported first).
    pub external_addrs: Vec<SocketAddr>,
    /// The UPnP port mapping, in words (`off`, `mapped 1.2.3.4:5`, `useless: …`, …).
    pub port_mapping: String,
    /// The node that introduces and relays for this one while it is behind a NAT.
    #[serde(with = "hex_ids")]
    pub relay: Vec<NodeId>,
    /// `idle`, `joining`, `joined` or `left`.
    pub state: String,
    /// Finger strategy.
    pub strategy: String,
    /// Successor list, nearest first.
    #[serde(with = "hex_ids")]
    pub successors: Vec<NodeId>,
    /// Predecessor list, nearest first.
    #[serde(with = "hex_ids")]
    pub predecessors: Vec<NodeId>,
    /// Filled finger slots.
    pub fingers: Vec<FingerEntry>,
    /// Distinct peers in the routing table.
    pub distinct_neighbours: usize,
    /// Live connections.
    pub connections: Vec<PeerEntry>,
    /// Group trees this node is part of (as member, forwarder or root).
    pub groups: Vec<GroupEntry>,
    /// Broadcasts and range multicasts this node is helping to cover right now.
    pub casts_in_progress: usize,
    /// The services running on this node, with their counters.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Counters.
    pub counters: Counters,
    /// Seconds since the node started.
    pub uptime_secs: f64,
}

/// One finger slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerEntry {
    /// `+` (clockwise) or `-`.
    pub dir: String,
    /// Level (distance index).
    pub level: usize,
    /// The finger.
    #[serde(with = "hex_id")]
    pub node: NodeId,
}

/// This node's place in one group's multicast tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    /// The group's name, when this node joined it (forwarders only know its position).
    pub name: Option<String>,
    /// The group's ring position (hex).
    #[serde(with = "hex_ring")]
    pub position: p2ps_overlay::RingId,
    /// Whether this node is a member.
    pub member: bool,
    /// Whether this node is the tree's root (responsible for the group's position).
    pub root: bool,
    /// The parent in the tree (none at the root).
    #[serde(with = "hex_ids")]
    pub parent: Vec<NodeId>,
    /// The children in the tree.
    #[serde(with = "hex_ids")]
    pub children: Vec<NodeId>,
}

/// A service running on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Its name (`p2ps/cast`, `myapp/chat`).
    pub name: String,
    /// Its id on the wire.
    pub id: u32,
    /// Its counters, by name.
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// One connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer.
    #[serde(with = "hex_id")]
    pub node: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether we dialed it.
    pub outbound: bool,
    /// The relay carrying it, if it is not direct.
    #[serde(with = "hex_ids")]
    pub relayed_by: Vec<NodeId>,
    /// Smoothed round-trip time, in milliseconds.
    pub rtt_ms: f64,
}

/// Counters of a node since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages sent (all classes).
    pub messages_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Bytes sent (whole frames, all classes).
    pub bytes_out: u64,
    /// Bytes received (whole frames).
    pub bytes_in: u64,
    /// UDP payload bytes sent, as QUIC counts them: frames plus packet headers,
    /// acknowledgements, keep-alives, handshakes and retransmissions.
    pub udp_bytes_out: u64,
    /// UDP payload bytes received.
    pub udp_bytes_in: u64,
    /// Bytes sent on the routing-upkeep stream class.
    pub routing_bytes_out: u64,
    /// Bytes sent on the user stream class.
    pub user_bytes_out: u64,
    /// Bytes sent on the broadcast/multicast tree stream class.
    pub tree_bytes_out: u64,
    /// Tree messages dropped because a peer's tree queue was full (the peer is reported to the
    /// overlay, which drops a child that stays slow).
    pub tree_queue_full: u64,
    /// Routed messages forwarded for others.
    pub forwarded: u64,
    /// Payloads delivered to the application.
    pub delivered: u64,
    /// Routed messages dropped (no route, too many hops, addressee absent).
    pub dropped: u64,
    /// Lookups answered.
    pub lookups_ok: u64,
    /// Lookups that failed.
    pub lookups_failed: u64,
    /// Peers declared crashed.
    pub peers_failed: u64,
    /// Connections that timed out.
    pub peers_timed_out: u64,
    /// Messages dropped because a peer's send queue was full.
    pub send_queue_full: u64,
    /// Messages that could not be sent (no address, shutting down).
    pub send_failed: u64,
    /// Incoming messages dropped because the application's inbox was full.
    pub inbox_dropped: u64,
    /// Malformed frames received (each closed its stream).
    pub frame_errors: u64,
    /// Incoming handshakes refused.
    pub handshakes_failed: u64,
    /// Peers that could not be dialed directly and were reached through their relay (hole
    /// punching, then a relayed circuit), attempts.
    pub traversals: u64,
    /// Of those, the ones that failed.
    pub traversals_failed: u64,
    /// Overlay messages for peers behind NATs handed to their relay while no connection to
    /// them existed yet.
    pub forwarded_via_relay: u64,
    /// Overlay messages this node passed on to the peers it relays for.
    pub forwarded_for_peers: u64,
    /// Forwarding requests refused (addressee not connected, application data, or a
    /// forwarded message that did not come from this node's relay).
    pub forwards_refused: u64,
    /// Envelopes and records whose signature did not check out (forgeries), dropped.
    #[serde(default)]
    pub forged: u64,
    /// Envelopes too old or too far in the future (possible replays), dropped.
    #[serde(default)]
    pub stale: u64,
    /// Contacts not taken into the tables: unsigned, stale, or about an unknown node.
    #[serde(default)]
    pub unverified: u64,
    /// Lookup and join answers refused: unasked, for another key, or contradicted by known
    /// nodes.
    #[serde(default)]
    pub bad_answers: u64,
    /// Times this node lost every neighbour and joined again.
    #[serde(default)]
    pub rejoins: u64,
    /// Connections this node dialled (handshakes it started).
    #[serde(default)]
    pub connections_dialed: u64,
}

mod hex_id {
    use p2ps_transport::NodeId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod hex_ids {
    use p2ps_transport::NodeId;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ids: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&id.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NodeId>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

mod hex_ring {
    use p2ps_overlay::RingId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &RingId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RingId, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16)
            .map(RingId)
            .map_err(serde::de::Error::custom)
    }
}
