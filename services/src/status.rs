//! A snapshot of a running node, for monitoring (`p2ps status`, dashboards).
//!
//! Node ids are written as their full hex form, so the snapshot reads well as JSON. The
//! snapshot's states are typed ([`Reachability`], [`PortMapping`], [`NodeState`],
//! [`FingerStrategy`], [`Dir`]); each shows as the word `p2ps status` prints
//! (`Display`), and as the same lowercase name in JSON where a plain name fits.

use p2ps_overlay::{Dir, FingerStrategy};
use p2ps_transport::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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
    /// How others can reach it.
    pub reachability: Reachability,
    /// External addresses peers reported seeing it at (best supported first).
    pub external_addrs: Vec<SocketAddr>,
    /// The UPnP port mapping.
    pub port_mapping: PortMapping,
    /// The node that introduces and relays for this one while it is behind a NAT.
    #[serde(with = "hex_ids")]
    pub relay: Vec<NodeId>,
    /// Where the node is in its life: idle, joining, joined, rejoining or left.
    pub state: NodeState,
    /// Finger strategy.
    pub strategy: FingerStrategy,
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
    /// The number of nodes in the network, estimated from the spacing of this node's
    /// successor and predecessor lists (no traffic; exact while the lists hold every node).
    #[serde(default)]
    pub network_size_estimate: Option<u64>,
    /// The services running on this node, with their counters.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Counters.
    pub counters: Counters,
    /// Seconds since the node started.
    pub uptime_secs: f64,
}

/// How other nodes can reach this one, as its peers' reports and the port mapping show.
///
/// Shown and serialized as `unknown`, `public`, `port-mapped`, `cone` or `symmetric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reachability {
    /// Not enough reports yet (or reports through a NAT whose behaviour is not known yet).
    Unknown,
    /// Peers see the node's own address: no NAT in front of it.
    Public,
    /// The gateway forwards a port to the node (UPnP) and no report contradicts it.
    PortMapped,
    /// Behind a NAT with endpoint-independent mapping: hole punching usually works.
    Cone,
    /// Behind a NAT with endpoint-dependent mapping: the node needs a relay.
    Symmetric,
}

impl Reachability {
    /// The name `p2ps status` shows and JSON holds.
    pub fn name(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::PortMapped => "port-mapped",
            Reachability::Cone => "cone",
            Reachability::Symmetric => "symmetric",
        }
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl From<p2ps_transport::Reachability> for Reachability {
    fn from(r: p2ps_transport::Reachability) -> Self {
        use p2ps_transport::Reachability as R;
        match r {
            R::Unknown => Reachability::Unknown,
            R::Public => Reachability::Public,
            R::PortMapped => Reachability::PortMapped,
            R::Cone => Reachability::Cone,
            R::Symmetric => Reachability::Symmetric,
        }
    }
}

/// Where a node is in its life in the network.
///
/// Shown and serialized as `idle`, `joining`, `joined`, `rejoining` or `left`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeState {
    /// Not part of a network yet.
    Idle,
    /// Waiting for the answer to a join request.
    Joining,
    /// Part of a network.
    Joined,
    /// Was part of a network, lost every neighbour, and is joining again through the nodes
    /// it knew.
    Rejoining,
    /// Left (or gave up joining); the node takes no further part.
    Left,
}

impl NodeState {
    /// The name `p2ps status` shows and JSON holds.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Joining => "joining",
            NodeState::Joined => "joined",
            NodeState::Rejoining => "rejoining",
            NodeState::Left => "left",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl From<p2ps_overlay::State> for NodeState {
    fn from(s: p2ps_overlay::State) -> Self {
        use p2ps_overlay::State as S;
        match s {
            S::Idle => NodeState::Idle,
            S::Joining => NodeState::Joining,
            S::Joined => NodeState::Joined,
            S::Rejoining => NodeState::Rejoining,
            S::Left => NodeState::Left,
            // A state a newer overlay adds: not (yet) counted as part of a network.
            _ => NodeState::Idle,
        }
    }
}

/// The node's UPnP port mapping: whether its gateway forwards a port to it, and if not, why.
///
/// Shown in words (`off`, `mapped 203.0.113.7:4433 (2 renewals)`, `useless: …`, …). In JSON
/// a state without data is its name (`"off"`, `"searching"`, `"stopped"`) and one with data
/// an object under its name (`{"mapped":{"external":"203.0.113.7:4433",…}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PortMapping {
    /// Port mapping is switched off.
    Off,
    /// Looking for a gateway and asking it for a mapping.
    Searching,
    /// No UPnP gateway answered.
    NoGateway {
        /// What happened.
        reason: String,
    },
    /// The node's port is reachable from the internet at `external`.
    Mapped {
        /// The gateway's external address and the mapped port.
        external: SocketAddr,
        /// The gateway's control address.
        gateway: SocketAddr,
        /// How many times the mapping was renewed.
        renewals: u64,
    },
    /// A gateway answered but a mapping on it cannot help (double NAT, refused mapping).
    Useless {
        /// The gateway's control address.
        gateway: SocketAddr,
        /// The external address the gateway reported, if it did.
        external_ip: Option<IpAddr>,
        /// Why the mapping is of no use.
        reason: String,
    },
    /// Talking to the gateway failed; the node tries again later.
    Failed {
        /// What happened.
        reason: String,
    },
    /// The mapper has stopped; no mapping is held.
    Stopped,
}

