//! A hostile peer against the dictionary of real `p2ps node` processes: it connects with a key
//! of its own and sends the key's replicas a record whose value it changed after signing, a
//! record of its own for another key, a record over the size limit, one that expires beyond
//! the longest time to live, answers to requests nobody made, a forged write and a read as
//! queries that name another node as their origin, and garbage. Every honest node still
//! reads the genuine value, lookups stay correct against the true ring, and the replicas count
//! the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use p2ps_interop_tests::hostile::{
    address_of, grind_identity, tally_lookups, wait_ring_quietly, Hostile, Msg,
};
use p2ps_interop_tests::p2ps::dict::wire::{Outcome, Wire};
use p2ps_interop_tests::p2ps::dict::{DictKey, Record, DICT};
use p2ps_interop_tests::p2ps::{self, NodeId, OverlayId};
use p2ps_interop_tests::{random_keys, wait_for, TestNet, FAST};
use p2ps_overlay::proof::Signer;
use p2ps_overlay::service::{encode, service_signed_bytes};
use p2ps_overlay::{Class, Message, Query, ServiceMessage, Time, TrueRing};
use std::time::Duration;

const JOIN_WAIT: Duration = Duration::from_secs(30);

fn one_hop(data: Bytes) -> Msg {
    Message::Service(ServiceMessage {
        service: DICT,
        class: Class::User,
        data,
        sealed: None,
    })
}

/// A query of the dictionary to `key` that names `origin` as the node that asked.
fn query(key: p2ps_overlay::RingId, origin: OverlayId, data: Bytes) -> Msg {
    Message::Query(Query {
        service: DICT,
        class: Class::User,
        key,
        hops: 1,
        trail: vec![origin],
        data,
    })
}

/// The dictionary's messages the client received, decoded, with their senders (for a
/// failure's message).
fn dict_messages(h: &Hostile) -> Vec<String> {
    h.captured()
        .into_iter()
        .filter_map(|(from, m)| {
            let (kind, data) = match &m {
                Message::Service(s) if s.service == DICT => ("one-hop", &s.data),
                Message::PassBack(p) if p.service == DICT => ("passed back", &p.data),
                _ => return None,
            };
            let wire = p2ps_overlay::service::decode::<Wire<OverlayId>>(data).map(|x| x.0);
            Some(format!("{from:?} {kind} {wire:?}"))
        })
        .collect()
}

/// The dictionary counters of every node, summed: (refused, dropped).
fn refusals(nodes: &[p2ps_interop_tests::NodeProc]) -> (u64, u64) {
    let mut total = (0, 0);
    for n in nodes {
        let Ok(s) = p2ps_interop_tests::hostile::try_status(n) else {
            continue;
        };
        if let Some(d) = s.services.iter().find(|s| s.name == "p2ps/dict") {
            total.0 += d.counters.get("refused").copied().unwrap_or(0);
            total.1 += d.counters.get("dropped").copied().unwrap_or(0);
        }
    }
    total
}

