//! What a node tells its application about its ring neighbours ([`Event::NeighbourUp`],
//! [`Event::NeighbourDown`]).
//!
//! The lists move more often than the neighbours do: while nodes join at once, a list copied
//! from a neighbour that has not caught up yet leaves out a live node, the check that follows
//! (`verify.rs`) finds it alive and it comes back a few seconds later. Telling the application
//! each of those moves made it announce live nodes as gone and back again. So a peer found dead
//! (no answer, its connection lost, its leave) is announced down at once, but one that merely
//! dropped out of the lists is announced only if it is still out after [`SETTLE`]; if it comes
//! back before, the application hears nothing. Services see the lists' raw changes
//! ([`crate::service::Service::neighbours`]): their repair wants every move.

use super::{Event, Node, Output};
use crate::peer::PeerId;
use crate::time::Time;
use std::time::Duration;

/// How long a live peer must stay out of the lists before its departure is announced.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

impl<P: PeerId> Node<P> {
    /// Brings the application's view up to the lists' members `now` (sorted, no duplicates).
    pub(super) fn announce_neighbours(&mut self, now: &[P]) {
        for p in now {
            self.settling.remove(p);
            if let Err(i) = self.announced.binary_search(p) {
                self.announced.insert(i, *p);
                self.out.push_back(Output::Event(Event::NeighbourUp(*p)));
            }
        }
        let gone: Vec<P> = self
            .announced
            .iter()
            .filter(|p| now.binary_search(p).is_err())
            .copied()
            .collect();
        let until = self.now + SETTLE;
        for p in gone {
            if self.is_buried(&p) {
                self.announce_down(p);
            } else {
                self.settling.entry(p).or_insert(until);
            }
        }
    }

    /// Announces the departures that settled by `now`: peers still out of the lists, or found
    /// dead meanwhile.
    pub(super) fn settle_neighbours(&mut self, now: Time) {
        let due: Vec<P> = self
            .settling
            .iter()
            .filter(|(p, t)| **t <= now || self.is_buried(p))
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.settling.remove(&p);
            if self.neighbours.binary_search(&p).is_err() {
                self.announce_down(p);
            }
        }
    }

    /// When the next departure settles.
    pub(super) fn next_settle(&self) -> Option<Time> {
        self.settling.values().min().copied()
    }

    fn announce_down(&mut self, p: P) {
        self.settling.remove(&p);
        if let Ok(i) = self.announced.binary_search(&p) {
            self.announced.remove(i);
            self.out.push_back(Output::Event(Event::NeighbourDown(p)));
        }
    }
}
