//! Group messages count their deliveries back up the tree: the sender learns how many members
//! (itself not included) got each message, open or closed group, in the tree or outside it; a
//! crashed member drops out of the count; crafted counts are refused or capped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::groups::{ClosedGroup, GroupExt, GroupSecret, Groups, Wire};
use p2ps_overlay::service::{decode, encode, WayBack};
use p2ps_overlay::sim::{GroupCount, SimConfig, SimId, Simulator};
use p2ps_overlay::{Message, RingId};
use std::collections::BTreeSet;
use std::time::Duration;

fn stable(n: usize, seed: u64) -> Simulator {
    let mut sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.warm_start(n);
    sim.run_for(Duration::from_secs(1));
    sim.reset_counters();
    sim
}

fn pick_members(sim: &mut Simulator, n: usize) -> BTreeSet<SimId> {
    let mut members = BTreeSet::new();
    while members.len() < n {
        members.insert(sim.random_member().unwrap());
    }
    members
}

/// Nodes holding state in `group`'s tree.
fn tree(sim: &Simulator, group: RingId) -> BTreeSet<SimId> {
    sim.members()
        .filter(|m| sim.node(*m).group_roles().iter().any(|r| r.group == group))
        .collect()
}

/// The count `from` got for its message `seq`.
fn count_of(sim: &Simulator, from: SimId, seq: u64) -> GroupCount {
    let found: Vec<GroupCount> = sim
        .counters()
        .group_counts
        .iter()
        .filter(|c| c.origin == from && c.seq == seq)
        .copied()
        .collect();
    assert_eq!(found.len(), 1, "one count for {seq}: {found:?}");
    found[0]
}

fn refused_counts(sim: &Simulator) -> u64 {
    sim.members()
        .map(|m| sim.node(m).group_stats().refused_counts)
        .sum()
}

/// A group of k among n: a member's message counts the k - 1 other members, an outsider's
/// all k; with a member crashed, one fewer.
#[test]
fn the_sender_learns_how_many_members_got_it() {
    for seed in [61, 62] {
        let mut sim = stable(1_000, seed);
        let group = RingId((0x6c0_u128 << 116) | seed as u128);
        let members = pick_members(&mut sim, 12);
        for m in &members {
            assert!(sim.join_group(*m, group));
        }
        sim.run_for(Duration::from_secs(5));
        let t = tree(&sim, group);
        let member = *members.iter().next().unwrap();
        let outsider = loop {
            let x = sim.random_member().unwrap();
            if !t.contains(&x) {
                break x;
            }
        };
        let seq = sim
            .send_group(member, group, b"from a member".to_vec())
            .unwrap();
        sim.run_for(Duration::from_secs(10));
        let c = count_of(&sim, member, seq);
        assert_eq!((c.members, c.complete, c.group), (11, true, group));
        let seq = sim
            .send_group(outsider, group, b"from outside".to_vec())
            .unwrap();
        sim.run_for(Duration::from_secs(10));
        let c = count_of(&sim, outsider, seq);
        assert_eq!((c.members, c.complete), (12, true), "seed {seed}");

        // A member crashes: right away, and after the tree repaired, it is not counted.
        let victim = *members.iter().nth(3).unwrap();
        sim.crash(victim);
        let seq = sim
            .send_group(outsider, group, b"one down".to_vec())
            .unwrap();
        sim.run_for(Duration::from_secs(10));
        let c = count_of(&sim, outsider, seq);
        assert!(c.members <= 11, "a crashed member was counted: {c:?}");
        sim.run_for(Duration::from_secs(70));
        let seq = sim
            .send_group(outsider, group, b"repaired".to_vec())
            .unwrap();
        sim.run_for(Duration::from_secs(10));
        let c = count_of(&sim, outsider, seq);
        assert_eq!((c.members, c.complete), (11, true), "seed {seed}");
    }
}

/// A group nobody joined: the root answers at once with 0.
#[test]
fn an_empty_group_counts_zero() {
    let mut sim = stable(200, 63);
    let from = sim.random_member().unwrap();
    let seq = sim
        .send_group(from, RingId(12345), b"anyone?".to_vec())
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    let c = count_of(&sim, from, seq);
    assert_eq!((c.members, c.complete), (0, true));
}

/// Closed groups count the same way.
#[test]
fn closed_groups_count_their_members() {
    let mut sim = stable(500, 64);
    let closed = ClosedGroup::new(&GroupSecret::from_bytes([64; 32]), "chess");
    let members = pick_members(&mut sim, 7);
    for m in &members {
        let c = closed.clone();
        sim.command(*m, |n, now| n.join_closed_group(now, c))
            .unwrap();
    }
    sim.run_for(Duration::from_secs(5));
    let t = tree(&sim, closed.id());
    let member = *members.iter().next().unwrap();
    let seq = sim
        .command(member, |n, now| n.send_closed_group(now, &closed, b"e2e4"))
        .unwrap();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(count_of(&sim, member, seq).members, 6);
    // A holder of the secret outside the tree.
    let outsider = loop {
        let x = sim.random_member().unwrap();
        if !t.contains(&x) {
            break x;
        }
    };
    let seq = sim
        .command(outsider, |n, now| {
            n.send_closed_group(now, &closed, b"d2d4")
        })
        .unwrap();
    sim.run_for(Duration::from_secs(10));
    let c = count_of(&sim, outsider, seq);
    assert_eq!((c.members, c.complete), (7, true));
}

