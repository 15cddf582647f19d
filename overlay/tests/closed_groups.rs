//! Closed groups in the simulator: members get each other's messages; forwarders carry only
//! ciphertext; a joiner without a valid admission is refused by the tree; messages without a
//! valid certificate for their origin are dropped and counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::groups::{
    Admission, Cert, ClosedGroup, GroupExt, GroupSecret, Groups, Link, Wire,
};
use p2ps_overlay::service::encode;
use p2ps_overlay::sim::{SimConfig, SimId, Simulator};
use p2ps_overlay::RingId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn stable(n: usize, seed: u64) -> Simulator {
    let mut sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.warm_start(n);
    sim.run_for(Duration::from_secs(1));
    sim.reset_counters();
    sim.record_deliveries();
    sim
}

/// How many times each node delivered payload `tag`.
fn deliveries_of(sim: &Simulator, tag: &[u8]) -> BTreeMap<SimId, usize> {
    let mut m = BTreeMap::new();
    for (node, d) in sim.deliveries() {
        if d.payload == tag {
            *m.entry(*node).or_insert(0) += 1;
        }
    }
    m
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Nodes holding state in `group`'s tree.
fn tree(sim: &Simulator, group: RingId) -> BTreeSet<SimId> {
    sim.members()
        .filter(|m| sim.node(*m).group_roles().iter().any(|r| r.group == group))
        .collect()
}

fn refused_closed(sim: &Simulator) -> u64 {
    sim.members()
        .map(|m| sim.node(m).group_stats().refused_closed)
        .sum()
}

fn pick_members(sim: &mut Simulator, n: usize) -> BTreeSet<SimId> {
    let mut members = BTreeSet::new();
    while members.len() < n {
        members.insert(sim.random_member().unwrap());
    }
    members
}

/// A node outside `tree`.
fn outsider(sim: &mut Simulator, tree: &BTreeSet<SimId>) -> SimId {
    loop {
        let x = sim.random_member().unwrap();
        if !tree.contains(&x) {
            return x;
        }
    }
}

/// The same traffic in an open and a closed group of eight among 2 000 nodes: in both the
/// members get every message once; in the open group the forwarders (tree nodes that are not
/// members) read the payload on the wire, in the closed group nobody but the members can.
#[test]
fn members_read_the_group_and_forwarders_see_only_ciphertext() {
    for seed in [31, 32] {
        let mut sim = stable(2_000, seed);
        let closed = ClosedGroup::new(&GroupSecret::from_bytes([seed as u8; 32]), "chess");
        let open = RingId(0x0be0_0000_0000_0000_0000_0000_0000_0000 + seed as u128);
        let members = pick_members(&mut sim, 8);
        for m in &members {
            assert!(sim.join_group(*m, open));
            let c = closed.clone();
            sim.command(*m, |n, now| n.join_closed_group(now, c))
                .unwrap();
        }
        sim.run_for(Duration::from_secs(5));
        sim.trace_kinds(&[
            "group-cast",
            "group-cast-counted",
            "group-send",
            "group-send-closed",
        ]);
        sim.trace_wire();
        let from = *members.iter().next().unwrap();
        let want: BTreeSet<SimId> = members.iter().copied().filter(|m| *m != from).collect();

        let open_tag = format!("open secret move {seed}").into_bytes();
        sim.send_group(from, open, open_tag.clone()).unwrap();
        let closed_tag = format!("closed secret move {seed}").into_bytes();
        sim.command(from, |n, now| {
            n.send_closed_group(now, &closed, &closed_tag)
        })
        .unwrap();
        sim.run_for(Duration::from_secs(10));

        for (tag, what) in [(&open_tag, "open"), (&closed_tag, "closed")] {
            let got = deliveries_of(&sim, tag);
            assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), want, "{what}");
            assert!(got.values().all(|c| *c == 1), "{what}: duplicates");
        }
        let forwarders: Vec<SimId> = tree(&sim, closed.id())
            .difference(&members)
            .copied()
            .collect();
        assert!(!forwarders.is_empty(), "seed {seed}: no forwarder to check");
        // What went over the wire, to forwarders and members alike.
        let wire = sim.traced_wire();
        assert!(!wire.is_empty());
        let open_leaks = wire.iter().filter(|w| contains(w, &open_tag)).count();
        let closed_leaks = wire.iter().filter(|w| contains(w, &closed_tag)).count();
        assert!(open_leaks > 0, "the open group's payload travels in clear");
        assert_eq!(
            closed_leaks, 0,
            "the closed group's payload was seen in clear"
        );
        assert_eq!(refused_closed(&sim), 0);
    }
}

