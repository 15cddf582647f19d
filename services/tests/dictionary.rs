//! The replicated dictionary between in-process nodes on loopback, through `node.dict()`:
//! put and get from different nodes, the latest write wins, deletions, compare-and-swap
//! among concurrent writers, owned keys, and requests refused with clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{network, settle};
use p2ps::dict::{DictError, PutOptions};
use p2ps::NodeError;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_and_cas_across_nodes() {
    let nodes = network(6).await;
    settle(&nodes).await;
    let d0 = nodes[0].dict();
    let d3 = nodes[3].dict();
    let v1 = d0.put("colour", "red").await.unwrap();
    assert_eq!(
        d3.get("colour").await.unwrap(),
        Some((bytes::Bytes::from_static(b"red"), v1))
    );
    let v2 = d3.put("colour", "blue").await.unwrap();
    assert!(v2 > v1);
    for n in &nodes {
        let (v, _) = n.dict().get("colour").await.unwrap().unwrap();
        assert_eq!(&v[..], b"blue");
    }
    d0.delete("colour").await.unwrap();
    assert_eq!(d3.get("colour").await.unwrap(), None);
    assert_eq!(nodes[5].dict().get("never written").await.unwrap(), None);

    // Compare-and-swap: 4 writers on 4 nodes, 5 increments each, retrying on conflicts.
    let mut tasks = tokio::task::JoinSet::new();
    for n in nodes.iter().take(4) {
        let d = n.dict();
        tasks.spawn(async move {
            let mut done = 0;
            let mut conflicts = 0;
            while done < 5 {
                let (value, version) = match d.get("counter").await.unwrap() {
                    Some((v, ver)) => (u64::from_be_bytes(v[..].try_into().unwrap()), ver),
                    None => (0, 0),
                };
                match d
                    .cas("counter", version, (value + 1).to_be_bytes().to_vec())
                    .await
                {
                    Ok(_) => done += 1,
                    Err(NodeError::Dict(DictError::Conflict { .. })) => {
                        conflicts += 1;
                        assert!(conflicts < 200, "too many conflicts");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (v, _) = d0.get("counter").await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(v[..].try_into().unwrap()), 20);

    // Per-call options: a deletion every replica acknowledges, after one refused because the
    // key is not at the version it expected; a fast read (one replica) sees the deletion.
    let v = d0.put("shape", "round").await.unwrap();
    let all = PutOptions {
        w: Some(3),
        ..PutOptions::default()
    };
    let stale = PutOptions {
        expect: Some(v + 1),
        ..all
    };
    assert_eq!(
        d3.delete_key_with(d3.open_key("shape"), stale).await,
        Err(NodeError::Dict(DictError::Conflict { current: v }))
    );
    let (deleted, held) = d3.delete_key_with(d3.open_key("shape"), all).await.unwrap();
    assert!(deleted > v);
    assert_eq!(held, 3);
    let r = nodes[1]
        .dict()
        .get_record(d3.open_key("shape"), Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.version, r.value), (deleted, None));

    // Owned keys: the owner writes, everyone reads.
    let mine = d0.own_key("profile");
    d0.put_key(mine.clone(), "hello", PutOptions::default())
        .await
        .unwrap();
    let r = d3.get_record(mine.clone(), None).await.unwrap().unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(r.writer.0, nodes[0].id());
    // Another node cannot write it.
    assert_eq!(
        d3.put_key(mine, "taken", PutOptions::default()).await,
        Err(NodeError::Dict(DictError::Forged))
    );
    // Too large a value is refused with the limit.
    let big = vec![0u8; (64 << 10) + 1];
    assert!(matches!(
        d0.put("big", big).await,
        Err(NodeError::Dict(DictError::TooLarge { max: 65536, .. }))
    ));
    // A watch: the state now, then each change, from a node that is not the writer.
    let mut w = nodes[4].dict().watch("weather").await.unwrap();
    assert_eq!(next(&mut w).await, None, "nothing there yet");
    d0.put("weather", "rain").await.unwrap();
    let r = next(&mut w).await.unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"rain"[..]));
    d3.put("weather", "sun").await.unwrap();
    let r = next(&mut w).await.unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"sun"[..]));
    drop(w);

    // Replica health: the key's three replicas hold its newest version.
    let h = nodes[5].dict().replicas("weather").await.unwrap();
    assert_eq!((h.current, h.answered, h.replicas), (3, 3, 3), "{h:?}");

    // The nodes still serve.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(d3.get("counter").await.unwrap().is_some());
    let s = nodes[0].status().await.unwrap();
    assert!(s.services.iter().any(|s| s.name == "p2ps/dict"));
    for n in &nodes {
        n.shutdown().await;
    }
}

/// The next state of a watched key, within 10 s.
async fn next(w: &mut p2ps::KeyWatch) -> Option<p2ps::dict::Record<p2ps::OverlayId>> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a change within 10 s")
        .expect("the node runs")
}
