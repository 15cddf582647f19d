//! Two nodes on loopback: handshake, messages on every class both ways, raw streams, queues,
//! disconnection, shutdown and crash detection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use p2ps_transport::{
    CloseCode, ConnectError, DisconnectReason, Event, Events, NodeId, SendError, StreamClass,
    Transport, TransportConfig, TrySendError,
};

/// Waits for the next `Connected` event: (peer, remote address, outbound, relay).
async fn connected(
    events: &mut Events<Msg>,
    what: &str,
) -> (NodeId, SocketAddr, bool, Option<NodeId>) {
    match wait_event(events, what, |e| matches!(e, Event::Connected { .. })).await {
        Event::Connected {
            peer,
            remote_addr,
            outbound,
            relay,
        } => (peer, remote_addr, outbound, relay),
        other => panic!("{what}: got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_and_messages_both_ways_on_every_class() {
    let (a, mut ea) = node();
    let (b, mut eb) = node();
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();

    // Both sides learn the other's authenticated id.
    assert_eq!(
        connected(&mut ea, "Connected on a").await,
        (b.node_id(), addr(&b), true, None)
    );
    assert_eq!(
        connected(&mut eb, "Connected on b").await,
        (a.node_id(), addr(&a), false, None)
    );
    assert_eq!(a.connected_peers(), vec![b.node_id()]);
    assert_eq!(b.connected_peers(), vec![a.node_id()]);

    for class in StreamClass::ALL {
        for i in 0..20u64 {
            a.send(b.node_id(), class, &Msg::Num(i)).await.unwrap();
            b.send(a.node_id(), class, &Msg::Text(format!("{class:?} {i}")))
                .await
                .unwrap();
        }
    }
    // Per class, order is preserved.
    let mut got_b = [0u64; 3];
    for _ in 0..60 {
        let (class, msg) = wait_message(&mut eb, a.node_id()).await;
        assert_eq!(msg, Msg::Num(got_b[class.index()]));
        got_b[class.index()] += 1;
    }
    let mut got_a = [0u64; 3];
    for _ in 0..60 {
        let (class, msg) = wait_message(&mut ea, b.node_id()).await;
        assert_eq!(
            msg,
            Msg::Text(format!("{class:?} {}", got_a[class.index()]))
        );
        got_a[class.index()] += 1;
    }
    assert_eq!(got_a, [20; 3]);
    assert_eq!(got_b, [20; 3]);

    let sa = a.stats();
    let sb = b.stats();
    for class in StreamClass::ALL {
        assert_eq!(sa.class(class).messages_out, 20);
        assert_eq!(sa.class(class).messages_in, 20);
        assert_eq!(sb.class(class).messages_in, 20);
        assert_eq!(sa.class(class).bytes_out, sb.class(class).bytes_in);
    }
    assert_eq!(sa.connections_dialed, 1);
    assert_eq!(sb.connections_accepted, 1);
    assert_eq!(sa.peers.len(), 1);
    assert!(sa.peers[0].rtt < Duration::from_secs(1));
    assert_eq!(sa.frame_errors + sb.frame_errors, 0);
}

#[tokio::test]
async fn raw_bidirectional_stream_carries_bulk_data() {
    let (a, _ea) = node();
    let (b, mut eb) = node();
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    let (mut send, mut recv) = a.open_bi(b.node_id()).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(1 << 20).await.unwrap()
    });
    let (peer, mut bsend, mut brecv) = match wait_event(&mut eb, "IncomingStream", |e| {
        matches!(e, Event::IncomingStream { .. })
    })
    .await
    {
        Event::IncomingStream { peer, send, recv } => (peer, send, recv),
        _ => unreachable!(),
    };
    assert_eq!(peer, a.node_id());
    let got = bounded("bulk read", brecv.read_to_end(10 << 20))
        .await
        .unwrap();
    assert_eq!(got, expected);
    bsend.write_all(b"thanks").await.unwrap();
    bsend.finish().unwrap();
    assert_eq!(bounded("reply", writer).await.unwrap(), b"thanks");
}

