//! `connect_any` on loopback: each stage (direct, punch, relay) answers when the earlier ones
//! cannot, errors of every stage are kept, and a relayed connection is replaced by a direct one
//! by a background punch once the peer accepts punches again. (Real NATs: see the NAT matrix in
//! interop-tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use p2ps_transport::{
    DirectError, Method, NoPath, PathKind, PathReport, PunchError, PunchOptions, PunchRefusal,
    Reachability, RelayError, StreamClass, Transport, TraverseError, TraverseOptions,
};

/// A and B connected to R only (R relays when `serve`), each knowing its observed address.
async fn triangle(serve: bool) -> (Node, Node, Node) {
    let (a, ea) = node();
    let (b, eb) = node();
    let (r, er) = node_with(|c| c.relay.serve = serve);
    for t in [&a, &b] {
        bounded("connect to r", t.connect(r.node_id(), addr(&r)))
            .await
            .unwrap();
        eventually("observed address", || {
            t.reachability().class == Reachability::Public
        })
        .await;
    }
    eventually("r sees a and b", || r.connected_peers().len() == 2).await;
    ((a, ea), (b, eb), (r, er))
}

fn quick() -> TraverseOptions {
    TraverseOptions::default()
        .with_direct_timeout(Duration::from_millis(800))
        .with_punch(PunchOptions::default().with_timeout(Duration::from_secs(2)))
        .with_upgrade_attempts(0)
}

/// `a.connect_any_with(b, [an address nobody answers on], via r, options)`, bounded.
async fn via_dead_address(
    a: &Transport<Msg>,
    b: &Transport<Msg>,
    r: &Transport<Msg>,
    options: TraverseOptions,
) -> Result<PathReport, TraverseError> {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    bounded(
        "connect_any",
        a.connect_any_with(
            b.node_id(),
            &[dead.local_addr().unwrap()],
            Some(r.node_id()),
            options,
        ),
    )
    .await
}

#[tokio::test]
async fn direct_addresses_answer_first() {
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(true).await;
    // A dead address first: the addresses are dialed at once, so it costs nothing.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addrs = [dead.local_addr().unwrap(), addr(&b)];
    let report = bounded(
        "connect_any",
        a.connect_any_with(b.node_id(), &addrs, Some(r.node_id()), quick()),
    )
    .await
    .unwrap();
    assert_eq!(report.method, Method::Direct);
    assert_eq!(report.path, PathKind::Direct(addr(&b)));
    assert_eq!(report.direct_attempts, 2);
    assert!(!report.punch_started);
    assert!(report.direct_error.is_none() && report.punch_error.is_none());
    assert!(!report.already_connected);
    assert!(report.elapsed < Duration::from_millis(800), "{report:?}");
    assert_serves(&a, &mut ea, &b, &mut eb).await;

    // Again: already connected.
    let again = a
        .connect_any(b.node_id(), &[], Some(r.node_id()))
        .await
        .unwrap();
    assert!(again.already_connected);
    assert_eq!(again.method, Method::Direct);
    let stats = a.traverse_stats();
    assert_eq!((stats.calls, stats.direct, stats.failed), (2, 2, 0));
}

#[tokio::test]
async fn punch_answers_when_no_address_works() {
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(true).await;
    let report = via_dead_address(&a, &b, &r, quick()).await.unwrap();
    assert_eq!(report.method, Method::Punched, "{report:?}");
    assert_eq!(report.path, PathKind::Direct(addr(&b)));
    assert!(matches!(
        report.direct_error,
        Some(DirectError::Failed { attempts: 1, .. })
    ));
    assert!(report.punch_rounds >= 1 && report.punch_started);
    assert_eq!(a.traverse_stats().punched, 1);
    assert_serves(&a, &mut ea, &b, &mut eb).await;
}

