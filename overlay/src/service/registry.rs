//! The services registered on a node, and the work waiting for them.

use super::{Answered, Incoming, NeighbourChange, Service, ServiceId, ServiceSummary};
use crate::message::{Query, Routed};
use crate::peer::PeerId;
use crate::time::Time;
use std::any::Any;
use std::collections::VecDeque;

/// Something a service must be told, queued until the node runs its services (after the input
/// that caused it, so a service never runs inside another hook of its own).
#[derive(Debug)]
pub(crate) enum Work<P: PeerId> {
    /// A routed message of a service is at this node (arrived, or started here).
    Route(Routed<P>),
    /// A query of a service is at this node (arrived, with its sender in its trail, or
    /// started here).
    Query(Query<P>),
    /// A one-hop message for a service.
    Receive(ServiceId, Incoming<P>),
    /// An answer for a service, passed back along a request's trail.
    Answered(ServiceId, Answered<P>),
    /// The ring neighbours changed.
    Neighbours(NeighbourChange<P>),
    /// A peer is taken for dead.
    PeerFailed(P),
    /// A peer's queue was full.
    Congested(P),
}

struct Slot<P: PeerId> {
    id: ServiceId,
    kinds: &'static [&'static str],
    /// `None` while the service runs (it is lent to its hook).
    svc: Option<Box<dyn Service<P>>>,
}

/// The services of a node, in the order they were registered.
pub(crate) struct Registry<P: PeerId> {
    slots: Vec<Slot<P>>,
    /// Work for the services, in order.
    pub(crate) work: VecDeque<Work<P>>,
}

impl<P: PeerId> Default for Registry<P> {
    fn default() -> Self {
        Registry {
            slots: Vec::new(),
            work: VecDeque::new(),
        }
    }
}

impl<P: PeerId> std::fmt::Debug for Registry<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| s.id))
            .finish()
    }
}

impl<P: PeerId> Registry<P> {
    /// Adds `svc`; false if a service with its id is there already.
    pub(crate) fn add(&mut self, svc: Box<dyn Service<P>>) -> bool {
        let id = svc.id();
        if self.index(id).is_some() {
            return false;
        }
        self.slots.push(Slot {
            id,
            kinds: svc.kinds(),
            svc: Some(svc),
        });
        true
    }

    /// Where the service `id` is.
    pub(crate) fn index(&self, id: ServiceId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Where the service of type `S` is.
    pub(crate) fn index_of<S: Service<P>>(&self) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.svc
                .as_deref()
                .is_some_and(|svc| (svc as &dyn Any).is::<S>())
        })
    }

    /// Number of services.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The id of the service at `i`.
    /// Whether service `i` looks at its messages passing through
    /// ([`Service::inspects_forwarded`]).
    pub(crate) fn inspects_forwarded(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .and_then(|s| s.svc.as_ref())
            .is_some_and(|s| s.inspects_forwarded())
    }

    pub(crate) fn id_at(&self, i: usize) -> ServiceId {
        self.slots[i].id
    }

    /// The name service `id` gives to a message whose first byte is `tag`.
    pub(crate) fn kind(&self, id: ServiceId, tag: Option<u8>) -> Option<&'static str> {
        let kinds = self.slots[self.index(id)?].kinds;
        kinds.get(tag? as usize).copied()
    }

    /// Takes the service at `i` out to run one of its hooks.
    pub(crate) fn take(&mut self, i: usize) -> Option<Box<dyn Service<P>>> {
        self.slots.get_mut(i)?.svc.take()
    }

    /// Puts back a service taken with [`Registry::take`].
    pub(crate) fn put(&mut self, i: usize, svc: Box<dyn Service<P>>) {
        if let Some(s) = self.slots.get_mut(i) {
            s.svc = Some(svc);
        }
    }

    /// The service of type `S`.
    pub(crate) fn get<S: Service<P>>(&self) -> Option<&S> {
        let i = self.index_of::<S>()?;
        let svc: &dyn Any = self.slots[i].svc.as_deref()?;
        svc.downcast_ref::<S>()
    }

    /// The service of type `S`, mutably.
    pub(crate) fn get_mut<S: Service<P>>(&mut self) -> Option<&mut S> {
        let i = self.index_of::<S>()?;
        let svc: &mut dyn Any = self.slots[i].svc.as_deref_mut()?;
        svc.downcast_mut::<S>()
    }

    /// The earliest deadline of any service.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.slots
            .iter()
            .filter_map(|s| s.svc.as_ref()?.poll_timeout())
            .min()
    }

    /// The deadline of the service at `i`.
    pub(crate) fn deadline_at(&self, i: usize) -> Option<Time> {
        self.slots.get(i)?.svc.as_ref()?.poll_timeout()
    }

    /// Name, id and counters of every service, in the order they were registered.
    pub(crate) fn summaries(&self) -> Vec<ServiceSummary> {
        self.slots
            .iter()
            .filter_map(|s| {
                let svc = s.svc.as_ref()?;
                Some(ServiceSummary {
                    name: svc.name(),
                    id: s.id,
                    counters: svc.counters(),
                })
            })
            .collect()
    }

    /// Whether some service needs the link to `peer`.
    pub(crate) fn uses_link(&self, peer: &P) -> bool {
        self.slots
            .iter()
            .any(|s| s.svc.as_ref().is_some_and(|svc| svc.uses_link(peer)))
    }
}
