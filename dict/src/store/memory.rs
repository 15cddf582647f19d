//! [`MemStore`]: records in memory, for the simulator and tests (and nodes run without a
//! file). It never fails but for its quotas.

use super::quota::{Accounts, Footprint, Quotas, Usage};
use super::{PutError, StorageError, Store};
use crate::record::{Record, Stamp};
use p2ps_overlay::{PeerId, RingId, Time};
use std::collections::BTreeMap;

/// Records in memory.
#[derive(Debug)]
pub struct MemStore<P: PeerId> {
    records: BTreeMap<RingId, Record<P>>,
    stamps: BTreeMap<RingId, Stamp>,
    accounts: Accounts<P>,
}

impl<P: PeerId> MemStore<P> {
    /// An empty store under `quotas`.
    pub fn new(quotas: Quotas) -> Self {
        MemStore {
            records: BTreeMap::new(),
            stamps: BTreeMap::new(),
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
    fn get(&self, key: RingId) -> Result<Option<Record<P>>, StorageError> {
        Ok(self.records.get(&key).cloned())
    }

    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), PutError> {
        let new = Footprint::of(&record);
        self.accounts
            .check(self.records.get(&key).map(Footprint::of), new)?;
        self.stamps.insert(key, record.stamp());
        if let Some(old) = self.records.insert(key, record) {
            self.accounts.sub(Footprint::of(&old));
        }
        self.accounts.add(new);
        Ok(())
    }

    fn remove(&mut self, key: RingId) -> Result<(), StorageError> {
        if let Some(old) = self.records.remove(&key) {
            self.accounts.sub(Footprint::of(&old));
        }
        self.stamps.remove(&key);
        Ok(())
    }

    fn keys(&self) -> Vec<RingId> {
        self.records.keys().copied().collect()
    }

    fn stamps(&self, after: RingId, upto: RingId) -> Vec<(RingId, Stamp)> {
        super::clockwise(&self.stamps, after, upto)
            .map(|(k, s)| (*k, *s))
            .collect()
    }

    fn usage(&self) -> Usage {
        self.accounts.total()
    }

    fn expire(&mut self, now: Time) -> Result<Vec<RingId>, StorageError> {
        let gone: Vec<RingId> = self
            .records
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            if let Some(old) = self.records.remove(k) {
                self.accounts.sub(Footprint::of(&old));
            }
            self.stamps.remove(k);
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::tests::record;
    use crate::store::QuotaExceeded;

    #[test]
    fn keeps_replaces_expires_and_counts() {
        let q = Quotas {
            keys_per_writer: 2,
            ..Quotas::default()
        };
        let mut s = MemStore::new(q);
        let a = record(1, "a", 1, b"xx", 10);
        let b = record(1, "b", 1, b"y", 20);
        s.put(a.position(), a.clone()).unwrap();
        s.put(b.position(), b.clone()).unwrap();
        assert_eq!(s.get(a.position()).unwrap(), Some(a.clone()));
        assert_eq!(
            s.usage(),
            Usage {
                keys: 2,
                bytes: a.size() + b.size()
            }
        );
        let c = record(1, "c", 1, b"z", 20);
        assert!(matches!(
            s.put(c.position(), c),
            Err(PutError::Quota(QuotaExceeded::WriterKeys(2)))
        ));
        let a2 = record(1, "a", 2, b"xxxx", 30);
        s.put(a2.position(), a2.clone()).unwrap();
        assert_eq!(
            s.usage(),
            Usage {
                keys: 2,
                bytes: a2.size() + b.size()
            }
        );
        assert_eq!(s.expire(Time::from_secs(20)).unwrap(), vec![b.position()]);
        assert_eq!(s.keys(), vec![a2.position()]);
        s.remove(a2.position()).unwrap();
        assert_eq!(s.usage(), Usage::default());
        assert_eq!(s.get(a2.position()).unwrap(), None);
    }
}
