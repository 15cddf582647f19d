//! What can go wrong while building or using a NAT lab.

use std::time::Duration;

/// An error of the NAT lab: a command that failed or hung, a namespace that could not be
/// entered, missing privileges.
#[derive(Debug, thiserror::Error)]
pub enum NatLabError {
    /// Network namespaces and nftables need root.
    #[error("the NAT lab needs root (network namespaces, nftables); running as euid {0}")]
    NotRoot(u32),
    /// A program the lab needs is not installed.
    #[error("`{0}` is not installed (Debian: apt-get install iproute2 nftables miniupnpd-nftables miniupnpc)")]
    MissingProgram(&'static str),
    /// A command could not be started at all.
    #[error("`{command}` could not start: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit it exceeded.
        timeout: Duration,
    },
    /// A thread could not move into a network namespace.
    #[error("cannot enter network namespace {ns}: {source}")]
    Setns {
        /// The namespace name.
        ns: String,
        /// Why.
        source: std::io::Error,
    },
    /// Code run inside a namespace panicked.
    #[error("the thread running in network namespace {0} panicked")]
    ThreadPanicked(String),
    /// Another I/O error (files of the lab, sockets made inside a namespace).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The address plan has room for a limited number of sites per lab.
    #[error("a NAT lab holds at most {0} sites")]
    Full(u8),
    /// A carrier customer was asked for next to a site that has no carrier NAT.
    #[error("site {0} is not behind a carrier NAT (only double-NAT sites are)")]
    NoCarrier(String),
    /// miniupnpd exited or did not come up.
    #[error("miniupnpd in {ns} did not start: {log}")]
    Upnpd {
        /// The router namespace.
        ns: String,
        /// What it printed.
        log: String,
    },
}

/// Result of NAT lab operations.
pub type Result<T, E = NatLabError> = std::result::Result<T, E>;