impl PortMapping {
    /// The address peers can reach the node at through the mapping, when mapped.
    pub fn external(&self) -> Option<SocketAddr> {
        match self {
            PortMapping::Mapped { external, .. } => Some(*external),
            _ => None,
        }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PortMapping::Off => "off".to_string(),
            PortMapping::Searching => "searching for a gateway".to_string(),
            PortMapping::NoGateway { reason } => format!("no gateway ({reason})"),
            PortMapping::Mapped {
                external, renewals, ..
            } => format!("mapped {external} ({renewals} renewals)"),
            PortMapping::Useless { reason, .. } => format!("useless: {reason}"),
            PortMapping::Failed { reason } => format!("failed: {reason}"),
            PortMapping::Stopped => "stopped".to_string(),
        };
        // `pad`, so that a width (`{:<40}`) lines columns up.
        f.pad(&text)
    }
}

impl From<&p2ps_transport::MappingState> for PortMapping {
    fn from(m: &p2ps_transport::MappingState) -> Self {
        use p2ps_transport::MappingState as M;
        match m {
            M::Disabled => PortMapping::Off,
            M::Searching => PortMapping::Searching,
            M::NoGateway { reason } => PortMapping::NoGateway {
                reason: reason.clone(),
            },
            M::Mapped {
                external,
                gateway,
                renewals,
                ..
            } => PortMapping::Mapped {
                external: *external,
                gateway: *gateway,
                renewals: *renewals,
            },
            M::Useless {
                gateway,
                external_ip,
                reason,
            } => PortMapping::Useless {
                gateway: *gateway,
                external_ip: *external_ip,
                reason: reason.clone(),
            },
            M::Failed { reason } => PortMapping::Failed {
                reason: reason.clone(),
            },
            M::Stopped => PortMapping::Stopped,
            // A state a newer transport adds: no mapping this runtime can use.
            other => PortMapping::Failed {
                reason: format!("port mapper state this version does not know: {other:?}"),
            },
        }
    }
}

/// One finger slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerEntry {
    /// The slot's direction: clockwise (`+` when shown and in JSON) or counter-clockwise (`-`).
    #[serde(with = "sign")]
    pub dir: Dir,
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
    /// Whether this node joined it as a closed group (with its secret).
    #[serde(default)]
    pub closed: bool,
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
    /// Overlay messages dropped unread because their sender (the linked peer) sent more
    /// than its per-peer rate allows.
    #[serde(default)]
    pub rate_limited: u64,
}

