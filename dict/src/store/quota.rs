//! Quotas and their bookkeeping, shared by every store: how much a node keeps in all and of
//! one writer, counted in keys and in bytes.

use crate::record::Record;
use p2ps_overlay::PeerId;
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

/// What one record counts for in the quotas: its writer and its size
/// ([`Record::size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint<P> {
    /// Who wrote it.
    pub writer: P,
    /// Bytes it counts for.
    pub bytes: usize,
}

impl<P: PeerId> Footprint<P> {
    /// The footprint of `r`.
    pub fn of(r: &Record<P>) -> Self {
        Footprint {
            writer: r.writer,
            bytes: r.size(),
        }
    }
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

    /// Whether a record of footprint `new` may replace one of footprint `old` (of the same
    /// key, counted in already), or take a key of its own if `old` is `None`.
    pub fn check(&self, old: Option<Footprint<P>>, new: Footprint<P>) -> Result<(), QuotaExceeded> {
        let q = &self.quotas;
        let (old_keys, old_bytes) = old.map_or((0, 0), |o| (1, o.bytes));
        if self.total.keys.saturating_sub(old_keys) + 1 > q.keys {
            return Err(QuotaExceeded::NodeKeys(q.keys));
        }
        if self.total.bytes.saturating_sub(old_bytes) + new.bytes > q.bytes {
            return Err(QuotaExceeded::NodeBytes(q.bytes));
        }
        let w = self.writers.get(&new.writer).copied().unwrap_or_default();
        let (keys, bytes) = match old {
            Some(o) if o.writer == new.writer => {
                (w.keys, w.bytes.saturating_sub(old_bytes) + new.bytes)
            }
            _ => (w.keys + 1, w.bytes + new.bytes),
        };
        if keys > q.keys_per_writer {
            return Err(QuotaExceeded::WriterKeys(q.keys_per_writer));
        }
        if bytes > q.bytes_per_writer {
            return Err(QuotaExceeded::WriterBytes(q.bytes_per_writer));
        }
        Ok(())
    }

    /// Counts a record of footprint `f` in.
    pub fn add(&mut self, f: Footprint<P>) {
        self.total.keys += 1;
        self.total.bytes += f.bytes;
        let w = self.writers.entry(f.writer).or_default();
        w.keys += 1;
        w.bytes += f.bytes;
    }

    /// Counts a record of footprint `f` out.
    pub fn sub(&mut self, f: Footprint<P>) {
        self.total.keys = self.total.keys.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(f.bytes);
        if let Some(w) = self.writers.get_mut(&f.writer) {
            w.keys = w.keys.saturating_sub(1);
            w.bytes = w.bytes.saturating_sub(f.bytes);
            if w.keys == 0 {
                self.writers.remove(&f.writer);
            }
        }
    }

    /// Usage in all.
    pub fn total(&self) -> Usage {
        self.total
    }

    /// Usage of `writer`'s records.
    pub fn writer(&self, writer: &P) -> Usage {
        self.writers.get(writer).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::tests::record;

    #[test]
    fn each_quota_is_named_when_overrun() {
        let q = Quotas {
            keys: 3,
            bytes: 1000,
            keys_per_writer: 2,
            bytes_per_writer: 200,
        };
        let mut a = Accounts::new(q);
        // Each record counts for its name, its value and 64 bytes.
        let r1 = record(1, "a", 1, &[0; 10], 60);
        a.add(Footprint::of(&r1));
        a.add(Footprint::of(&record(1, "b", 1, &[0; 10], 60)));
        // A third key of writer 1.
        let r3 = record(1, "c", 1, &[0; 10], 60);
        assert_eq!(
            a.check(None, Footprint::of(&r3)),
            Err(QuotaExceeded::WriterKeys(2))
        );
        // Replacing one of its keys is fine; more than its bytes is not.
        assert_eq!(
            a.check(Some(Footprint::of(&r1)), Footprint::of(&r3)),
            Ok(())
        );
        let big = record(1, "a", 2, &[0; 100], 60);
        assert_eq!(
            a.check(Some(Footprint::of(&r1)), Footprint::of(&big)),
            Err(QuotaExceeded::WriterBytes(200))
        );
        a.add(Footprint::of(&record(2, "d", 1, &[0; 10], 60)));
        assert_eq!(
            a.check(None, Footprint::of(&record(3, "e", 1, &[0; 1], 60))),
            Err(QuotaExceeded::NodeKeys(3))
        );
        assert_eq!(a.total().keys, 3);
        assert_eq!(a.writer(&r1.writer).keys, 2);
        a.sub(Footprint::of(&r1));
        assert_eq!(a.writer(&r1.writer).keys, 1);
        let huge = record(4, "f", 1, &[0; 990], 60);
        assert_eq!(
            a.check(None, Footprint::of(&huge)),
            Err(QuotaExceeded::NodeBytes(1000))
        );
    }
}
