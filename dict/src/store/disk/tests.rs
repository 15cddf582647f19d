//! Tests of [`RedbStore`]: records and quotas survive a reopen, expired records are dropped on
//! open, and files that are not the store's are refused with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::store::tests::record;
use crate::store::QuotaExceeded;
use p2ps_overlay::sim::SimId;
use std::error::Error as _;

fn open(path: &Path, quotas: Quotas, now_secs: u64) -> Result<RedbStore<SimId>, StorageError> {
    RedbStore::open(path, quotas, Time::from_secs(now_secs))
}

/// The error and its causes, as one line.
fn chain(e: &StorageError) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[test]
fn records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.redb");
    let a = record(1, "a", 1, b"alpha", 100);
    let b = record(2, "b", 1, b"beta", 100);
    {
        let mut s = open(&path, Quotas::default(), 0).unwrap();
        assert_eq!(s.usage(), Usage::default());
        s.put(a.position(), a.clone()).unwrap();
        s.put(b.position(), b.clone()).unwrap();
        // Replaced, then removed and written again.
        let a2 = record(1, "a", 2, b"alpha2", 100);
        s.put(a.position(), a2.clone()).unwrap();
        assert_eq!(s.get(a.position()).unwrap(), Some(a2));
        s.remove(a.position()).unwrap();
        assert_eq!(s.get(a.position()).unwrap(), None);
        s.put(a.position(), a.clone()).unwrap();
    }
    let s = open(&path, Quotas::default(), 0).unwrap();
    assert_eq!(s.get(a.position()).unwrap(), Some(a.clone()));
    assert_eq!(s.get(b.position()).unwrap(), Some(b.clone()));
    let mut keys = vec![a.position(), b.position()];
    keys.sort();
    assert_eq!(s.keys(), keys);
    assert_eq!(
        s.usage(),
        Usage {
            keys: 2,
            bytes: a.size() + b.size()
        }
    );
    assert!(s
        .get(record(1, "c", 1, b"", 1).position())
        .unwrap()
        .is_none());
}

#[test]
fn quotas_are_counted_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.redb");
    let q = Quotas {
        keys_per_writer: 2,
        bytes: 300,
        ..Quotas::default()
    };
    {
        let mut s = open(&path, q, 0).unwrap();
        for name in ["a", "b"] {
            let r = record(1, name, 1, &[7; 20], 100);
            s.put(r.position(), r).unwrap();
        }
        let r = record(1, "c", 1, b"x", 100);
        assert!(matches!(
            s.put(r.position(), r),
            Err(PutError::Quota(QuotaExceeded::WriterKeys(2)))
        ));
    }
    let mut s = open(&path, q, 0).unwrap();
    // Two records of 1 + 20 + 64 bytes each.
    assert_eq!(
        s.usage(),
        Usage {
            keys: 2,
            bytes: 170
        }
    );
    let r = record(1, "c", 1, b"x", 100);
    let e = s.put(r.position(), r).unwrap_err();
    assert!(
        matches!(e, PutError::Quota(QuotaExceeded::WriterKeys(2))),
        "{e}"
    );
    assert!(e.to_string().contains("writer has as many keys"), "{e}");
    // Another writer: within its own quota, but over the node's bytes.
    let r = record(2, "d", 1, &[0; 80], 100);
    assert!(matches!(
        s.put(r.position(), r),
        Err(PutError::Quota(QuotaExceeded::NodeBytes(300)))
    ));
    let r = record(2, "d", 1, &[0; 10], 100);
    s.put(r.position(), r).unwrap();
    assert_eq!(s.usage().keys, 3);
}

