//! Why a store refused or failed: a quota, or the disk.

use super::quota::QuotaExceeded;
use p2ps_overlay::RingId;
use std::path::PathBuf;
use thiserror::Error;

/// Why a store failed: opening its file, reading or writing it, or what it found there.
/// Each variant keeps its cause as its [`source`](std::error::Error::source).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The file could not be created or opened: not a redb file, damaged, or an I/O error.
    #[error("cannot open the dictionary file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The file is held by another process (or another store of this one): another node with
    /// the same data directory, which by default follows from its key file, is running.
    #[error(
        "the dictionary file {} is in use by another process: is a node with this key (or data \
         directory) running already?",
        path.display()
    )]
    InUse {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The file is a redb file, but not a dictionary of the format this version keeps.
    #[error(
        "{} is not a P2PS dictionary file of format {expected} ({})",
        path.display(),
        found.map_or_else(
            || "it names no format: another program's redb file".to_string(),
            |f| format!("it is of format {f}")
        )
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format it says it is in, if it says.
        found: Option<u64>,
        /// The format this version keeps.
        expected: u64,
    },
    /// A record in the file does not decode.
    #[error("the record under key {key} in {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The record's key.
        key: RingId,
        /// Why it does not decode.
        #[source]
        source: postcard::Error,
    },
    /// A record in the file is filed under another key than its own.
    #[error("the record under key {key} in {} belongs to another key", path.display())]
    Misplaced {
        /// The file.
        path: PathBuf,
        /// The key it is filed under.
        key: RingId,
    },
    /// A record could not be encoded for the disk.
    #[error("cannot encode a record for the dictionary file")]
    Encode(#[source] postcard::Error),
    /// Reading or writing the file failed.
    #[error("cannot {op} the dictionary file {}", path.display())]
    Disk {
        /// What was being done: "read", "write", ….
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
}

/// Why a store did not keep a record.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PutError {
    /// A quota would be overrun; the error names it.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The store failed; nothing changed.
    #[error("the record could not be stored")]
    Storage(#[from] StorageError),
}