#[tokio::test]
async fn send_dials_on_demand_from_the_address_book() {
    let (a, mut ea) = node();
    let (b, mut eb) = node();
    // No address yet: a typed error, nothing queued.
    match a.send(b.node_id(), StreamClass::Tree, &Msg::Num(1)).await {
        Err(SendError::NoAddress { peer }) => assert_eq!(peer, b.node_id()),
        other => panic!("expected NoAddress, got {other:?}"),
    }
    a.add_addresses(b.node_id(), [addr(&b)]);
    // Queued while the dial runs, delivered once connected, in order.
    for i in 0..5 {
        a.try_send(b.node_id(), StreamClass::Tree, &Msg::Num(i))
            .unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            wait_message(&mut eb, a.node_id()).await,
            (StreamClass::Tree, Msg::Num(i))
        );
    }
    wait_event(&mut ea, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    // Sending to ourselves is refused.
    assert!(matches!(
        a.send(a.node_id(), StreamClass::User, &Msg::Num(0)).await,
        Err(SendError::SelfSend)
    ));
}

#[tokio::test]
async fn try_send_reports_queue_full_and_send_waits_for_room() {
    // Tiny queues; the receiver does not read its events, so flow control backs up.
    let (a, _ea) = node_with(|c| c.peer_queue_bytes = 64 * 1024);
    let (b, eb) = node_with(|c| c.event_capacity = 1);
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    let blob = Msg::Blob(vec![7; 16 * 1024]);
    let mut full = false;
    for _ in 0..10_000 {
        match a.try_send(b.node_id(), StreamClass::User, &blob) {
            Ok(()) => {}
            Err(TrySendError::QueueFull { peer, class }) => {
                assert_eq!(peer, b.node_id());
                assert_eq!(class, StreamClass::User);
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(full, "queue never reported full");
    assert!(a.stats().queue_full >= 1);
    // Other classes have their own budget.
    a.try_send(b.node_id(), StreamClass::Routing, &Msg::Num(1))
        .unwrap();
    // `send` waits rather than failing.
    let pending = tokio::time::timeout(
        Duration::from_millis(300),
        a.send(b.node_id(), StreamClass::User, &blob),
    )
    .await;
    assert!(pending.is_err(), "send should wait while the queue is full");
    drop(eb);
}

#[tokio::test]
async fn disconnect_is_reported_on_both_sides() {
    let (a, mut ea) = node();
    let (b, mut eb) = node();
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    wait_event(&mut eb, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    assert!(a.disconnect(b.node_id(), "bye").await);
    match wait_event(&mut ea, "local Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { peer, reason } => {
            assert_eq!(peer, b.node_id());
            assert_eq!(
                reason,
                DisconnectReason::Local {
                    code: CloseCode::Normal,
                    reason: "bye".into()
                }
            );
        }
        _ => unreachable!(),
    }
    match wait_event(&mut eb, "remote Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { peer, reason } => {
            assert_eq!(peer, a.node_id());
            assert_eq!(
                reason,
                DisconnectReason::Remote {
                    code: CloseCode::Normal,
                    reason: "bye".into()
                }
            );
        }
        _ => unreachable!(),
    }
    assert!(a.connected_peers().is_empty());
    eventually("b forgets a", || b.connected_peers().is_empty()).await;
    assert!(!a.disconnect(b.node_id(), "again").await);
    // And they can reconnect.
    assert_serves(&a, &mut ea, &b, &mut eb).await;
}

#[tokio::test]
async fn shutdown_delivers_queued_messages_and_closes_with_code() {
    let (a, mut ea) = node();
    let (b, mut eb) = node();
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    for i in 0..200 {
        a.send(b.node_id(), StreamClass::User, &Msg::Num(i))
            .await
            .unwrap();
    }
    let started = Instant::now();
    bounded("shutdown", a.shutdown("maintenance")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for i in 0..200 {
        assert_eq!(wait_message(&mut eb, a.node_id()).await.1, Msg::Num(i));
    }
    match wait_event(&mut eb, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { reason, .. } => assert_eq!(
            reason,
            DisconnectReason::Remote {
                code: CloseCode::Shutdown,
                reason: "maintenance".into()
            }
        ),
        _ => unreachable!(),
    }
    assert!(matches!(
        a.connect(b.node_id(), addr(&b)).await,
        Err(ConnectError::ShuttingDown)
    ));
    assert!(matches!(
        a.send(b.node_id(), StreamClass::User, &Msg::Num(0)).await,
        Err(SendError::ShuttingDown)
    ));
    // a's event stream ends (after its own Disconnected) although the handle is still alive.
    let rest = bounded("a's events to end", async {
        let mut rest = Vec::new();
        while let Some(e) = ea.recv().await {
            rest.push(e);
        }
        rest
    })
    .await;
    assert!(rest.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: DisconnectReason::Local {
                code: CloseCode::Shutdown,
                ..
            },
            ..
        }
    )));
}