#[test]
fn expired_records_are_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.redb");
    let short = record(1, "short", 1, b"s", 10);
    let long = record(1, "long", 1, b"l", 100);
    {
        let mut s = open(&path, Quotas::default(), 0).unwrap();
        s.put(short.position(), short.clone()).unwrap();
        s.put(long.position(), long.clone()).unwrap();
    }
    {
        let s = open(&path, Quotas::default(), 50).unwrap();
        assert_eq!(s.keys(), vec![long.position()]);
        assert_eq!(s.get(short.position()).unwrap(), None);
        assert_eq!(
            s.usage(),
            Usage {
                keys: 1,
                bytes: long.size()
            }
        );
    }
    // Gone from the file, not only from the index: an earlier clock does not bring it back.
    let mut s = open(&path, Quotas::default(), 0).unwrap();
    assert_eq!(s.keys(), vec![long.position()]);
    assert_eq!(
        s.expire(Time::from_secs(100)).unwrap(),
        vec![long.position()]
    );
    assert_eq!(s.usage(), Usage::default());
    drop(s);
    assert!(open(&path, Quotas::default(), 0).unwrap().keys().is_empty());
}

#[test]
fn files_that_are_not_a_store_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();

    // Not a redb file at all.
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 64 << 10]).unwrap();
    let e = open(&path, Quotas::default(), 0).unwrap_err();
    assert!(matches!(e, StorageError::Open { .. }), "{e:?}");
    assert!(chain(&e).contains("garbage.redb"), "{}", chain(&e));

    // A store whose pages were damaged behind redb's back.
    let path = dir.path().join("damaged.redb");
    {
        let mut s = open(&path, Quotas::default(), 0).unwrap();
        for i in 0..200 {
            let r = record(1, &format!("k{i}"), 1, &[i as u8; 100], 100);
            s.put(r.position(), r).unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 4..len * 3 / 4] {
        *b ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = open(&path, Quotas::default(), 0).unwrap_err();
    assert!(chain(&e).contains("damaged.redb"), "{}", chain(&e));

    // Another program's redb file.
    let path = dir.path().join("other.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let other: TableDefinition<&str, &str> = TableDefinition::new("settings");
            txn.open_table(other).unwrap().insert("a", "b").unwrap();
        }
        txn.commit().unwrap();
    }
    let e = open(&path, Quotas::default(), 0).unwrap_err();
    assert!(
        matches!(e, StorageError::Format { found: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("not a P2PS dictionary file"), "{e}");

    // A record that does not decode.
    let path = dir.path().join("corrupt.redb");
    let key = record(1, "k", 1, b"v", 100).position();
    {
        drop(open(&path, Quotas::default(), 0).unwrap());
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert(key.0, &[0xff_u8; 3][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let e = open(&path, Quotas::default(), 0).unwrap_err();
    assert!(
        matches!(e, StorageError::Corrupt { key: k, .. } if k == key),
        "{e:?}"
    );
    assert!(e.source().is_some());

    // The same file, open already.
    let path = dir.path().join("busy.redb");
    let _first = open(&path, Quotas::default(), 0).unwrap();
    let e = open(&path, Quotas::default(), 0).unwrap_err();
    assert!(matches!(e, StorageError::InUse { .. }), "{e:?}");
    assert!(chain(&e).contains("busy.redb is in use"), "{}", chain(&e));

    // A directory that does not exist.
    let e = open(&dir.path().join("nowhere/dict.redb"), Quotas::default(), 0).unwrap_err();
    assert!(matches!(e, StorageError::Open { .. }), "{e:?}");
}

/// How long a put (a durable commit each) and a get take; printed with `--nocapture`.
#[test]
fn put_and_get_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.redb");
    let mut s = open(&path, Quotas::default(), 0).unwrap();
    const N: usize = 200;
    let records: Vec<_> = (0..N)
        .map(|i| record(1, &format!("key {i}"), 1, &[i as u8; 1024], 100))
        .collect();
    let t = std::time::Instant::now();
    for r in &records {
        s.put(r.position(), r.clone()).unwrap();
    }
    let put = t.elapsed() / N as u32;
    let t = std::time::Instant::now();
    for r in &records {
        assert!(s.get(r.position()).unwrap().is_some());
    }
    let get = t.elapsed() / N as u32;
    let mut mem = crate::store::MemStore::default();
    let t = std::time::Instant::now();
    for r in &records {
        mem.put(r.position(), r.clone()).unwrap();
    }
    let mem_put = t.elapsed() / N as u32;
    println!(
        "RedbStore, {N} records of 1 KiB: put {put:?} (durable commit each), get {get:?}; \
         MemStore put {mem_put:?}"
    );
}
