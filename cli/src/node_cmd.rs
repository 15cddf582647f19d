//! `p2ps node`: runs one P2PS node in the foreground.
//!
//! Order of work: settings (flags over environment over `--config` file over defaults), then
//! the control socket (so that a second node on the same socket is refused before it touches
//! anything), then the key, the node, `create` or `join`, and finally a loop that prints
//! incoming messages and neighbour changes until Ctrl-C, SIGTERM or `p2ps leave`, each of which
//! leaves the network gracefully and exits 0.
//!
//! Where things are:
//!
//! - `args`: the command's flags and `--help` examples, with the parsers of their values;
//! - `config_file`: the `--config` file's format and how it is read;
//! - `limits`: the resource limits, as flags and as the file's `[limits]` table;
//! - `dict_limits`: the dictionary's quotas and value size, as flags and as the file's
//!   `[dict]` table;
//! - `settings`: flags, environment, file and defaults merged into what the node runs with;
//! - `run`: the node's life: key, start, `create` or `join`, signals, leaving, clean-up;
//! - `control_server`: the node's side of the control socket (`p2ps status` and friends);
//! - `requests`: control requests carried out, for the control socket and the HTTP API;
//! - `watch_stream`: the node's side of `p2ps watch`, the one streaming control request;
//! - `http`: the node's HTTP interface (`--http`: dashboard, metrics, status, census, the
//!   JSON API and server-sent events);
//! - `output`: what the node prints on stdout (incoming messages, events), text or JSON lines.

mod args;
mod config_file;
mod control_server;
mod dict_limits;
mod flood;
mod http;
mod limits;
mod node_watch_stream;
mod output;
mod requests;
mod run;
mod settings;
mod watch_stream;

pub use args::NodeArgs;

/// A `--config` file with most settings, as an example (and a seed for `p2ps fuzz`).
pub(crate) const CONFIG_EXAMPLE: &str = r#"key = "node.key"
listen = "0.0.0.0:4433"
advertise = ["192.0.2.1:4433"]
name = "edge"
persist = true
strategy = "tango"
upnp = true
http = "127.0.0.1:9100"
log = "info"
stabilize_interval_ms = 500
list_len = 8

[limits]
max_connections = 512

[dict]
max_keys_per_writer = 100
"#;

/// Whether `text` parses as a `--config` file (the settings in it are not checked further).
pub(crate) fn config_parses(text: &str) -> bool {
    toml::from_str::<config_file::FileConfig>(text).is_ok()
}
pub use config_file::config_log;
pub use run::run;