/// Outsiders without the secret: a plain join for the closed group's position, a join with a
/// real member's certificate but a delegation of its own, a message without a certificate,
/// with a forged one and with a member's certificate that names another node. None gets into
/// the tree or to a member; every refusal is counted.
#[test]
fn outsiders_cannot_join_or_send() {
    let mut sim = stable(2_000, 41);
    let closed = ClosedGroup::new(&GroupSecret::from_bytes([41; 32]), "chess");
    let group = closed.id();
    let members = pick_members(&mut sim, 6);
    for m in &members {
        let c = closed.clone();
        sim.command(*m, |n, now| n.join_closed_group(now, c))
            .unwrap();
    }
    sim.run_for(Duration::from_secs(5));
    let before = tree(&sim, group);
    let member = *members.iter().next().unwrap();

    // A crafted join straight to a tree node: a member's real certificate, but the
    // delegation is the outsider's own signature (the member never named anyone).
    let thief = outsider(&mut sim, &before);
    let victim = *before.iter().find(|t| **t != thief).unwrap();
    let public = closed.public();
    sim.command(thief, |n, now| {
        n.command::<Groups<SimId>, _>(now, |_, ctx| {
            let proof = ctx.sign("groups/delegate", &(group, victim));
            let admission = Admission {
                member,
                cert: closed.certify(member),
                links: vec![Link { to: victim, proof }],
            };
            let rest = postcard::to_stdvec(&admission).unwrap();
            ctx.send(victim, encode(&Wire::JoinClosed { group, public }, &rest));
        })
    })
    .unwrap();
    sim.run_for(Duration::from_secs(1));
    let refused_join = refused_closed(&sim);
    assert!(refused_join > 0, "the crafted join was not refused");
    assert!(
        !sim.node(victim)
            .group_roles()
            .iter()
            .any(|r| r.group == group && r.children.contains(&thief)),
        "the thief hangs in the tree"
    );

    // Messages: none, a forged and a borrowed certificate.
    let sender = outsider(&mut sim, &before);
    let heads = [
        ("no-cert", encode(&Wire::Send, b"no-cert")),
        (
            "forged",
            encode(
                &Wire::SendClosed {
                    cert: Cert::from_bytes([7; 64]),
                    nonce: [0; 12],
                },
                b"forged",
            ),
        ),
        (
            "borrowed",
            encode(
                &Wire::SendClosed {
                    cert: closed.certify(member),
                    nonce: [0; 12],
                },
                b"borrowed",
            ),
        ),
    ];
    let mut refused = refused_join;
    for (what, data) in heads {
        sim.command(sender, |n, now| {
            n.command::<Groups<SimId>, _>(now, |_, ctx| {
                let sealed = ctx.seal(group, None, data);
                ctx.route(sealed);
            })
        })
        .unwrap();
        sim.run_for(Duration::from_secs(2));
        let now_refused = refused_closed(&sim);
        assert!(now_refused > refused, "{what}: not refused");
        refused = now_refused;
        assert!(
            deliveries_of(&sim, what.as_bytes()).is_empty(),
            "{what} delivered"
        );
    }
    assert!(sim.deliveries().iter().all(|(n, _)| !members.contains(n)));

    // A plain join from an outsider: its route meets the tree, which refuses it.
    let joiner = outsider(&mut sim, &before);
    assert!(sim.join_group(joiner, group));
    sim.run_for(Duration::from_secs(3));
    assert!(
        refused_closed(&sim) > refused,
        "the plain join was not refused"
    );
    // It may hold state of its own for the position, and so may nodes on its way that took
    // its open join, but no node of the closed tree holds it.
    assert!(before.iter().all(|m| {
        !sim.node(*m)
            .group_roles()
            .iter()
            .any(|r| r.group == group && r.children.contains(&joiner))
    }));

    // The members still hear each other; the outsiders hear nothing.
    sim.command(member, |n, now| {
        n.send_closed_group(now, &closed, b"still here")
    })
    .unwrap();
    sim.run_for(Duration::from_secs(5));
    let got = deliveries_of(&sim, b"still here");
    let want: BTreeSet<SimId> = members.iter().copied().filter(|m| *m != member).collect();
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), want);
}