#[test]
fn crash_is_detected_within_the_idle_timeout() {
    common::init_tracing();
    let idle = Duration::from_millis(1500);
    let survivor_rt = tokio::runtime::Runtime::new().unwrap();
    let (a, mut ea) = survivor_rt.block_on(async {
        let mut c = test_config();
        c.keep_alive = Duration::from_millis(300);
        c.idle_timeout = idle;
        Transport::<Msg>::bind(c).unwrap()
    });
    // The victim lives in its own runtime; dropping that runtime kills its tasks (and so its
    // endpoint driver) without sending any close: the peer sees a crash.
    let victim_rt = tokio::runtime::Runtime::new().unwrap();
    let victim = victim_rt.block_on(async {
        let mut c = test_config();
        c.keep_alive = Duration::from_millis(300);
        c.idle_timeout = idle;
        let (b, eb) = Transport::<Msg>::bind(c).unwrap();
        b.connect(a.node_id(), a.local_addr().unwrap())
            .await
            .unwrap();
        (b, eb)
    });
    let victim_id = victim.0.node_id();
    survivor_rt.block_on(async {
        wait_event(&mut ea, "Connected", |e| {
            matches!(e, Event::Connected { .. })
        })
        .await;
    });
    let crashed_at = Instant::now();
    std::mem::forget(victim); // no drop guard, no close frame
    victim_rt.shutdown_background();
    survivor_rt.block_on(async {
        match wait_event(&mut ea, "Disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await
        {
            Event::Disconnected { peer, reason } => {
                assert_eq!(peer, victim_id);
                assert_eq!(reason, DisconnectReason::TimedOut);
            }
            _ => unreachable!(),
        }
    });
    let detected = crashed_at.elapsed();
    assert!(
        detected >= idle - Duration::from_millis(400),
        "too early: {detected:?}"
    );
    assert!(
        detected < idle + Duration::from_secs(2),
        "too late: {detected:?}"
    );
}

/// UDP totals count what QUIC put on the wire (more than the frames: headers, handshake,
/// acknowledgements), for live connections and, after a disconnect, closed ones.
#[tokio::test]
async fn udp_totals_cover_frames_and_survive_disconnects() {
    let (a, _ea) = node();
    let (b, mut eb) = node();
    assert_eq!(a.stats().udp, Default::default());
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    for i in 0..20 {
        a.send(b.node_id(), StreamClass::User, &Msg::Blob(vec![i; 1000]))
            .await
            .unwrap();
    }
    for _ in 0..20 {
        wait_message(&mut eb, a.node_id()).await;
    }
    let live = a.stats();
    let frames = live.class(StreamClass::User).bytes_out;
    assert!(frames >= 20_000, "{frames}");
    assert!(live.udp.bytes_out > frames, "{:?} vs {frames}", live.udp);
    assert!(
        live.udp.datagrams_out >= 20 && live.udp.datagrams_in > 0,
        "{:?}",
        live.udp
    );
    assert!(a.disconnect(b.node_id(), "done").await);
    eventually("the closed connection's totals are kept", || {
        a.connected_peers().is_empty() && a.stats().udp.bytes_out >= live.udp.bytes_out
    })
    .await;
}

/// Keep-alives come from the dialing side only; its pings and the other side's
/// acknowledgements keep an idle connection up at both ends well past the idle timeout, and it
/// stays the dialer's.
#[tokio::test]
async fn an_idle_connection_outlives_the_idle_timeout_on_the_dialers_keep_alives() {
    let idle = Duration::from_millis(1500);
    let short = |c: &mut TransportConfig| {
        c.keep_alive = Duration::from_millis(300);
        c.idle_timeout = idle;
    };
    let (a, mut ea) = common::node_with(short);
    let (b, mut eb) = common::node_with(short);
    a.connect(b.node_id(), addr(&b)).await.unwrap();
    wait_event(&mut eb, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let before = (a.stats().connections_dialed, b.stats().connections_dialed);
    tokio::time::sleep(idle * 3).await;
    assert_eq!(a.connected_peers(), vec![b.node_id()]);
    assert_eq!(b.connected_peers(), vec![a.node_id()]);
    assert_eq!(
        (a.dialed(b.node_id()), b.dialed(a.node_id())),
        (Some(true), Some(false))
    );
    assert_eq!(
        (a.stats().connections_dialed, b.stats().connections_dialed),
        before,
        "the connection was replaced"
    );
    for events in [&mut ea, &mut eb] {
        while let Some(e) = events.try_recv() {
            assert!(!matches!(e, Event::Disconnected { .. }), "{e:?}");
        }
    }
}
