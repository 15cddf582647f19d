//! Coordinated hole punching between three loopback nodes: A and B are connected only to C,
//! and A asks C to introduce it to B.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2ps_transport::{
    Event, PunchError, PunchOptions, PunchRefusal, PunchStage, Reachability, StreamClass,
};

/// A and B each connected to C only, each knowing its observed address.
async fn triangle() -> (Node, Node, Node) {
    let (a, ea) = node();
    let (b, eb) = node();
    let (c, ec) = node();
    for t in [&a, &b] {
        bounded("connect to c", t.connect(c.node_id(), addr(&c)))
            .await
            .unwrap();
        eventually("observed address", || {
            t.reachability().class == Reachability::Public
        })
        .await;
    }
    assert!(!a.connected_peers().contains(&b.node_id()));
    ((a, ea), (b, eb), (c, ec))
}

fn refused(result: Result<p2ps_transport::PunchOutcome, PunchError>) -> PunchRefusal {
    match result {
        Err(PunchError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn punch_gives_one_direct_connection_and_messages_flow() {
    let ((a, mut ea), (b, mut eb), (c, _ec)) = triangle().await;

    let outcome = bounded("punch", a.punch(b.node_id(), c.node_id()))
        .await
        .unwrap();
    assert_eq!(outcome.peer, b.node_id());
    assert_eq!(outcome.remote_addr, addr(&b));
    assert!(!outcome.already_connected);
    assert!(outcome.rounds >= 1);
    assert!(a.connected_peers().contains(&b.node_id()));
    eventually("b sees a", || b.connected_peers().contains(&a.node_id())).await;

    // Messages flow both ways on the direct connection.
    a.send(b.node_id(), StreamClass::User, &Msg::Text("hi b".into()))
        .await
        .unwrap();
    assert_eq!(
        wait_message(&mut eb, a.node_id()).await.1,
        Msg::Text("hi b".into())
    );
    b.send(a.node_id(), StreamClass::User, &Msg::Text("hi a".into()))
        .await
        .unwrap();
    assert_eq!(
        wait_message(&mut ea, b.node_id()).await.1,
        Msg::Text("hi a".into())
    );

    // Both sides dialed; the duplicate rule leaves one connection per pair (plus the one to C).
    eventually("one connection per pair on a", || {
        a.stats().open_connections == 2
    })
    .await;
    eventually("one connection per pair on b", || {
        b.stats().open_connections == 2
    })
    .await;
    // Still connected after the duplicate was closed, and still serving.
    for i in 0..3u64 {
        a.send(b.node_id(), StreamClass::User, &Msg::Num(i))
            .await
            .unwrap();
        assert_eq!(wait_message(&mut eb, a.node_id()).await.1, Msg::Num(i));
    }

    let (sa, sb, sc) = (a.stats(), b.stats(), c.stats());
    assert_eq!(
        (sa.punch_attempts, sa.punch_successes, sa.punch_failures),
        (1, 1, 0)
    );
    assert_eq!(sb.punch_offers, 1);
    assert_eq!(sc.punch_introductions, 1);
    assert_eq!(sc.punch_requests_refused, 0);

    // A second punch finds the direct connection.
    let again = a.punch(b.node_id(), c.node_id()).await.unwrap();
    assert!(again.already_connected);
    assert_eq!(a.stats().punch_attempts, 1);
}

#[tokio::test]
async fn introducer_not_connected_to_target() {
    let (a, _ea) = node();
    let (b, _eb) = node();
    let (c, _ec) = node();
    bounded("connect", a.connect(c.node_id(), addr(&c)))
        .await
        .unwrap();
    let result = bounded("punch", a.punch(b.node_id(), c.node_id())).await;
    assert!(
        matches!(result, Err(PunchError::TargetNotConnectedToIntroducer { target, via })
            if target == b.node_id() && via == c.node_id()),
        "{result:?}"
    );
    assert_eq!(c.stats().punch_requests_refused, 1);
    assert_eq!((a.stats().punch_attempts, a.stats().punch_failures), (1, 1));
}

#[tokio::test]
async fn requester_errors_without_sending() {
    let (a, _ea) = node();
    let (b, _eb) = node();
    let (c, _ec) = node();
    let result = a.punch(b.node_id(), c.node_id()).await;
    assert!(
        matches!(result, Err(PunchError::IntroducerNotConnected { via }) if via == c.node_id()),
        "{result:?}"
    );
    assert!(matches!(
        a.punch(b.node_id(), b.node_id()).await,
        Err(PunchError::InvalidPeers)
    ));
    assert!(matches!(
        a.punch(a.node_id(), c.node_id()).await,
        Err(PunchError::InvalidPeers)
    ));
}

#[tokio::test]
async fn target_declines_and_introducer_rate_limits() {
    let ((a, _ea), (b, _eb), (c, _ec)) = triangle().await;
    b.set_accept_punches(false);
    let limit = p2ps_transport::holepunch::MAX_REQUESTS_PER_WINDOW;
    for _ in 0..limit {
        let r = bounded("punch", a.punch(b.node_id(), c.node_id())).await;
        assert_eq!(refused(r), PunchRefusal::Declined);
    }
    // The introducer forwards no more of a's requests in this window.
    let r = bounded("punch", a.punch(b.node_id(), c.node_id())).await;
    assert_eq!(refused(r), PunchRefusal::RateLimited);
    assert_eq!(b.stats().punch_offers, limit as u64);
    assert_eq!(c.stats().punch_introductions, limit as u64);
    assert_eq!(c.stats().punch_requests_refused, 1);
    // B never dialed a.
    assert!(!a.connected_peers().contains(&b.node_id()));
}

#[tokio::test]
async fn silent_target_times_out_within_the_bound() {
    let (a, _ea) = node();
    let (c, mut ec) = node();
    bounded("connect", a.connect(c.node_id(), addr(&c)))
        .await
        .unwrap();
    let (silent, _endpoint, _conn) = connected_raw_peer(&c).await;
    wait_event(
        &mut ec,
        "silent peer connected",
        |e| matches!(e, Event::Connected { peer, .. } if *peer == silent.node_id()),
    )
    .await;

    let options = PunchOptions::default().with_timeout(Duration::from_millis(1500));
    let start = Instant::now();
    let result = bounded(
        "punch",
        a.punch_with(silent.node_id(), c.node_id(), options),
    )
    .await;
    let took = start.elapsed();
    assert!(
        matches!(
            result,
            Err(PunchError::TimedOut {
                stage: PunchStage::Introduction,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(c.stats().punch_introductions, 1);
    assert_eq!(a.stats().punch_failures, 1);
}

#[tokio::test]
async fn unreachable_candidates_time_out_while_dialing() {
    // The target accepts (answering the offer by hand) but cannot be dialed: it is a bare
    // client endpoint, which refuses every incoming handshake.
    let (a, _ea) = node();
    let (c, mut ec) = node();
    bounded("connect", a.connect(c.node_id(), addr(&c)))
        .await
        .unwrap();
    let (target, _endpoint, conn) = connected_raw_peer(&c).await;
    wait_event(
        &mut ec,
        "target connected",
        |e| matches!(e, Event::Connected { peer, .. } if *peer == target.node_id()),
    )
    .await;
    let answer = tokio::spawn(accept_offers_then_vanish(conn));

    let options = PunchOptions::default().with_timeout(Duration::from_millis(2500));
    let start = Instant::now();
    let result = bounded(
        "punch",
        a.punch_with(target.node_id(), c.node_id(), options),
    )
    .await;
    assert!(
        matches!(
            result,
            Err(PunchError::TimedOut {
                stage: PunchStage::Dialing,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    answer.abort();
}

/// Reads the control stream the introducer opens and answers the first `PunchOffer` with a
/// `PunchAccept` carrying no addresses of its own.
async fn accept_offers_then_vanish(conn: quinn::Connection) {
    loop {
        let Ok(mut recv) = conn.accept_uni().await else {
            return;
        };
        let mut tag = [0u8; 1];
        if recv.read_exact(&mut tag).await.is_err() || tag[0] != 0xC0 {
            continue;
        }
        loop {
            let mut len = [0u8; 4];
            if recv.read_exact(&mut len).await.is_err() {
                break;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            if recv.read_exact(&mut body).await.is_err() {
                break;
            }
            // PunchOffer is variant 2: [2, id varint, from (32 bytes), candidates...].
            if body.first() != Some(&2) {
                continue;
            }
            let id_len = body[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
            let id = &body[1..1 + id_len];
            let from = &body[1 + id_len..1 + id_len + 32];
            // PunchAccept is variant 3: [3, id, requester, candidates = empty vec].
            let mut accept = vec![3u8];
            accept.extend_from_slice(id);
            accept.extend_from_slice(from);
            accept.push(0);
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&[0xC0]).await.unwrap();
            let mut f = (accept.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&accept);
            send.write_all(&f).await.unwrap();
            // Keep the stream (and so the connection) open while the punch runs.
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
    }
}
