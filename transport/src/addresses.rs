//! A bounded address book: where to dial a peer we have no connection to.
//!
//! Bounded in peers and in addresses per peer so that a flood of address announcements cannot
//! grow memory; the least recently updated peer and the oldest addresses are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::identity::NodeId;

#[derive(Debug)]
pub(crate) struct AddressBook {
    map: HashMap<NodeId, Vec<SocketAddr>>,
    /// Peers from least to most recently updated.
    order: VecDeque<NodeId>,
    max_peers: usize,
    max_per_peer: usize,
}

impl AddressBook {
    pub(crate) fn new(max_peers: usize, max_per_peer: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_peers: max_peers.max(1),
            max_per_peer: max_per_peer.max(1),
        }
    }

    /// Records `addrs` for `peer`, most preferred first; they go before older addresses.
    pub(crate) fn add(&mut self, peer: NodeId, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut fresh: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            // A relayed circuit's synthetic address means nothing for a later dial.
            if !fresh.contains(&a) && !crate::relay::is_relayed(&a) {
                fresh.push(a);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let list = self.map.entry(peer).or_default();
        list.retain(|a| !fresh.contains(a));
        fresh.append(list);
        fresh.truncate(self.max_per_peer);
        *list = fresh;
        if let Some(pos) = self.order.iter().position(|p| *p == peer) {
            self.order.remove(pos);
        }
        self.order.push_back(peer);
        while self.map.len() > self.max_peers {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The addresses of `peer`, most preferred first.
    pub(crate) fn get(&self, peer: &NodeId) -> Vec<SocketAddr> {
        self.map.get(peer).cloned().unwrap_or_default()
    }

    /// Moves `addr` to the front of `peer`'s list (it just worked).
    pub(crate) fn promote(&mut self, peer: NodeId, addr: SocketAddr) {
        self.add(peer, [addr]);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn bounded_per_peer_newest_first() {
        let mut book = AddressBook::new(10, 3);
        book.add(id(1), [addr(1), addr(2)]);
        book.add(id(1), [addr(3), addr(4)]);
        assert_eq!(book.get(&id(1)), vec![addr(3), addr(4), addr(1)]);
        book.promote(id(1), addr(1));
        assert_eq!(book.get(&id(1)), vec![addr(1), addr(3), addr(4)]);
        book.add(id(1), [addr(4), addr(4)]);
        assert_eq!(book.get(&id(1)), vec![addr(4), addr(1), addr(3)]);
    }

    #[test]
    fn bounded_in_peers_least_recent_evicted() {
        let mut book = AddressBook::new(2, 3);
        book.add(id(1), [addr(1)]);
        book.add(id(2), [addr(2)]);
        book.add(id(1), [addr(11)]);
        book.add(id(3), [addr(3)]);
        assert_eq!(book.len(), 2);
        assert!(book.get(&id(2)).is_empty());
        assert_eq!(book.get(&id(1)), vec![addr(11), addr(1)]);
        assert_eq!(book.get(&id(3)), vec![addr(3)]);
    }
}
