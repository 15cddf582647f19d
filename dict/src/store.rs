//! Where a node keeps the records it holds: a [`Store`] trait with quotas per writer and per
//! node, and [`MemStore`], the in-memory store of the simulator and tests.

use crate::record::Record;
use p2ps_overlay::{PeerId, RingId, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// How much a node keeps, in all and for one writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quotas {
    /// Keys held in all. Default: 1 000 000.
    pub keys: usize,
    /// Bytes held in all. Default: 1 GiB.
    pub bytes: usize,
    /// Keys held of one writer. Default: 10 000.
    pub keys_per_writer: usize,
    /// Bytes held of one writer. Default: 64 MiB.
    pub bytes_per_writer: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            keys: 1_000_000,
            bytes: 1 << 30,
            keys_per_writer: 10_000,
            bytes_per_writer: 64 << 20,
        }
    }
}

/// Which quota a record would overrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum QuotaExceeded {
    /// Keys on this node.
    #[error("the node holds as many keys as it may ({0})")]
    NodeKeys(usize),
    /// Bytes on this node.
    #[error("the node holds as many bytes as it may ({0})")]
    NodeBytes(usize),
    /// Keys of this writer on this node.
    #[error("the writer has as many keys on this node as it may ({0})")]
    WriterKeys(usize),
    /// Bytes of this writer on this node.
    #[error("the writer has as many bytes on this node as it may ({0})")]
    WriterBytes(usize),
}

/// Keys and bytes held.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Keys.
    pub keys: usize,
    /// Bytes.
    pub bytes: usize,
}

/// Where records are kept, by ring position. Implementations keep [`Quotas`] with an
/// [`Accounts`] of their own.
pub trait Store<P: PeerId>: Send + 'static {
    /// The record held for `key`.
    fn get(&self, key: RingId) -> Option<&Record<P>>;

    /// Keeps `record` for `key`, replacing what was there, unless a quota forbids it.
    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), QuotaExceeded>;

    /// Forgets `key`.
    fn remove(&mut self, key: RingId);

    /// Every key held, in ring order.
    fn keys(&self) -> Vec<RingId>;

    /// Keys and bytes held.
    fn usage(&self) -> Usage;

    /// Forgets every record that expired at `now`; returns their keys.
    fn expire(&mut self, now: Time) -> Vec<RingId>;
}

/// Quota bookkeeping a store shares: usage in all and per writer.
#[derive(Debug)]
pub struct Accounts<P> {
    quotas: Quotas,
    total: Usage,
    writers: BTreeMap<P, Usage>,
}

impl<P: PeerId> Accounts<P> {
    /// Empty accounts under `quotas`.
    pub fn new(quotas: Quotas) -> Self {
        Accounts {
            quotas,
            total: Usage::default(),
            writers: BTreeMap::new(),
        }
    }

    /// Whether `new` may replace `old` (of the same key, counted in already).
    pub fn check(&self, old: Option<&Record<P>>, new: &Record<P>) -> Result<(), QuotaExceeded> {
        let q = &self.quotas;
        let (old_keys, old_bytes) = old.map_or((0, 0), |o| (1, o.size()));
        if self.total.keys - old_keys + 1 > q.keys {
            return Err(QuotaExceeded::NodeKeys(q.keys));
        }
        if self.total.bytes - old_bytes + new.size() > q.bytes {
            return Err(QuotaExceeded::NodeBytes(q.bytes));
        }
        let w = self.writers.get(&new.writer).copied().unwrap_or_default();
        let (keys, bytes) = match old {
            Some(o) if o.writer == new.writer => (w.keys, w.bytes - old_bytes + new.size()),
            _ => (w.keys + 1, w.bytes + new.size()),
        };
        if keys > q.keys_per_writer {
            return Err(QuotaExceeded::WriterKeys(q.keys_per_writer));
        }
        if bytes > q.bytes_per_writer {
            return Err(QuotaExceeded::WriterBytes(q.bytes_per_writer));
        }
        Ok(())
    }

    /// Counts `r` in.
    pub fn add(&mut self, r: &Record<P>) {
        self.total.keys += 1;
        self.total.bytes += r.size();
        let w = self.writers.entry(r.writer).or_default();
        w.keys += 1;
        w.bytes += r.size();
    }

    /// Counts `r` out.
    pub fn sub(&mut self, r: &Record<P>) {
        self.total.keys = self.total.keys.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(r.size());
        if let Some(w) = self.writers.get_mut(&r.writer) {
            w.keys = w.keys.saturating_sub(1);
            w.bytes = w.bytes.saturating_sub(r.size());
            if w.keys == 0 {
                self.writers.remove(&r.writer);
            }
        }
    }

    /// Usage in all.
    pub fn total(&self) -> Usage {
        self.total
    }
}

/// Records in memory.
#[derive(Debug)]
pub struct MemStore<P: PeerId> {
    records: BTreeMap<RingId, Record<P>>,
    accounts: Accounts<P>,
}

impl<P: PeerId> MemStore<P> {
    /// An empty store under `quotas`.
    pub fn new(quotas: Quotas) -> Self {
        MemStore {
            records: BTreeMap::new(),
            accounts: Accounts::new(quotas),
        }
    }
}

impl<P: PeerId> Default for MemStore<P> {
    fn default() -> Self {
        MemStore::new(Quotas::default())
    }
}

impl<P: PeerId> Store<P> for MemStore<P> {
    fn get(&self, key: RingId) -> Option<&Record<P>> {
        self.records.get(&key)
    }

    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), QuotaExceeded> {
        self.accounts.check(self.records.get(&key), &record)?;
        if let Some(old) = self.records.remove(&key) {
            self.accounts.sub(&old);
        }
        self.accounts.add(&record);
        self.records.insert(key, record);
        Ok(())
    }

    fn remove(&mut self, key: RingId) {
        if let Some(old) = self.records.remove(&key) {
            self.accounts.sub(&old);
        }
    }

    fn keys(&self) -> Vec<RingId> {
        self.records.keys().copied().collect()
    }

    fn usage(&self) -> Usage {
        self.accounts.total()
    }

    fn expire(&mut self, now: Time) -> Vec<RingId> {
        let gone: Vec<RingId> = self
            .records
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(*k);
        }
        gone
    }
}
