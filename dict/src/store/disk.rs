//! [`RedbStore`]: records in one [redb](https://www.redb.org) file, so that a node restarted
//! with the same key (and the same file) keeps what it held.
//!
//! Why redb: it is pure Rust (no C library to build or audit), ACID (copy-on-write B-trees
//! with checksummed pages: a crash leaves the last committed state), keeps everything in one
//! file, and is actively maintained.
//!
//! Layout: a table `records` from the key's ring position (its 128 bits) to the record,
//! encoded with postcard, and a table `meta` with the file's format. The store keeps in
//! memory what its quotas, expiry and key listing need (each key's writer, size and expiry);
//! values stay on disk and are read on `get`. On open it checks the file's integrity, rebuilds
//! that index and the [`Accounts`] from the records, and drops the expired ones.
//!
//! Every write is its own transaction, committed durably (fsync) before it returns; batching
//! writes can come later.

use super::quota::{Accounts, Footprint, Quotas, Usage};
use super::{PutError, StorageError, Store};
use crate::record::{Record, Stamp};
use p2ps_overlay::{PeerId, RingId, Time};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The records: ring position to postcard-encoded record.
const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("records");

/// What the file is: `format` (its version).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The format this version writes and reads.
const FORMAT: u64 = 1;

/// The page cache redb keeps in memory (its default, 1 GiB, is too much for a node).
const CACHE_BYTES: usize = 32 << 20;

/// What the store keeps in memory of a record on disk.
#[derive(Clone, Copy, Debug)]
struct Held<P> {
    footprint: Footprint<P>,
    expires: Time,
    stamp: Stamp,
}

/// Records in a redb file.
pub struct RedbStore<P: PeerId> {
    db: Database,
    path: PathBuf,
    index: BTreeMap<RingId, Held<P>>,
    accounts: Accounts<P>,
}

impl<P: PeerId> std::fmt::Debug for RedbStore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("usage", &self.accounts.total())
            .finish_non_exhaustive()
    }
}

impl<P: PeerId> RedbStore<P> {
    /// Opens the store in the file at `path` (created if missing; its directory must exist)
    /// under `quotas`, and forgets the records expired at `now`.
    ///
    /// A file that is not a redb file, is damaged, is held by another store, or is another
    /// program's redb file is refused with the reason. Records over the quotas (lowered since
    /// they were written) are kept; new ones are refused until usage is back under them.
    pub fn open(path: impl AsRef<Path>, quotas: Quotas, now: Time) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            // A file changed behind redb's back fails to open instead of being trusted.
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => StorageError::InUse {
                    path: path.clone(),
                    source: Box::new(source),
                },
                source => StorageError::Open {
                    path: path.clone(),
                    source: Box::new(source),
                },
            })?;
        let mut store = RedbStore {
            db,
            path,
            index: BTreeMap::new(),
            accounts: Accounts::new(quotas),
        };
        store.load(now)?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A [`StorageError::Disk`] for `op` on this file.
    fn disk<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StorageError + '_ {
        move |e| StorageError::Disk {
            op,
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    /// Checks the format (writing it into a new file), reads every record into the index and
    /// the accounts, and removes the expired ones, in one transaction.
    fn load(&mut self, now: Time) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(self.disk("open"))?;
        let mut expired = Vec::new();
        {
            // A file without tables is new; one with tables but no format is another's.
            let fresh = txn
                .list_tables()
                .map_err(self.disk("read"))?
                .next()
                .is_none();
            let mut meta = txn.open_table(META).map_err(self.disk("open"))?;
            let mut records = txn.open_table(RECORDS).map_err(self.disk("open"))?;
            let found = meta
                .get("format")
                .map_err(self.disk("read"))?
                .map(|g| g.value());
            match found {
                Some(FORMAT) => {}
                None if fresh => {
                    meta.insert("format", FORMAT).map_err(self.disk("write"))?;
                }
                found => {
                    return Err(StorageError::Format {
                        path: self.path.clone(),
                        found,
                        expected: FORMAT,
                    })
                }
            }
            for entry in records.iter().map_err(self.disk("read"))? {
                let (k, v) = entry.map_err(self.disk("read"))?;
                let key = RingId(k.value());
                let record: Record<P> =
                    postcard::from_bytes(v.value()).map_err(|source| StorageError::Corrupt {
                        path: self.path.clone(),
                        key,
                        source,
                    })?;
                if record.position() != key {
                    return Err(StorageError::Misplaced {
                        path: self.path.clone(),
                        key,
                    });
                }
                if record.expires <= now {
                    expired.push(key);
                    continue;
                }
                let footprint = Footprint::of(&record);
                self.accounts.add(footprint);
                self.index.insert(
                    key,
                    Held {
                        footprint,
                        expires: record.expires,
                        stamp: Stamp::of_encoded(record.version, v.value()),
                    },
                );
            }
            for key in &expired {
                records.remove(key.0).map_err(self.disk("write"))?;
            }
        }
        txn.commit().map_err(self.disk("write"))
    }

    /// Runs `f` on the records table in one write transaction, committed durably.
    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, u128, &'static [u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(self.disk("write"))?;
        {
            let mut records = txn.open_table(RECORDS).map_err(self.disk("write"))?;
            f(&mut records).map_err(self.disk("write"))?;
        }
        txn.commit().map_err(self.disk("write"))
    }
}

