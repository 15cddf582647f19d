//! The key file: same node id across restarts, owner-only permissions, clear errors for every
//! way the file can be wrong, and never a silently new identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use p2ps_transport::{Identity, IdentityError, Transport};

#[tokio::test]
async fn restart_with_the_same_key_file_keeps_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let first = Identity::load_or_create(&path).unwrap();
    let mut config = test_config();
    config.identity = first.clone();
    let (t, _e) = Transport::<Msg>::bind(config).unwrap();
    let id = t.node_id();
    assert_eq!(id, first.node_id());
    t.shutdown("restart").await;
    drop(t);

    let again = Identity::load_or_create(&path).unwrap();
    let mut config = test_config();
    config.identity = again;
    let (t2, mut e2) = Transport::<Msg>::bind(config).unwrap();
    assert_eq!(t2.node_id(), id);
    assert_eq!(Identity::load(&path).unwrap().node_id(), id);
    // Peers can authenticate the restarted node under the same id.
    let (other, mut eo) = node();
    assert_serves(&other, &mut eo, &t2, &mut e2).await;
}

#[test]
fn key_file_is_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    Identity::load_or_create(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    // No temporary files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn missing_directory_is_an_error_not_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no").join("such").join("node.key");
    match Identity::load_or_create(&path) {
        Err(IdentityError::MissingDirectory { dir: d }) => assert_eq!(d, path.parent().unwrap()),
        other => panic!("expected MissingDirectory, got {other:?}"),
    }
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn corrupt_file_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let original = Identity::load_or_create(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    // Truncate the base64 body.
    let corrupt = &text[..text.len() / 2];
    fs::write(&path, corrupt).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    for result in [Identity::load(&path), Identity::load_or_create(&path)] {
        match result {
            Err(IdentityError::Malformed { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        corrupt,
        "file was replaced"
    );
    // Binary garbage and an empty file too.
    for bytes in [vec![0xffu8, 0xfe, 0x00, 0x01], vec![]] {
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::Malformed { .. })
        ));
    }
    // Restoring the original content gives the original id back.
    fs::write(&path, &text).unwrap();
    assert_eq!(Identity::load(&path).unwrap().node_id(), original.node_id());
}

#[test]
fn group_or_world_accessible_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let id = Identity::load_or_create(&path).unwrap();
    for mode in [0o640, 0o604, 0o660, 0o644, 0o620] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        match Identity::load_or_create(&path) {
            Err(IdentityError::InsecurePermissions { path: p, mode: m }) => {
                assert_eq!(p, path);
                assert_eq!(m, mode);
            }
            other => panic!("mode {mode:o}: expected InsecurePermissions, got {other:?}"),
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(Identity::load(&path).unwrap().node_id(), id.node_id());
}

#[test]
fn wrong_key_type_missing_file_and_directory_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ecdsa.key");
    let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    fs::write(&path, ecdsa.serialize_pem()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        Identity::load_or_create(&path),
        Err(IdentityError::WrongKeyType { .. })
    ));
    assert!(matches!(
        Identity::load(dir.path().join("absent.key")),
        Err(IdentityError::NotFound { .. })
    ));
    assert!(matches!(
        Identity::load_or_create(dir.path()),
        Err(IdentityError::NotAFile { .. })
    ));
}

#[test]
fn concurrent_creation_yields_one_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let ids: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Identity::load_or_create(&path).unwrap().node_id()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}
