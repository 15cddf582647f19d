//! Class streams: a bad frame costs only its stream; garbage does not kill the connection or the
//! node; routing upkeep is not held up by a burst of user data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use p2ps_transport::frame::encode;
use p2ps_transport::{Event, Identity, StreamClass};
use rand::{Rng, SeedableRng};

#[tokio::test]
async fn oversize_frame_closes_only_that_stream() {
    let (a, mut ea) = node();
    let (b, mut eb) = node_with(|c| c.max_frame_size = 1024);
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();

    a.send(b.node_id(), StreamClass::User, &Msg::Num(1))
        .await
        .unwrap();
    assert_eq!(wait_message(&mut eb, a.node_id()).await.1, Msg::Num(1));

    // a allows 1 MiB frames, b only 1 KiB: b refuses this one and stops a's User stream.
    a.send(b.node_id(), StreamClass::User, &Msg::Blob(vec![1; 4000]))
        .await
        .unwrap();
    // The other classes are untouched meanwhile.
    a.send(b.node_id(), StreamClass::Routing, &Msg::Num(2))
        .await
        .unwrap();
    assert_eq!(
        wait_message(&mut eb, a.node_id()).await,
        (StreamClass::Routing, Msg::Num(2))
    );
    eventually("b counts the frame error", || b.stats().frame_errors == 1).await;
    eventually("a sees its stream stopped", || {
        a.stats().streams_stopped_by_peer == 1
    })
    .await;

    // Later messages go on a fresh stream and arrive.
    a.send(b.node_id(), StreamClass::User, &Msg::Num(3))
        .await
        .unwrap();
    assert_eq!(
        wait_message(&mut eb, a.node_id()).await,
        (StreamClass::User, Msg::Num(3))
    );
    // Same connection, both sides still connected, nothing else happened.
    assert_eq!(a.connected_peers(), vec![b.node_id()]);
    assert_eq!(b.connected_peers(), vec![a.node_id()]);
    assert_eq!(a.stats().connections_dialed, 1);
    assert_eq!(b.stats().connections_accepted, 1);
    while let Some(e) = ea.try_recv() {
        assert!(!matches!(e, Event::Disconnected { .. }), "{e:?}");
    }
    // And a's own limit is enforced on sending.
    let (c, _ec) = node_with(|c| c.max_frame_size = 100);
    assert!(matches!(
        c.send(a.node_id(), StreamClass::User, &Msg::Blob(vec![0; 200]))
            .await,
        Err(p2ps_transport::SendError::Frame(
            p2ps_transport::FrameError::TooLarge { .. }
        ))
    ));
}

#[tokio::test]
async fn garbage_on_class_streams_does_not_kill_connection_or_node() {
    let (server, mut es) = node();
    let rogue = Identity::generate().unwrap();
    let (endpoint, config) = genuine_raw_client(&rogue);
    let conn = bounded(
        "raw handshake",
        endpoint
            .connect_with(config, addr(&server), "p2ps")
            .unwrap(),
    )
    .await
    .unwrap();
    wait_event(&mut es, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut garbage_streams = 0;
    // Random bytes after a valid class tag.
    for class in StreamClass::ALL {
        let mut s = conn.open_uni().await.unwrap();
        let mut junk = vec![0u8; 4096];
        rng.fill(&mut junk[..]);
        junk[0] = 0xff; // a header announcing far more than the maximum frame size
        let _ = s.write_all(&[class.tag()]).await;
        let _ = s.write_all(&junk).await;
        let _ = s.finish();
        garbage_streams += 1;
    }
    // A well-formed length with an undecodable body.
    let mut s = conn.open_uni().await.unwrap();
    let _ = s
        .write_all(&[
            StreamClass::User.tag(),
            0,
            0,
            0,
            6,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ])
        .await;
    let _ = s.finish();
    garbage_streams += 1;
    // An unknown class tag.
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(&[0x7f, 1, 2, 3]).await;
    let _ = s.finish();
    garbage_streams += 1;
    // A stream ending in the middle of a frame.
    let mut s = conn.open_uni().await.unwrap();
    let _ = s
        .write_all(&[StreamClass::Tree.tag(), 0, 0, 0, 100, 1, 2])
        .await;
    let _ = s.finish();
    garbage_streams += 1;

    eventually("every bad stream counted", || {
        server.stats().frame_errors == garbage_streams
    })
    .await;

    // The same connection still delivers a good frame on a new stream.
    let good = encode(&Msg::Text("still here".into()), 1 << 20).unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[StreamClass::Routing.tag()]).await.unwrap();
    s.write_all(good.as_bytes()).await.unwrap();
    s.finish().unwrap();
    assert_eq!(
        wait_message(&mut es, rogue.node_id()).await,
        (StreamClass::Routing, Msg::Text("still here".into()))
    );
    assert!(conn.close_reason().is_none(), "connection was closed");
    assert_eq!(server.connected_peers(), vec![rogue.node_id()]);

    // And the node serves others.
    let (good_peer, mut eg) = node();
    assert_serves(&good_peer, &mut eg, &server, &mut es).await;
    conn.close(0u32.into(), b"done");
    endpoint.close(0u32.into(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_is_not_held_up_by_a_user_burst() {
    let (a, _ea) = node();
    let (b, mut eb) = node();
    bounded("connect", a.connect(b.node_id(), addr(&b)))
        .await
        .unwrap();
    const BURST: usize = 400;
    let blob = Msg::Blob(vec![9; 32 * 1024]);
    let sender = a.clone();
    let to = b.node_id();
    let burst = tokio::spawn(async move {
        for _ in 0..BURST {
            sender.send(to, StreamClass::User, &blob).await.unwrap();
        }
    });
    // Once the burst is flowing, send one routing message.
    let (class, _) = wait_message(&mut eb, a.node_id()).await;
    assert_eq!(class, StreamClass::User);
    a.send(b.node_id(), StreamClass::Routing, &Msg::Num(99))
        .await
        .unwrap();
    let mut user_seen = 1;
    loop {
        match wait_message(&mut eb, a.node_id()).await {
            (StreamClass::User, _) => user_seen += 1,
            (StreamClass::Routing, msg) => {
                assert_eq!(msg, Msg::Num(99));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        user_seen < BURST / 2,
        "routing message arrived only after {user_seen} of {BURST} user messages"
    );
    bounded("burst", burst).await.unwrap();
    for _ in user_seen..BURST {
        assert_eq!(
            wait_message(&mut eb, a.node_id()).await.0,
            StreamClass::User
        );
    }
}