impl<P: PeerId> Store<P> for RedbStore<P> {
    fn get(&self, key: RingId) -> Result<Option<Record<P>>, StorageError> {
        if !self.index.contains_key(&key) {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(self.disk("read"))?;
        let records = txn.open_table(RECORDS).map_err(self.disk("read"))?;
        let Some(v) = records.get(key.0).map_err(self.disk("read"))? else {
            return Ok(None);
        };
        postcard::from_bytes(v.value())
            .map(Some)
            .map_err(|source| StorageError::Corrupt {
                path: self.path.clone(),
                key,
                source,
            })
    }

    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), PutError> {
        let footprint = Footprint::of(&record);
        let old = self.index.get(&key).map(|h| h.footprint);
        self.accounts.check(old, footprint)?;
        let bytes = postcard::to_stdvec(&record).map_err(StorageError::Encode)?;
        self.write(|t| t.insert(key.0, bytes.as_slice()).map(|_| ()))?;
        if let Some(old) = old {
            self.accounts.sub(old);
        }
        self.accounts.add(footprint);
        self.index.insert(
            key,
            Held {
                footprint,
                expires: record.expires,
                stamp: Stamp::of_encoded(record.version, &bytes),
            },
        );
        Ok(())
    }

    fn remove(&mut self, key: RingId) -> Result<(), StorageError> {
        let Some(held) = self.index.get(&key).copied() else {
            return Ok(());
        };
        self.write(|t| t.remove(key.0).map(|_| ()))?;
        self.index.remove(&key);
        self.accounts.sub(held.footprint);
        Ok(())
    }

    fn keys(&self) -> Vec<RingId> {
        self.index.keys().copied().collect()
    }

    fn stamps(&self, after: RingId, upto: RingId) -> Vec<(RingId, Stamp)> {
        super::clockwise(&self.index, after, upto)
            .map(|(k, h)| (*k, h.stamp))
            .collect()
    }

    fn usage(&self) -> Usage {
        self.accounts.total()
    }

    fn expire(&mut self, now: Time) -> Result<Vec<RingId>, StorageError> {
        let gone: Vec<RingId> = self
            .index
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        self.write(|t| {
            for k in &gone {
                t.remove(k.0)?;
            }
            Ok(())
        })?;
        for k in &gone {
            if let Some(h) = self.index.remove(k) {
                self.accounts.sub(h.footprint);
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests;
