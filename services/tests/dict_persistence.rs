//! The dictionary on disk: a node with a `dict_path` is shut down and started again with the
//! same key and file, and still holds what was written; a second node cannot open a file in
//! use, and says which.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::config;
use p2ps::dict::PutOptions;
use p2ps::{Identity, Node, NodeConfig, StartError};
use std::path::Path;

fn on_disk(identity: &Identity, path: &Path) -> NodeConfig {
    config()
        .with_identity(identity.clone())
        .with_dict_path(Some(path.to_path_buf()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.redb");
    let identity = Identity::generate().unwrap();

    let node = Node::start(on_disk(&identity, &path)).await.unwrap();
    node.create().await.unwrap();
    let d = node.dict();
    let v1 = d.put("colour", "red").await.unwrap();
    d.put("shape", "round").await.unwrap();
    d.delete("shape").await.unwrap();
    let mine = d.own_key("profile");
    d.put_key(mine.clone(), "hello", PutOptions::default())
        .await
        .unwrap();

    // The file is in use: another node cannot open it, and the error names it.
    let other = Node::start(on_disk(&Identity::generate().unwrap(), &path)).await;
    match other {
        Err(StartError::DictStore { path: p, source }) => {
            assert_eq!(p, path);
            assert!(source.to_string().contains("dict.redb"), "{source}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second node opened a file in use"),
    }

    node.shutdown().await;
    drop(d);
    drop(node);

    // The same key and file: the records are still there, read from this node alone.
    let node = Node::start(on_disk(&identity, &path)).await.unwrap();
    node.create().await.unwrap();
    let d = node.dict();
    assert_eq!(
        d.get("colour").await.unwrap(),
        Some((bytes::Bytes::from_static(b"red"), v1))
    );
    assert_eq!(d.get("shape").await.unwrap(), None);
    let r = d.get_record(mine, Some(1)).await.unwrap().unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(r.writer.0, identity.node_id());
    // Three keys held, the deletion of "shape" among them; no store failure.
    let status = node.status().await.unwrap();
    let dict = status
        .services
        .iter()
        .find(|s| s.name == "p2ps/dict")
        .unwrap();
    assert_eq!(dict.counters.get("keys"), Some(&3));
    assert_eq!(dict.counters.get("storage_failures"), Some(&0));
    node.shutdown().await;

    // Without a file, nothing is kept.
    let node = Node::start(config().with_identity(identity.clone()))
        .await
        .unwrap();
    node.create().await.unwrap();
    assert_eq!(node.dict().get("colour").await.unwrap(), None);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no such dir").join("dict.redb");
    let Err(e) = Node::start(on_disk(&Identity::generate().unwrap(), &path)).await else {
        panic!("started without its file");
    };
    assert!(matches!(e, StartError::DictStore { .. }), "{e}");
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let Err(e) = Node::start(on_disk(&Identity::generate().unwrap(), &garbage)).await else {
        panic!("started on a file that is not a dictionary");
    };
    let StartError::DictStore { source, .. } = &e else {
        panic!("{e}");
    };
    assert!(source.to_string().contains("garbage"), "{source}");
}