#[tokio::test]
async fn a_punch_head_start_saves_the_direct_timeout_and_direct_still_wins_when_quick() {
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(true).await;
    let (c, _ec) = node();
    bounded("c to r", c.connect(r.node_id(), addr(&r)))
        .await
        .unwrap();
    eventually("r sees c", || r.connected_peers().len() == 3).await;
    let options = quick()
        .with_direct_timeout(Duration::from_secs(3))
        .with_punch_head_start(Some(Duration::from_millis(100)));
    // The only address is dead: the punch, started after 100 ms, wins long before 3 s.
    let report = via_dead_address(&a, &b, &r, options).await.unwrap();
    assert_eq!(report.method, Method::Punched, "{report:?}");
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
    assert!(
        report.direct_error.is_none(),
        "the direct stage was still running"
    );
    assert_serves(&a, &mut ea, &b, &mut eb).await;

    // A good address answers within the head start: no punch at all.
    let report = bounded(
        "connect_any",
        a.connect_any_with(c.node_id(), &[addr(&c)], Some(r.node_id()), options),
    )
    .await
    .unwrap();
    assert_eq!(report.method, Method::Direct, "{report:?}");
    assert_eq!(a.stats().punch_attempts, 1, "only the punch to b");
}

#[tokio::test]
async fn relay_answers_when_punches_are_declined_and_a_later_punch_upgrades_it() {
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(true).await;
    b.set_accept_punches(false);
    let options = quick()
        .with_upgrade_attempts(4)
        .with_upgrade_interval(Duration::from_millis(400));
    let report = bounded(
        "connect_any",
        a.connect_any_with(b.node_id(), &[], Some(r.node_id()), options),
    )
    .await
    .unwrap();
    assert_eq!(report.method, Method::Relayed, "{report:?}");
    assert!(matches!(report.path, PathKind::Relayed { relay, .. } if relay == r.node_id()));
    assert!(matches!(
        report.direct_error,
        Some(DirectError::NoAddresses)
    ));
    assert!(matches!(
        report.punch_error,
        Some(PunchError::Refused {
            reason: PunchRefusal::Declined,
            ..
        })
    ));
    assert!(report.upgrade_scheduled);
    // Messages flow over the relay.
    a.send(b.node_id(), StreamClass::User, &Msg::Text("relayed".into()))
        .await
        .unwrap();
    assert_eq!(
        wait_message(&mut eb, a.node_id()).await.1,
        Msg::Text("relayed".into())
    );

    // B accepts punches again: a background punch replaces the relayed connection.
    b.set_accept_punches(true);
    eventually("upgraded to direct", || {
        matches!(a.path(b.node_id()), Some(PathKind::Direct(_)))
    })
    .await;
    let stats = a.traverse_stats();
    assert_eq!((stats.relayed, stats.upgrades), (1, 1), "{stats:?}");
    assert!(stats.upgrade_punches >= 1);
    assert_serves(&a, &mut ea, &b, &mut eb).await;
}

#[tokio::test]
async fn every_stage_error_is_kept_when_nothing_works() {
    // R does not relay, B declines punches, the only address is dead.
    let ((a, _ea), (b, _eb), (r, _er)) = triangle(false).await;
    b.set_accept_punches(false);
    let err = via_dead_address(&a, &b, &r, quick()).await.unwrap_err();
    let TraverseError::NoPath(no_path) = &err else {
        panic!("unexpected error {err:?}");
    };
    assert!(
        matches!(
            **no_path,
            NoPath {
                direct: DirectError::Failed { attempts: 1, .. },
                punch: Some(PunchError::Refused { .. }),
                relay: Some(RelayError::Refused { .. }),
                ..
            }
        ),
        "{no_path:?}"
    );
    let text = err.to_string();
    assert!(text.contains("direct:") && text.contains("punch:") && text.contains("relay:"));
    assert!(a.path(b.node_id()).is_none());
    assert_eq!(a.traverse_stats().failed, 1);

    // Without `via` only the direct stage runs.
    match a.connect_any(b.node_id(), &[], None).await {
        Err(TraverseError::NoPath(e))
            if matches!(
                *e,
                NoPath {
                    direct: DirectError::NoAddresses,
                    punch: None,
                    relay: None,
                    ..
                }
            ) => {}
        other => panic!("unexpected {other:?}"),
    }
    // Bad peers are refused before anything is sent.
    assert!(matches!(
        a.connect_any(a.node_id(), &[], Some(r.node_id())).await,
        Err(TraverseError::InvalidPeers(_))
    ));
    assert!(matches!(
        a.connect_any(b.node_id(), &[], Some(b.node_id())).await,
        Err(TraverseError::InvalidPeers(_))
    ));
}
