//! Application commands on a single node: errors, and answers a lone node gives itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::messaging::{Addressed, Messaging, MessagingExt};
use p2ps_overlay::service::Emits;
use p2ps_overlay::{
    CommandError, Config, Contact, Event, Node, Output, PeerId, RingId, StandIn, StandInProof,
    State, Time,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct T(u8);

impl PeerId for T {
    type Proof = StandInProof;

    fn verify(&self, msg: &[u8], proof: &StandInProof) -> bool {
        StandInProof::of(self, msg) == *proof
    }

    fn ring_id(&self) -> RingId {
        RingId((self.0 as u128) << 120)
    }
}

fn drain(n: &mut Node<T>) -> Vec<Output<T>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

#[test]
fn commands_before_joining_are_refused() {
    let mut n = Node::new(StandIn(T(1)), Config::default());
    n.register(Messaging::<T>::default()).unwrap();
    let now = Time::ZERO;
    assert_eq!(n.lookup(now, RingId(5)), Err(CommandError::NotJoined));
    assert_eq!(n.route(now, RingId(5), &[1]), Err(CommandError::NotJoined));
    assert_eq!(n.send(now, T(2), &[1]), Err(CommandError::NotJoined));
    assert_eq!(
        n.join(now, Contact::bare(T(1))),
        Err(CommandError::SelfBootstrap)
    );
    n.create(now).unwrap();
    assert_eq!(n.create(now), Err(CommandError::AlreadyStarted));
    assert_eq!(
        n.join(now, Contact::bare(T(2))),
        Err(CommandError::AlreadyStarted)
    );
}

#[test]
fn lone_node_answers_itself() {
    let mut n = Node::new(StandIn(T(1)), Config::default());
    n.register(Messaging::<T>::default()).unwrap();
    let now = Time::ZERO;
    n.create(now).unwrap();
    drain(&mut n);
    let req = n.lookup(now, RingId(12345)).unwrap();
    assert_eq!(
        drain(&mut n),
        vec![Output::Event(Event::LookupDone {
            req,
            key: RingId(12345),
            result: Ok((T(1), 0))
        })]
    );
    n.route(now, RingId(7), b"hi").unwrap();
    assert_eq!(drain(&mut n), vec![]);
    let inbox = n.service_mut::<Messaging<T>>().unwrap();
    let d = inbox.poll_event().unwrap();
    assert_eq!((d.origin, d.hops, d.addressed), (T(1), 0, Addressed::Key));
    assert_eq!(&d.payload[..], b"hi");
    assert!(inbox.poll_event().is_none());
}

#[test]
fn join_gives_up_after_every_attempt() {
    let cfg = Config::default().with_join_attempts(3);
    let timeout = cfg.join_timeout;
    let mut n = Node::new(StandIn(T(1)), cfg);
    let mut now = Time::ZERO;
    n.join(now, Contact::bare(T(9))).unwrap();
    let mut sends = drain(&mut n)
        .iter()
        .filter(|o| matches!(o, Output::Send { .. }))
        .count();
    for _ in 0..3 {
        assert_eq!(n.poll_timeout(), Some(now + timeout));
        now = now + timeout;
        n.handle_timeout(now);
        let out = drain(&mut n);
        sends += out
            .iter()
            .filter(|o| matches!(o, Output::Send { .. }))
            .count();
        if out.contains(&Output::Event(Event::JoinFailed)) {
            assert_eq!(sends, 3, "one join request per attempt");
            assert_eq!(n.poll_timeout(), None);
            return;
        }
    }
    panic!("never gave up");
}

#[test]
fn each_join_request_is_reported_with_its_attempt() {
    let cfg = Config::default().with_join_attempts(2);
    let timeout = cfg.join_timeout;
    let mut n = Node::new(StandIn(T(1)), cfg);
    n.join(Time::ZERO, Contact::bare(T(9))).unwrap();
    let first = drain(&mut n);
    assert!(first.contains(&Output::Event(Event::JoinRequested { attempt: 1, of: 2 })));
    n.handle_timeout(Time::ZERO + timeout);
    let second = drain(&mut n);
    assert!(second.contains(&Output::Event(Event::JoinRequested { attempt: 2, of: 2 })));
}

#[test]
fn an_abandoned_join_sends_nothing_more_and_may_start_again() {
    let cfg = Config::default();
    let timeout = cfg.join_timeout;
    let mut n = Node::new(StandIn(T(1)), cfg);
    let now = Time::ZERO;
    n.join(now, Contact::bare(T(9))).unwrap();
    drain(&mut n);
    n.abandon_join(now);
    assert_eq!(drain(&mut n), vec![Output::Event(Event::JoinFailed)]);
    assert_eq!(n.state(), State::Idle);
    assert_eq!(n.poll_timeout(), None);
    n.handle_timeout(now + timeout);
    assert_eq!(drain(&mut n), vec![]);
    // Twice, or when not joining: nothing.
    n.abandon_join(now);
    assert_eq!(drain(&mut n), vec![]);
    n.join(now, Contact::bare(T(9))).unwrap();
    assert_eq!(n.state(), State::Joining);
}

#[test]
fn too_many_pending_lookups_are_refused() {
    let cfg = Config::default().with_max_pending_lookups(2);
    let ring = p2ps_overlay::sim::ideal::Ring::new(vec![
        p2ps_overlay::Peer::new(T(1)),
        p2ps_overlay::Peer::new(T(2)),
    ]);
    let mut n = Node::from_table(
        StandIn(T(1)),
        cfg.clone(),
        ring.ideal_table(0, cfg.strategy, 8),
        Time::ZERO,
    );
    // Keys held by the other node: the lookups wait for its answer.
    let key = T(2).ring_id();
    n.lookup(Time::ZERO, key).unwrap();
    n.lookup(Time::ZERO, key).unwrap();
    assert_eq!(n.lookup(Time::ZERO, key), Err(CommandError::TooManyPending));
    n.leave(Time::ZERO);
    let failed = drain(&mut n)
        .into_iter()
        .filter(|o| matches!(o, Output::Event(Event::LookupDone { result: Err(_), .. })))
        .count();
    assert_eq!(failed, 2);
}

/// Runs `n`'s timers up to `until`.
fn run_until(n: &mut Node<T>, until: Time) {
    while let Some(t) = n.poll_timeout() {
        if t > until {
            break;
        }
        n.handle_timeout(t);
        drain(n);
    }
}

#[test]
fn a_strangers_addresses_outlive_the_next_housekeeping() {
    // A node learns a stranger's addresses (the origin of a request it must answer): they must
    // still be there a full housekeeping period (10 s) later, and go after the next one.
    let mut n = Node::new(StandIn(T(1)), Config::default());
    n.register(Messaging::<T>::default()).unwrap();
    n.create(Time::ZERO).unwrap();
    drain(&mut n);
    let learnt = Time::from_secs(3);
    run_until(&mut n, learnt);
    let addr: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
    n.add_addresses(T(9), &[addr]);
    run_until(&mut n, Time::from_secs(13));
    assert_eq!(n.addresses(&T(9)), &[addr]);
    run_until(&mut n, Time::from_secs(23));
    assert!(n.addresses(&T(9)).is_empty());
}
