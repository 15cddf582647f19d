//! Errors of the node API, one enum per operation family.
//!
//! An error that has a cause keeps it as its [`source`](std::error::Error::source) and does not
//! repeat it in its own message, so a chain of causes (`p2ps`'s error report, anyhow's `{:#}`)
//! names each once.

use p2ps_transport::{BindError, IdentityError, NetworkName, NodeId};
use thiserror::Error;

/// Why a connection to a peer could not be made: the cause of [`JoinError::Unreachable`].
pub use p2ps_transport::ConnectError;

/// Why the overlay found no answer to a lookup: no answer after every attempt, or the node left
/// the network while it waited. Carried by [`LookupError::Overlay`].
pub use p2ps_overlay::LookupError as OverlayLookupError;

/// Why a node could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The key could not be loaded.
    #[error("cannot load the identity key")]
    Identity(#[from] IdentityError),
    /// The socket or QUIC endpoint could not be set up (the transport's error as it is: a
    /// prefix here would repeat it in a chain of causes).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The overlay configuration is invalid.
    #[error("invalid overlay configuration")]
    Config(#[from] p2ps_overlay::ConfigError),
    /// The identity key cannot sign overlay messages.
    #[error("the identity key cannot sign overlay messages")]
    Signing(#[source] p2ps_transport::SigningKeyError),
    /// A service could not be registered.
    #[error("cannot register a service")]
    Service(#[source] p2ps_overlay::RegisterError),
    /// The dictionary's file ([`crate::NodeConfig::dict_path`]) could not be opened: its
    /// directory is missing, it is damaged, not a dictionary file, or in use by another node.
    #[error("cannot open the dictionary's store")]
    DictStore {
        /// The file.
        path: std::path::PathBuf,
        /// Why (the store's error, which names the file).
        #[source]
        source: p2ps_dict::StorageError,
    },
}

/// Why a command to a running node failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has stopped (it left, or was shut down).
    #[error("the node has stopped")]
    Stopped,
    /// The node is not part of a network yet.
    #[error("the node is not part of a network (create or join one first)")]
    NotJoined,
    /// The node already created, joined or left a network.
    #[error("the node has already created, joined or left a network")]
    AlreadyStarted,
    /// Too many lookups or casts are waiting for answers.
    #[error("too many requests in flight")]
    Busy,
    /// The node is in as many group trees as it may be.
    #[error("too many groups")]
    TooManyGroups,
    /// A dictionary request failed.
    #[error(transparent)]
    Dict(#[from] p2ps_dict::DictError),
    /// A watch of a node could not start.
    #[error(transparent)]
    Watch(#[from] p2ps_watcher::WatchError),
    /// The service asked for is not registered on this node.
    #[error("no such service on this node")]
    NoService,
    /// A group name is empty or longer than 255 bytes.
    #[error("invalid group name: {0}")]
    BadGroupName(String),
    /// A send's addressee is not in the network: the node responsible for its position, as
    /// a signed lookup answer showed, is another.
    #[error(
        "no node {to} in the network (the node responsible for its position is {responsible})"
    )]
    NoSuchNode {
        /// The addressee.
        to: NodeId,
        /// The node responsible for the addressee's position.
        responsible: NodeId,
    },
    /// A send's addressee could not be looked up (no answer after every attempt).
    #[error("could not reach node {0}: no answer to the lookup of its position")]
    Unreachable(NodeId),
    /// The node is not a member of the group it was asked to leave.
    #[error("not a member of group {0}")]
    NotMember(String),
    /// The payload is larger than the largest message.
    #[error("payload of {len} bytes is over the {max}-byte message limit")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The overlay or one of its services refused the command for a reason this version of
    /// the crate does not name; the text says why.
    #[error("command refused: {0}")]
    Refused(String),
}

impl From<p2ps_overlay::CommandError> for NodeError {
    fn from(e: p2ps_overlay::CommandError) -> Self {
        use p2ps_overlay::CommandError as C;
        match e {
            C::NotJoined => NodeError::NotJoined,
            C::AlreadyStarted | C::SelfBootstrap => NodeError::AlreadyStarted,
            C::TooManyPending => NodeError::Busy,
            C::NoService => NodeError::NoService,
            other => NodeError::Refused(other.to_string()),
        }
    }
}

impl From<p2ps_overlay::groups::GroupError> for NodeError {
    fn from(e: p2ps_overlay::groups::GroupError) -> Self {
        match e {
            p2ps_overlay::groups::GroupError::Command(c) => c.into(),
            p2ps_overlay::groups::GroupError::TooManyGroups => NodeError::TooManyGroups,
            other => NodeError::Refused(other.to_string()),
        }
    }
}

/// Why joining a network failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The command itself was refused.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The ticket names this node.
    #[error("the ticket is this node's own")]
    OwnTicket,
    /// No connection to the bootstrap node could be made.
    #[error("cannot reach the bootstrap node ({})", requests(*.attempts))]
    Unreachable {
        /// Join requests sent.
        attempts: u32,
        /// The last connection error; none if no attempt had failed yet when the join gave up
        /// (the connection was still being set up).
        #[source]
        source: Option<ConnectError>,
    },
    /// The ticket names another network than this node's: a private network this node has no
    /// key for, another private network, or an open one while this node has a network key.
    #[error("{}", other_network(*ticket, *ours))]
    OtherNetwork {
        /// The network named by the ticket (`None`: an open network).
        ticket: Option<NetworkName>,
        /// This node's network (`None`: it has no network key).
        ours: Option<NetworkName>,
    },
    /// The bootstrap node was reached but no answer came.
    #[error("no answer to the join request ({})", requests(*.attempts))]
    NoAnswer {
        /// Join requests sent.
        attempts: u32,
    },
    /// This node's id is in use: the bootstrap node holds a connection from another process
    /// with the same key, and that process still answered when the bootstrap probed it
    /// ([`p2ps_transport::CloseCode::IdInUse`]). Only the bootstrap's word, but a bootstrap
    /// that lies can fail a join anyway.
    #[error(
        "node id {id} is in use: {} is connected to another node with this key that is \
         still running; stop that node, or start this one with another key (--key FILE)",
        .via.short()
    )]
    IdInUse {
        /// This node's id.
        id: NodeId,
        /// The bootstrap node that refused the connection.
        via: NodeId,
    },
}

