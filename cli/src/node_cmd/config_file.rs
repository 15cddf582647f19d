//! The `--config` file of `p2ps node`: TOML with any of the node's settings, named as their
//! flags in snake_case, so that a setting can be kept in a file instead of on the command line.
//!
//! Unknown keys are refused (a misspelt setting is an error, not a setting silently ignored),
//! and relative paths are taken relative to the file, wherever the node is started from. The
//! values are checked, and merged with flags and defaults, in `settings`.

use super::args::{NodeArgs, Tunables};
use super::dict_limits::DictLimitArgs;
use super::limits::LimitArgs;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) key: Option<PathBuf>,
    /// The private network's key file (as `--network-key`).
    pub(super) network_key: Option<PathBuf>,
    pub(super) listen: Option<String>,
    pub(super) advertise: Option<Vec<SocketAddr>>,
    pub(super) control: Option<PathBuf>,
    pub(super) name: Option<String>,
    pub(super) ticket_file: Option<PathBuf>,
    pub(super) data_dir: Option<PathBuf>,
    /// `false`: the dictionary in memory only (as `--no-persist`).
    pub(super) persist: Option<bool>,
    pub(super) strategy: Option<String>,
    pub(super) lookup_mode: Option<String>,
    pub(super) upnp: Option<bool>,
    pub(super) relay_serve: Option<bool>,
    /// The HTTP interface's address (as `--http`).
    pub(super) http: Option<SocketAddr>,
    /// The HTTP interface's token file (as `--http-token`).
    pub(super) http_token: Option<PathBuf>,
    /// The log filter, used when neither --log nor P2PS_LOG gives one.
    log: Option<String>,
    // The tunables, named as their flags (serde cannot flatten with deny_unknown_fields).
    stabilize_interval_ms: Option<u64>,
    stabilize_timeout_ms: Option<u64>,
    finger_refresh_ms: Option<u64>,
    list_len: Option<usize>,
    join_timeout_ms: Option<u64>,
    join_attempts: Option<u32>,
    lookup_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    group_refresh_ms: Option<u64>,
    merge_probe_ms: Option<u64>,
    /// The `[limits]` table: resource limits, named as their flags.
    pub(super) limits: Option<LimitArgs>,
    /// The `[dict]` table: the dictionary's quotas, named as their flags without `dict-`.
    pub(super) dict: Option<DictLimitArgs>,
}

impl FileConfig {
    /// Reads and parses the file at `path`; relative paths in it are taken relative to the
    /// file's directory.
    pub(super) fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let mut c: FileConfig = toml::from_str(&text)
            .with_context(|| format!("in the config file {}", path.display()))?;
        if c.data_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            anyhow::bail!(
                "in the config file {}: `data_dir` is empty (`persist = false` keeps the \
                 dictionary in memory)",
                path.display()
            );
        }
        // Paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut c.key,
            &mut c.network_key,
            &mut c.control,
            &mut c.ticket_file,
            &mut c.data_dir,
            &mut c.http_token,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    /// The overlay tunables the file sets.
    pub(super) fn tunables(&self) -> Tunables {
        Tunables {
            stabilize_interval_ms: self.stabilize_interval_ms,
            stabilize_timeout_ms: self.stabilize_timeout_ms,
            finger_refresh_ms: self.finger_refresh_ms,
            list_len: self.list_len,
            join_timeout_ms: self.join_timeout_ms,
            join_attempts: self.join_attempts,
            lookup_timeout_ms: self.lookup_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            group_refresh_ms: self.group_refresh_ms,
            merge_probe_ms: self.merge_probe_ms,
        }
    }
}

/// The log filter set by the `--config` file of `p2ps node`, if any (read before logging
/// starts; `run` reads the file again for everything else).
pub fn config_log(args: &NodeArgs) -> Result<Option<String>> {
    match &args.config {
        Some(p) => Ok(FileConfig::load(p)?.log),
        None => Ok(None),
    }
}
