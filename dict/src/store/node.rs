//! [`NodeStore`]: a node's store, in memory or on disk as its settings say, behind one type, so
//! that the node's dictionary (`Dict<P, NodeStore<P>>`) is one service type either way.

use super::disk::RedbStore;
use super::memory::MemStore;
use super::quota::Usage;
use super::{PutError, StorageError, Store};
use crate::record::Record;
use p2ps_overlay::{PeerId, RingId, Time};

/// A store in memory or in a redb file.
#[derive(Debug)]
pub enum NodeStore<P: PeerId> {
    /// In memory: lost when the node stops.
    Memory(MemStore<P>),
    /// In a redb file: kept across restarts.
    Disk(RedbStore<P>),
}

impl<P: PeerId> From<MemStore<P>> for NodeStore<P> {
    fn from(s: MemStore<P>) -> Self {
        NodeStore::Memory(s)
    }
}

impl<P: PeerId> From<RedbStore<P>> for NodeStore<P> {
    fn from(s: RedbStore<P>) -> Self {
        NodeStore::Disk(s)
    }
}

impl<P: PeerId> Store<P> for NodeStore<P> {
    fn get(&self, key: RingId) -> Result<Option<Record<P>>, StorageError> {
        match self {
            NodeStore::Memory(s) => s.get(key),
            NodeStore::Disk(s) => s.get(key),
        }
    }

    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), PutError> {
        match self {
            NodeStore::Memory(s) => s.put(key, record),
            NodeStore::Disk(s) => s.put(key, record),
        }
    }

    fn remove(&mut self, key: RingId) -> Result<(), StorageError> {
        match self {
            NodeStore::Memory(s) => s.remove(key),
            NodeStore::Disk(s) => s.remove(key),
        }
    }

    fn keys(&self) -> Vec<RingId> {
        match self {
            NodeStore::Memory(s) => s.keys(),
            NodeStore::Disk(s) => s.keys(),
        }
    }

    fn stamps(&self, after: RingId, upto: RingId) -> Vec<(RingId, crate::record::Stamp)> {
        match self {
            NodeStore::Memory(s) => s.stamps(after, upto),
            NodeStore::Disk(s) => s.stamps(after, upto),
        }
    }

    fn usage(&self) -> Usage {
        match self {
            NodeStore::Memory(s) => s.usage(),
            NodeStore::Disk(s) => s.usage(),
        }
    }

    fn expire(&mut self, now: Time) -> Result<Vec<RingId>, StorageError> {
        match self {
            NodeStore::Memory(s) => s.expire(now),
            NodeStore::Disk(s) => s.expire(now),
        }
    }
}
