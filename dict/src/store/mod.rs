//! Where a node keeps the records it holds: the [`Store`] trait, with quotas per writer and
//! per node, and its implementations.
//!
//! - [`MemStore`] (`memory.rs`): in memory, for the simulator and tests;
//! - [`RedbStore`] (`disk.rs`): in one redb file, so that a node restarted with the same key
//!   keeps its records;
//! - [`NodeStore`] (`node.rs`): either of them, chosen when the node starts, so that a node's
//!   dictionary has one type whatever it keeps its records in;
//! - quota bookkeeping (`quota.rs`) and the errors of a store (`error.rs`).

mod disk;
mod error;
mod memory;
mod node;
mod quota;

pub use disk::RedbStore;
pub use error::{PutError, StorageError};
pub use memory::MemStore;
pub use node::NodeStore;
pub use quota::{Accounts, Footprint, QuotaExceeded, Quotas, Usage};

use crate::record::{Record, Stamp};
use p2ps_overlay::{PeerId, RingId, Time};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Where records are kept, by ring position. Implementations keep [`Quotas`] with an
/// [`Accounts`] of their own.
///
/// Records are handed out owned: a store on disk has none in memory to lend (a record's value
/// is a [`bytes::Bytes`], so a copy from memory is cheap).
pub trait Store<P: PeerId>: Send + 'static {
    /// The record held for `key`, if any.
    fn get(&self, key: RingId) -> Result<Option<Record<P>>, StorageError>;

    /// Keeps `record` for `key`, replacing what was there, unless a quota forbids it or the
    /// store fails (then nothing changed).
    fn put(&mut self, key: RingId, record: Record<P>) -> Result<(), PutError>;

    /// Forgets `key` (nothing to do if it is not held).
    fn remove(&mut self, key: RingId) -> Result<(), StorageError>;

    /// Every key held, in ring order.
    fn keys(&self) -> Vec<RingId>;

    /// The keys held in `(after, upto]` going clockwise (the whole ring when the two are
    /// equal), in that order, with the [`Stamp`]s of their records.
    fn stamps(&self, after: RingId, upto: RingId) -> Vec<(RingId, Stamp)>;

    /// Keys and bytes held.
    fn usage(&self) -> Usage;

    /// Forgets every record that expired at `now`; returns their keys.
    fn expire(&mut self, now: Time) -> Result<Vec<RingId>, StorageError>;
}

/// The entries of `map` in `(after, upto]` going clockwise (the whole ring when the two are
/// equal), in that order.
pub(crate) fn clockwise<V>(
    map: &BTreeMap<RingId, V>,
    after: RingId,
    upto: RingId,
) -> impl Iterator<Item = (&RingId, &V)> + '_ {
    let (first, second) = if after < upto {
        (
            map.range((Bound::Excluded(after), Bound::Included(upto))),
            None,
        )
    } else {
        // Wraps past the top of the ring (or goes all the way round).
        (
            map.range((Bound::Excluded(after), Bound::Unbounded)),
            Some(map.range((Bound::Unbounded, Bound::Included(upto)))),
        )
    };
    first.chain(second.into_iter().flatten())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Records for the stores' tests.

    use crate::record::{DictKey, Record};
    use p2ps_overlay::proof::{Signer, StandIn};
    use p2ps_overlay::service::service_signed_bytes;
    use p2ps_overlay::sim::SimId;
    use p2ps_overlay::Time;

    /// A record of writer `w`, version `version`, for the open key `name`, expiring at
    /// `expires` seconds, signed.
    pub(crate) fn record(
        w: u64,
        name: &str,
        version: u64,
        value: &[u8],
        expires: u64,
    ) -> Record<SimId> {
        let key = DictKey::<SimId>::open(name.as_bytes().to_vec());
        let signer = StandIn(SimId(w));
        Record::new(
            &key,
            SimId(w),
            version,
            Time::from_secs(expires),
            Some(value.to_vec().into()),
            |domain, content| signer.sign(&service_signed_bytes(domain, content)),
        )
    }
}