/// `n join requests sent`, in the singular for one.
fn requests(n: u32) -> String {
    match n {
        1 => "1 join request sent".into(),
        n => format!("{n} join requests sent"),
    }
}

fn other_network(ticket: Option<NetworkName>, ours: Option<NetworkName>) -> String {
    match (ticket, ours) {
        (Some(t), None) => format!(
            "this ticket is for private network {t}: start the node with that network's key \
             (--network-key FILE)"
        ),
        (Some(t), Some(o)) => format!(
            "this ticket is for private network {t}, but this node's network key is for \
             private network {o}"
        ),
        (None, Some(o)) => format!(
            "this ticket is for an open network, but this node has the network key of private \
             network {o}"
        ),
        (None, None) => "this ticket is for another network".into(),
    }
}

/// Why a lookup failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// The command was refused (the node is not part of a network, has stopped, or has too
    /// many requests in flight).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The overlay found no answer: none came after every attempt
    /// ([`OverlayLookupError::Timeout`]), or the node left the network while it waited
    /// ([`OverlayLookupError::Left`]).
    #[error(transparent)]
    Overlay(#[from] OverlayLookupError),
}

/// `e` and its causes on one line, `: ` between them (for logs).
pub(crate) fn chain_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// The message of `e` and of each of its causes.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push(c.to_string());
            cause = c.source();
        }
        out
    }

    #[test]
    fn an_unreachable_bootstrap_keeps_the_connection_error_as_its_cause() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let e = JoinError::Unreachable {
            attempts: 2,
            source: Some(ConnectError::TimedOut { addr }),
        };
        assert_eq!(
            chain(&e),
            [
                "cannot reach the bootstrap node (2 join requests sent)",
                "connecting to 127.0.0.1:9 timed out"
            ]
        );
        assert!(matches!(
            e.source().and_then(|c| c.downcast_ref::<ConnectError>()),
            Some(ConnectError::TimedOut { .. })
        ));
        // No attempt had failed yet when the join gave up: the message alone.
        let e = JoinError::Unreachable {
            attempts: 3,
            source: None,
        };
        assert_eq!(
            chain(&e),
            ["cannot reach the bootstrap node (3 join requests sent)"]
        );
    }

    #[test]
    fn an_id_in_use_names_the_id_and_what_to_do() {
        let id = NodeId::from_bytes([7; 32]);
        let e = JoinError::IdInUse {
            id,
            via: NodeId::from_bytes([8; 32]),
        };
        let text = e.to_string();
        assert!(text.contains(&id.to_string()), "{text}");
        assert!(text.contains("in use") && text.contains("--key"), "{text}");
    }

    #[test]
    fn start_errors_name_their_cause_once() {
        let e = StartError::from(p2ps_overlay::ConfigError::Zero("join_attempts"));
        let c = chain(&e);
        assert_eq!(c[0], "invalid overlay configuration");
        assert_eq!(c.len(), 2);
        assert!(!c[0].contains(&c[1]), "{c:?}");
    }

    #[test]
    fn lookup_errors_wrap_the_overlays() {
        let left = LookupError::from(OverlayLookupError::Left);
        assert_eq!(left, LookupError::Overlay(OverlayLookupError::Left));
        assert_eq!(left.to_string(), "the node left the network");
        let timeout = LookupError::from(OverlayLookupError::Timeout);
        assert_eq!(timeout.to_string(), "no answer after every attempt");
        let refused = LookupError::from(NodeError::NotJoined);
        assert_eq!(refused.to_string(), NodeError::NotJoined.to_string());
        // Transparent: the wrapper adds no message of its own to a chain.
        assert_eq!(chain(&left), ["the node left the network"]);
    }
}