/// A finger slot's direction as the sign it is written with: `+` (clockwise) or `-`.
mod sign {
    use p2ps_overlay::Dir;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Dir, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Dir::Cw => "+",
            Dir::Ccw => "-",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Dir, D::Error> {
        match String::deserialize(d)?.as_str() {
            "+" => Ok(Dir::Cw),
            "-" => Ok(Dir::Ccw),
            other => Err(serde::de::Error::custom(format!(
                "finger direction {other:?}: expected \"+\" or \"-\""
            ))),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `value` as JSON, and back.
    fn json<T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(
        value: &T,
    ) -> String {
        let text = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, value, "{text}");
        text
    }

    #[test]
    fn reachability_names() {
        for (r, name) in [
            (Reachability::Unknown, "unknown"),
            (Reachability::Public, "public"),
            (Reachability::PortMapped, "port-mapped"),
            (Reachability::Cone, "cone"),
            (Reachability::Symmetric, "symmetric"),
        ] {
            assert_eq!(r.to_string(), name);
            assert_eq!(json(&r), format!("\"{name}\""));
        }
        assert_eq!(
            Reachability::from(p2ps_transport::Reachability::PortMapped),
            Reachability::PortMapped
        );
        assert_eq!(format!("{:<11}|", Reachability::Cone), "cone       |");
    }

    #[test]
    fn state_names() {
        use p2ps_overlay::State;
        for (s, from, name) in [
            (NodeState::Idle, State::Idle, "idle"),
            (NodeState::Joining, State::Joining, "joining"),
            (NodeState::Joined, State::Joined, "joined"),
            (NodeState::Rejoining, State::Rejoining, "rejoining"),
            (NodeState::Left, State::Left, "left"),
        ] {
            assert_eq!(NodeState::from(from), s);
            assert_eq!(s.to_string(), name);
            assert_eq!(json(&s), format!("\"{name}\""));
        }
        assert!(serde_json::from_str::<NodeState>("\"Joined\"").is_err());
    }

    #[test]
    fn strategy_and_direction_names() {
        assert_eq!(json(&FingerStrategy::Chord), "\"chord\"");
        assert_eq!(json(&FingerStrategy::Tango), "\"tango\"");
        assert_eq!(json(&FingerStrategy::TangoPlus), "\"tango-plus\"");
        assert_eq!(FingerStrategy::TangoPlus.to_string(), "tango+");
        assert_eq!(Dir::Cw.to_string(), "+");
        assert_eq!(Dir::Ccw.to_string(), "-");
        let finger = FingerEntry {
            dir: Dir::Ccw,
            level: 3,
            node: NodeId::from_bytes([7; 32]),
        };
        let text = json(&finger);
        assert!(
            text.starts_with(r#"{"dir":"-","level":3,"node":"0707"#),
            "{text}"
        );
        let bad = text.replace(r#""-""#, r#""Ccw""#);
        assert!(serde_json::from_str::<FingerEntry>(&bad).is_err());
    }

    #[test]
    fn port_mapping_words_and_json() {
        let external: SocketAddr = "203.0.113.7:4433".parse().unwrap();
        let gateway: SocketAddr = "192.168.1.1:5000".parse().unwrap();
        let cases = [
            (PortMapping::Off, "off", r#""off""#.to_string()),
            (
                PortMapping::Searching,
                "searching for a gateway",
                r#""searching""#.to_string(),
            ),
            (
                PortMapping::NoGateway {
                    reason: "no answer".into(),
                },
                "no gateway (no answer)",
                r#"{"no-gateway":{"reason":"no answer"}}"#.to_string(),
            ),
            (
                PortMapping::Mapped {
                    external,
                    gateway,
                    renewals: 2,
                },
                "mapped 203.0.113.7:4433 (2 renewals)",
                r#"{"mapped":{"external":"203.0.113.7:4433","gateway":"192.168.1.1:5000","renewals":2}}"#
                    .to_string(),
            ),
            (
                PortMapping::Useless {
                    gateway,
                    external_ip: Some("10.0.0.2".parse().unwrap()),
                    reason: "double NAT".into(),
                },
                "useless: double NAT",
                r#"{"useless":{"gateway":"192.168.1.1:5000","external_ip":"10.0.0.2","reason":"double NAT"}}"#
                    .to_string(),
            ),
            (
                PortMapping::Failed {
                    reason: "timeout".into(),
                },
                "failed: timeout",
                r#"{"failed":{"reason":"timeout"}}"#.to_string(),
            ),
            (PortMapping::Stopped, "stopped", r#""stopped""#.to_string()),
        ];
        for (m, words, text) in cases {
            assert_eq!(m.to_string(), words);
            assert_eq!(json(&m), text);
        }
        assert_eq!(format!("{:<6}|", PortMapping::Off), "off   |");
        let mapped = p2ps_transport::MappingState::Mapped {
            external,
            gateway,
            lease: std::time::Duration::from_secs(3600),
            renewals: 1,
        };
        let m = PortMapping::from(&mapped);
        assert_eq!(m.external(), Some(external));
        assert_eq!(m.to_string(), "mapped 203.0.113.7:4433 (1 renewals)");
        assert_eq!(
            PortMapping::from(&p2ps_transport::MappingState::Disabled),
            PortMapping::Off
        );
        assert_eq!(PortMapping::Off.external(), None);
    }
}