#[test]
fn forged_misplaced_and_oversized_records_do_not_replace_a_value() {
    let dir = TestNet::new();
    let mut nodes = dir.spawn_network(6, FAST, JOIN_WAIT);
    let ids: Vec<NodeId> = nodes.iter_mut().map(|n| n.id()).collect();
    {
        let refs: Vec<&p2ps_interop_tests::NodeProc> = nodes.iter().collect();
        if let Err(errs) = wait_ring_quietly(&refs, &ids, Duration::from_secs(30)) {
            panic!("the ring did not settle: {}", errs.join("; "));
        }
    }
    let peers: Vec<(NodeId, std::net::SocketAddr)> =
        nodes.iter().map(|n| address_of(n).unwrap()).collect();
    let out = nodes[0].cli(&["put", "colour", "blue"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The key's replicas, from the true ring.
    let key = DictKey::<OverlayId>::open(&b"colour"[..]);
    let ring: TrueRing<NodeId> = ids
        .iter()
        .map(|id| (p2ps::id::ring_id_of(id), *id))
        .collect();
    let primary = ring.responsible(key.position()).unwrap();
    let mut replicas = vec![primary];
    replicas.extend(ring.successors(&primary, 2));

    // The client enters the nodes' tables once it speaks, until they find it dead (it answers
    // no pings): so that it takes no place in the key's replica set meanwhile (where the
    // reads below would go to it), it sits outside the replicas' arcs.
    let want = |p| ring.responsible(p).is_some_and(|r| !replicas.contains(&r));
    let (identity, _) = grind_identity(want, 10_000).unwrap_or_else(|e| panic!("{e}"));
    let h = Hostile::with_identity(identity).unwrap();
    h.connect(&peers).unwrap();
    // The genuine record, asked of the primary as a replica would (again until it holds it:
    // the put was answered once 2 of the 3 replicas held it, and the third copy may still be
    // on its way, over a connection its coordinator had to open).
    let fetch = one_hop(encode(
        &Wire::<OverlayId>::Fetch {
            op: 7,
            key: key.position(),
        },
        &[],
    ));
    let mut polls = 0u32;
    let genuine: Record<OverlayId> = wait_for(Duration::from_secs(5), || {
        if polls.is_multiple_of(5) {
            h.send(primary, fetch.clone()).unwrap();
        }
        polls += 1;
        h.captured().into_iter().find_map(|(_, m)| match m {
            Message::Service(s) if s.service == DICT => {
                match p2ps_overlay::service::decode::<Wire<OverlayId>>(&s.data) {
                    Ok((
                        Wire::Fetched {
                            record: Some(r), ..
                        },
                        _,
                    )) => Some(r),
                    _ => None,
                }
            }
            _ => None,
        })
    })
    .unwrap_or_else(|| {
        let got = dict_messages(&h);
        panic!("the primary {primary:?} did not answer the fetch: {got:?}, put: {out:?}")
    });
    assert_eq!(genuine.value.as_deref(), Some(&b"blue"[..]));

    let signer = h.signer();
    let sign_as_attacker =
        |key: &DictKey<OverlayId>, version: u64, expires: Time, value: Vec<u8>| {
            Record::new(
                key,
                OverlayId(h.id()),
                version,
                expires,
                Some(Bytes::from(value)),
                |domain, content| signer.sign(&service_signed_bytes(domain, content)),
            )
        };
    let now = p2ps::wall_clock();
    let mut forged = genuine.clone();
    forged.value = Some(Bytes::from_static(b"red"));
    forged.version += 1_000_000;
    // Genuinely signed, of another (open) key: the attacker may write that key, but the record
    // cannot land under this one's position, which it derives from its own name.
    let elsewhere = sign_as_attacker(
        &DictKey::open(&b"weather"[..]),
        genuine.version + 2_000_000,
        now + Duration::from_secs(60),
        b"storm".to_vec(),
    );
    let oversized = sign_as_attacker(
        &key,
        genuine.version + 3_000_000,
        now + Duration::from_secs(60),
        vec![b'x'; 70_000],
    );
    let forever = sign_as_attacker(
        &key,
        genuine.version + 4_000_000,
        now + Duration::from_secs(365 * 24 * 3600),
        b"forever".to_vec(),
    );
    let mut attacks: Vec<Msg> = [forged.clone(), elsewhere.clone(), oversized, forever]
        .into_iter()
        .map(|record| one_hop(encode(&Wire::Replicate { op: 9, record }, &[])))
        .collect();
    // The forged record again as a write travels (an unsigned query), naming another node as
    // the one that asked: refused by the replica that takes it.
    let victim = OverlayId(*ids.iter().find(|id| !replicas.contains(id)).unwrap());
    let put = Wire::Put {
        req: 11,
        w: 2,
        expect: None,
        record: forged,
    };
    attacks.push(query(key.position(), victim, encode(&put, &[])));
    // Answers nobody asked for, and garbage.
    attacks.push(one_hop(encode(
        &Wire::<OverlayId>::Reply {
            req: 42,
            outcome: Outcome::Stored {
                version: 1,
                acks: 3,
            },
        },
        &[],
    )));
    attacks.push(one_hop(encode(
        &Wire::<OverlayId>::Stored {
            op: 1,
            refused: None,
        },
        &[],
    )));
    attacks.push(one_hop(encode(
        &Wire::Notify {
            req: 5,
            record: Some(elsewhere),
        },
        &[],
    )));
    attacks.push(one_hop(Bytes::from_static(&[0xee, 0xff, 0x01])));
    let (refused0, dropped0) = refusals(&nodes);
    for r in &replicas {
        for m in &attacks {
            h.send(*r, m.clone()).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let (refused1, dropped1) = refusals(&nodes);
    // Per replica: the forged (twice), oversized and everlasting records refused, the
    // garbage dropped.
    assert!(
        refused1 - refused0 >= 4 * replicas.len() as u64,
        "refused {} (want {} or more)",
        refused1 - refused0,
        4 * replicas.len()
    );
    // A read as a query that names another node as its origin: the answer comes back to the
    // peer that sent it (over its link), never to the node named, and holds the genuine
    // record.
    h.send(
        primary,
        query(
            key.position(),
            victim,
            encode(&Wire::<OverlayId>::Get { req: 77, r: 2 }, &[]),
        ),
    )
    .unwrap();
    let found = wait_for(Duration::from_secs(5), || {
        h.captured().into_iter().find_map(|(from, m)| match m {
            Message::PassBack(p) if p.service == DICT => {
                match p2ps_overlay::service::decode::<Wire<OverlayId>>(&p.data) {
                    Ok((
                        Wire::Reply {
                            req: 77,
                            outcome: Outcome::Found(r),
                        },
                        _,
                    )) => Some((from, r)),
                    _ => None,
                }
            }
            _ => None,
        })
    })
    .unwrap_or_else(|| {
        let got = dict_messages(&h);
        panic!("the read's answer did not come back to the peer that sent it: {got:?}")
    });
    assert_eq!(found.0, primary);
    assert_eq!(found.1.as_ref(), Some(&genuine));
    assert!(
        dropped1 - dropped0 >= replicas.len() as u64,
        "dropped {}",
        dropped1 - dropped0
    );

    // Every honest node still reads the genuine value, and lookups stay right.
    for n in &nodes {
        let out = n.cli(&["get", "colour"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "blue\n",
            "{}: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let refs: Vec<&p2ps_interop_tests::NodeProc> = nodes.iter().collect();
    let t = tally_lookups(&refs, &random_keys(10), &ids);
    assert!(t.all_correct(), "{}", t.summary());
    h.shutdown();
}
