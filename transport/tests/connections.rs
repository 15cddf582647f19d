//! The connection manager: simultaneous dials end as one connection, many peers at once,
//! connection limits, failed dials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use p2ps_transport::{ConnectError, Event, Identity, StreamClass};

/// Receives `n` messages, keeping every other event in `log`.
async fn messages(
    events: &mut p2ps_transport::Events<Msg>,
    n: usize,
    log: &mut Vec<Event<Msg>>,
) -> Vec<Msg> {
    let mut out = Vec::new();
    while out.len() < n {
        match bounded("message", events.recv()).await {
            Some(Event::Message { msg, .. }) => out.push(msg),
            Some(other) => log.push(other),
            None => panic!("event stream ended"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dial_ends_with_one_connection_on_both_sides() {
    // Under load one dial may complete before the other starts (then it is not a race); run
    // rounds until five real races (both sides dialed) were observed.
    let mut races = 0;
    for round in 0..40 {
        if races == 5 {
            break;
        }
        let (a, mut ea) = node();
        let (b, mut eb) = node();
        let (ra, rb) = bounded("simultaneous connect", async {
            tokio::join!(
                a.connect(b.node_id(), addr(&b)),
                b.connect(a.node_id(), addr(&a))
            )
        })
        .await;
        ra.unwrap();
        rb.unwrap();
        // Messages sent right away, in the middle of the race, are not lost.
        for i in 0..50 {
            a.send(b.node_id(), StreamClass::User, &Msg::Num(i))
                .await
                .unwrap();
            b.send(a.node_id(), StreamClass::Routing, &Msg::Num(i))
                .await
                .unwrap();
        }
        let mut log_a = Vec::new();
        let mut log_b = Vec::new();
        let mut from_a = messages(&mut eb, 50, &mut log_b).await;
        let mut from_b = messages(&mut ea, 50, &mut log_a).await;
        from_a.sort_by_key(|m| match m {
            Msg::Num(n) => *n,
            _ => u64::MAX,
        });
        from_b.sort_by_key(|m| match m {
            Msg::Num(n) => *n,
            _ => u64::MAX,
        });
        assert_eq!(
            from_a,
            (0..50).map(Msg::Num).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(
            from_b,
            (0..50).map(Msg::Num).collect::<Vec<_>>(),
            "round {round}"
        );

        // Exactly one QUIC connection left on each side, the same one, initiated by the
        // smaller node id.
        eventually("one connection each", || {
            a.stats().open_connections == 1 && b.stats().open_connections == 1
        })
        .await;
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.peers.len(), 1);
        assert_eq!(sb.peers.len(), 1);
        // Both sides agree on which connection is kept.
        assert_ne!(sa.peers[0].outbound, sb.peers[0].outbound, "round {round}");
        if sa.connections_dialed == 1 && sb.connections_dialed == 1 {
            races += 1;
            let a_smaller = a.node_id() < b.node_id();
            assert_eq!(sa.peers[0].outbound, a_smaller, "round {round}");
            assert!(
                sa.duplicates_closed + sb.duplicates_closed >= 1,
                "round {round}"
            );
        }
        assert_eq!(sa.peers[0].remote_addr, addr(&b));
        assert_eq!(sb.peers[0].remote_addr, addr(&a));
        // The application saw one Connected and no Disconnected on each side.
        while let Some(e) = ea.try_recv() {
            log_a.push(e);
        }
        while let Some(e) = eb.try_recv() {
            log_b.push(e);
        }
        for log in [&log_a, &log_b] {
            assert!(
                !log.iter().any(|e| matches!(e, Event::Disconnected { .. })),
                "round {round}: {log:?}"
            );
            assert_eq!(
                log.iter()
                    .filter(|e| matches!(e, Event::Connected { .. }))
                    .count(),
                1,
                "round {round}: {log:?}"
            );
        }
        // And the kept connection works.
        assert_serves(&a, &mut ea, &b, &mut eb).await;
        a.shutdown("done").await;
        b.shutdown("done").await;
    }
    assert_eq!(races, 5, "too few simultaneous dials observed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_all_exchange_messages() {
    const N: usize = 50;
    let (hub, mut eh) = node();
    let hub_id = hub.node_id();
    let hub_addr = addr(&hub);
    let mut tasks = Vec::new();
    for i in 0..N {
        tasks.push(tokio::spawn(async move {
            let (t, mut e) = node();
            t.connect(hub_id, hub_addr).await.unwrap();
            t.send(hub_id, StreamClass::User, &Msg::Num(i as u64))
                .await
                .unwrap();
            let (class, msg) = wait_message(&mut e, hub_id).await;
            assert_eq!(class, StreamClass::Tree);
            assert_eq!(msg, Msg::Num(1000 + i as u64));
            // keep the node alive until the hub has checked everything
            (t, e)
        }));
    }
    let mut seen = [false; N];
    for _ in 0..N {
        let (peer, msg) =
            match wait_event(&mut eh, "message", |e| matches!(e, Event::Message { .. })).await {
                Event::Message { peer, msg, .. } => (peer, msg),
                _ => unreachable!(),
            };
        let Msg::Num(i) = msg else {
            panic!("unexpected {msg:?}")
        };
        assert!(!seen[i as usize]);
        seen[i as usize] = true;
        hub.send(peer, StreamClass::Tree, &Msg::Num(1000 + i))
            .await
            .unwrap();
    }
    let mut nodes = Vec::new();
    for t in tasks {
        nodes.push(bounded("peer task", t).await.unwrap());
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(hub.connected_peers().len(), N);
    assert_eq!(hub.stats().connections_accepted, N as u64);
    assert_eq!(hub.stats().class(StreamClass::User).messages_in, N as u64);
}

#[tokio::test]
async fn connection_limit_refuses_with_a_clear_error() {
    let (hub, mut eh) = node_with(|c| {
        c.admission.max_connections = 2;
        c.admission.reserved_connections = 0;
    });
    let (p1, _e1) = node();
    let (p2, _e2) = node();
    let (p3, mut e3) = node();
    p1.connect(hub.node_id(), addr(&hub)).await.unwrap();
    p2.connect(hub.node_id(), addr(&hub)).await.unwrap();
    eventually("hub has two peers", || hub.connected_peers().len() == 2).await;
    match bounded("third connect", p3.connect(hub.node_id(), addr(&hub))).await {
        Err(ConnectError::Refused { addr: at }) => assert_eq!(at, addr(&hub)),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(hub.stats().connections_refused, 1);
    // The hub itself cannot dial beyond its limit either.
    match hub.connect(p3.node_id(), addr(&p3)).await {
        Err(ConnectError::TooManyConnections { limit: 2 }) => {}
        other => panic!("expected TooManyConnections, got {other:?}"),
    }
    // Room again after a disconnect.
    assert!(hub.disconnect(p1.node_id(), "make room").await);
    eventually("endpoint drained", || hub.stats().open_connections < 2).await;
    assert_serves(&p3, &mut e3, &hub, &mut eh).await;
}

#[tokio::test]
async fn failed_dial_is_typed_and_reported_and_drops_queued_messages() {
    let (a, mut ea) = node_with(|c| c.connect_timeout = Duration::from_millis(800));
    // A UDP port with nobody speaking QUIC behind it.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nobody = Identity::generate().unwrap().node_id();
    a.add_addresses(nobody, [silent.local_addr().unwrap()]);
    a.try_send(nobody, StreamClass::User, &Msg::Num(1)).unwrap();
    match wait_event(&mut ea, "DialFailed", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await
    {
        Event::DialFailed { peer, error } => {
            assert_eq!(peer, nobody);
            assert!(matches!(error, ConnectError::TimedOut { .. }), "{error:?}");
        }
        _ => unreachable!(),
    }
    eventually("queued frame dropped", || a.stats().frames_dropped == 1).await;
    assert!(a.connected_peers().is_empty());
    assert!(matches!(
        a.connect(a.node_id(), addr(&a)).await,
        Err(ConnectError::SelfConnect)
    ));
}

#[tokio::test]
async fn concurrent_connects_share_one_dial_and_survive_cancellation() {
    let (a, _ea) = node();
    let (b, _eb) = node();
    // A dial whose caller gives up immediately is withdrawn, not left hanging.
    let _ = tokio::time::timeout(Duration::from_micros(1), a.connect(b.node_id(), addr(&b))).await;
    let (r1, r2, r3) = bounded("three connects", async {
        tokio::join!(
            a.connect(b.node_id(), addr(&b)),
            a.connect(b.node_id(), addr(&b)),
            a.connect(b.node_id(), addr(&b))
        )
    })
    .await;
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    assert_eq!(a.connected_peers(), vec![b.node_id()]);
    eventually("one connection", || {
        a.stats().open_connections == 1 && b.stats().open_connections == 1
    })
    .await;
    assert_eq!(a.stats().connections_dialed, 1, "{:?}", a.stats());
}

/// A peer's addresses are raced, best first: a dead first address costs the stagger, not a
/// whole connect timeout; when every address fails the error says how many were tried.
#[tokio::test]
async fn a_dead_first_address_does_not_hold_up_the_next() {
    // The connect timeout is far longer than the test's patience (`bounded`).
    let (a, _ea) = node_with(|c| c.connect_timeout = Duration::from_secs(60));
    let (b, mut eb) = node();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.add_addresses(b.node_id(), [silent.local_addr().unwrap(), addr(&b)]);
    a.try_send(b.node_id(), StreamClass::User, &Msg::Num(7))
        .unwrap();
    assert_eq!(wait_message(&mut eb, a.node_id()).await.1, Msg::Num(7));

    let (c, mut ec) = node_with(|c| c.connect_timeout = Duration::from_millis(600));
    let nobody = Identity::generate().unwrap().node_id();
    let silent2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.add_addresses(
        nobody,
        [silent.local_addr().unwrap(), silent2.local_addr().unwrap()],
    );
    c.try_send(nobody, StreamClass::User, &Msg::Num(1)).unwrap();
    match wait_event(&mut ec, "DialFailed", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await
    {
        Event::DialFailed { error, .. } => assert!(
            matches!(error, ConnectError::AllAddressesFailed { attempts: 2, .. }),
            "{error:?}"
        ),
        _ => unreachable!(),
    }
}
