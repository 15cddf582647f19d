//! The local control channel of a running `p2ps node`, and the client subcommands that use it:
//! `p2ps status`, `send`, `route`, `lookup` and `leave`.
//!
//! One connection to a Unix domain socket carries one request and one response, each a line of
//! JSON. Where things are:
//!
//! - `protocol`: the requests and responses, their limits, and how keys are named;
//! - `socket`: where the socket lives and how its directory is kept private to the user;
//! - `client`: sending a request to a running node (and the flags that pick the node);
//! - `commands`: the client subcommands;
//! - `render`: how their results are shown (the status view, JSON).
//!
//! The node's side is `crate::node_cmd::control_server`.

pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod protocol;
pub(crate) mod render;
pub(crate) mod socket;