/// Crafted counts: unsolicited ones (a tag nobody gave, to nodes that wait for nothing, or for
/// a message the receiver waits for but from a peer that owes none) are refused and change no
/// count; a tree neighbour that inflates its subtree's count is capped at what the network's
/// size makes plausible, and its second (honest) count is refused.
#[test]
fn crafted_counts_are_refused_or_capped() {
    const N: usize = 300;
    let mut sim = stable(N, 65);
    let group = RingId(u128::MAX / 5);
    let members = pick_members(&mut sim, 10);
    for m in &members {
        assert!(sim.join_group(*m, group));
    }
    sim.run_for(Duration::from_secs(5));
    let t = tree(&sim, group);
    let hostile = loop {
        let x = sim.random_member().unwrap();
        if !t.contains(&x) {
            break x;
        }
    };

    // Unsolicited counts to every tree node, and garbage answers.
    for to in &t {
        let to = *to;
        sim.command(hostile, |n, now| {
            n.command::<Groups<SimId>, _>(now, |_, ctx| {
                for tag in 0..50u64 {
                    let head = Wire::Count {
                        tag,
                        members: u64::MAX,
                        complete: true,
                    };
                    ctx.send(to, encode(&head, &[]));
                }
            })
        })
        .unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    assert!(refused_counts(&sim) >= 50 * t.len() as u64);

    // Unsolicited answers (a whole tree's count for a message the receiver never sent), and a
    // counted cast from outside the tree with an absurd wait (answered 0 and pruned).
    let victim = *members.iter().next().unwrap();
    let before = refused_counts(&sim);
    sim.command(hostile, |n, now| {
        n.command::<Groups<SimId>, _>(now, |_, ctx| {
            for seq in 0..20u64 {
                let head = Wire::Counted {
                    seq,
                    members: u64::MAX,
                    complete: true,
                };
                let way = WayBack {
                    to: victim,
                    trail: Vec::new(),
                    retrace: false,
                };
                ctx.reply(&way, encode(&head, &[]));
            }
            let sealed = ctx.seal(group, None, encode(&Wire::Send, b"sneaky"));
            let head = Wire::CastCounted {
                hops: 0,
                tag: 1,
                wait_ms: u32::MAX,
            };
            ctx.send_sealed(victim, encode(&head, &[]), sealed);
        })
    })
    .unwrap();
    sim.run_for(Duration::from_secs(1));
    // The twenty answers, and the victim's count 0 for the cast, which the sender (not
    // waiting for any) refuses in turn.
    assert_eq!(refused_counts(&sim), before + 21);
    assert!(sim.counters().group_counts.is_empty(), "a count was taken");

    // An honest count is still exact.
    let sender = *members.iter().next().unwrap();
    let seq = sim.send_group(sender, group, b"honest".to_vec()).unwrap();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(count_of(&sim, sender, seq).members, 9);

    // A tree neighbour of the sender that has tree neighbours of its own (so it waits for
    // their counts before answering) answers early with an inflated count.
    let roles = |sim: &Simulator, m: SimId| {
        sim.node(m)
            .group_roles()
            .into_iter()
            .find(|r| r.group == group)
            .unwrap()
    };
    let neighbours = |sim: &Simulator, m: SimId| -> BTreeSet<SimId> {
        let r = roles(sim, m);
        r.parent.into_iter().chain(r.children).collect()
    };
    let (sender, liar) = members
        .iter()
        .find_map(|s| {
            neighbours(&sim, *s)
                .into_iter()
                .find(|h| neighbours(&sim, *h).len() >= 2)
                .map(|h| (*s, h))
        })
        .expect("a tree node with two tree neighbours next to a member");
    let before = refused_counts(&sim);
    sim.trace_kinds(&["group-cast-counted"]);
    sim.trace_wire();
    let seq = sim.send_group(sender, group, b"inflate".to_vec()).unwrap();
    // Step until the liar has the tagged message and waits for its own neighbours.
    let mut tag = None;
    for _ in 0..10_000 {
        if tag.is_none() {
            tag = sim
                .traced()
                .iter()
                .zip(sim.traced_wire())
                .find(|(s, _)| s.from == sender && s.to == liar)
                .map(|(_, w)| {
                    let Ok(Message::Service(m)) = postcard::from_bytes::<Message<SimId>>(w) else {
                        panic!("not a service message");
                    };
                    let Ok((Wire::CastCounted { tag, .. }, _)) = decode::<Wire>(&m.data) else {
                        panic!("not a counted cast");
                    };
                    tag
                });
        }
        let waiting = sim
            .node(liar)
            .services()
            .iter()
            .flat_map(|s| s.counters.clone())
            .any(|(k, v)| k == "counting" && v > 0);
        if tag.is_some() && waiting {
            break;
        }
        assert!(sim.step());
    }
    let tag = tag.expect("the liar got the message");
    sim.command(liar, |n, now| {
        n.command::<Groups<SimId>, _>(now, |_, ctx| {
            let head = Wire::Count {
                tag,
                members: u64::MAX,
                complete: true,
            };
            ctx.send(sender, encode(&head, &[]));
        })
    })
    .unwrap();
    sim.run_for(Duration::from_secs(10));
    let c = count_of(&sim, sender, seq);
    assert!(
        c.members > 9 && c.members <= 16 * N as u64,
        "inflated beyond the cap: {c:?}"
    );
    assert!(refused_counts(&sim) > before, "the second count was taken");
    // Nothing is left waiting anywhere.
    sim.run_for(Duration::from_secs(10));
    for m in sim.members() {
        let counting: u64 = sim
            .node(m)
            .services()
            .iter()
            .flat_map(|s| s.counters.clone())
            .filter(|(k, _)| *k == "counting")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(counting, 0);
    }
}
