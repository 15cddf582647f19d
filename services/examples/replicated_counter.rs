//! A service of your own on P2PS: a replicated counter.
//!
//! Every node runs the `example/counter` service. `add(key, n)` routes an increment to the node
//! responsible for the key (the primary), which adds it and pushes the new total to the other
//! nodes of `replica_set(key, 3)`. Replicas keep the largest total they were told (totals only
//! grow), so a replica that becomes primary — its primary left or crashed — carries on from
//! there. Replicas are kept up to date three ways: at every increment, when the primary's
//! neighbours change (the replica set moved), and on a timer (anti-entropy, in case a push was
//! lost).
//!
//! The example starts six nodes on loopback, adds 10 from each, checks that the three nodes of
//! the key's true replica set hold 60, makes the primary leave, adds 5 more, and checks that the
//! new replica set holds 65. It exits with an error if any check fails.
//!
//! Run it with `cargo run -p p2ps --example replicated_counter`.

use p2ps::id::ring_id_of;
use p2ps::{key_of, Node, NodeConfig, NodeId, OverlayId, ServiceHandle};
use p2ps_overlay::service::{decode, encode, Context, Emits, Incoming, NeighbourChange, Service};
use p2ps_overlay::{Body, Class, RingId, Routed, Time, TrueRing};
use p2ps_transport::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::time::Duration;

/// Copies of each counter: the primary and two more.
const REPLICAS: usize = 3;
/// How often a primary pushes its totals to its replica set again.
const ANTI_ENTROPY: Duration = Duration::from_secs(2);

/// What the service sends.
#[derive(Serialize, Deserialize)]
enum Wire {
    /// Routed to the key: add `amount` to its counter.
    Add { amount: u64 },
    /// One hop, primary to replica: the counter of `key` is `total`.
    Replica { key: RingId, total: u64 },
}

/// What the service tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CounterEvent {
    /// The counter of `key` held here changed to `total`.
    Updated { key: RingId, total: u64 },
}

/// The counter service.
#[derive(Default)]
struct Counter {
    totals: BTreeMap<RingId, u64>,
    next_push: Option<Time>,
    events: VecDeque<CounterEvent>,
    /// Malformed messages dropped.
    dropped: u64,
}

impl Counter {
    /// Routes an increment of `amount` to the counter of `key`.
    fn add(&mut self, ctx: &mut Context<'_, OverlayId>, key: RingId, amount: u64) {
        let sealed = ctx.seal(key, None, encode(&Wire::Add { amount }, &[]));
        ctx.route(sealed);
    }

    /// The total of `key` this node holds (as primary or replica).
    fn total(&self, key: RingId) -> u64 {
        self.totals.get(&key).copied().unwrap_or(0)
    }

    /// Takes `total` for `key` if it is larger than what this node holds.
    fn learn(&mut self, key: RingId, total: u64) {
        let held = self.totals.entry(key).or_insert(0);
        if total > *held {
            *held = total;
            self.events.push_back(CounterEvent::Updated { key, total });
        }
    }

    /// Pushes the totals of the keys this node is primary for to their other replicas.
    fn push_replicas(&self, ctx: &mut Context<'_, OverlayId>) {
        let me = ctx.me().id;
        for (key, total) in &self.totals {
            let Some(set) = ctx.replica_set(*key, REPLICAS) else {
                continue;
            };
            if set.first().map(|p| p.id) != Some(me) {
                // Not the primary (any more): the primary pushes.
                continue;
            }
            let msg = encode(
                &Wire::Replica {
                    key: *key,
                    total: *total,
                },
                &[],
            );
            for replica in set.iter().skip(1) {
                ctx.send(replica.id, msg.clone());
            }
        }
    }
}

impl Service<OverlayId> for Counter {
    fn name(&self) -> &'static str {
        "example/counter"
    }

    fn class(&self) -> Class {
        Class::User
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("keys", self.totals.len() as u64),
            ("dropped", self.dropped),
        ]
    }

    fn deliver(&mut self, ctx: &mut Context<'_, OverlayId>, msg: Routed<OverlayId>) {
        let Body::Service { data, .. } = &msg.sealed.env.body else {
            return;
        };
        let Ok((Wire::Add { amount }, _)) = decode::<Wire>(data) else {
            self.dropped += 1;
            return;
        };
        let key = msg.sealed.env.key;
        let total = self.total(key).saturating_add(amount);
        self.learn(key, total);
        self.push_replicas(ctx);
    }

    fn receive(&mut self, _ctx: &mut Context<'_, OverlayId>, msg: Incoming<OverlayId>) {
        // A peer could lie about a total; a real service would check that the sender is in the
        // key's replica set, or sign totals. The example keeps to the mechanics.
        match decode::<Wire>(&msg.data) {
            Ok((Wire::Replica { key, total }, _)) => self.learn(key, total),
            _ => self.dropped += 1,
        }
    }

    fn neighbours(
        &mut self,
        ctx: &mut Context<'_, OverlayId>,
        _change: &NeighbourChange<OverlayId>,
    ) {
        // The replica sets moved: bring the new members up to date at once.
        self.push_replicas(ctx);
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.next_push
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, OverlayId>) {
        self.push_replicas(ctx);
        self.next_push = Some(ctx.now() + ANTI_ENTROPY);
    }
}

impl Emits for Counter {
    type Event = CounterEvent;

    fn poll_event(&mut self) -> Option<CounterEvent> {
        self.events.pop_front()
    }
}

/// A node with the counter service.
struct Peer {
    node: Node,
    counter: ServiceHandle<Counter>,
}

async fn start_peer() -> Result<Peer, Box<dyn Error>> {
    let config = NodeConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?);
    let mut builder = Node::builder(config);
    let counter = builder.service(Counter::default());
    let node = builder.start().await?;
    // Start the anti-entropy timer.
    counter
        .call(|c, ctx| c.next_push = Some(ctx.now() + ANTI_ENTROPY))
        .await?;
    Ok(Peer { node, counter })
}

/// The true replica set of `key` among `ids`.
fn true_replicas(ids: &[NodeId], key: RingId) -> Vec<NodeId> {
    let ring: TrueRing<NodeId> = ids.iter().map(|id| (ring_id_of(id), *id)).collect();
    let Some(primary) = ring.responsible(key) else {
        return Vec::new();
    };
    let mut set = vec![primary];
    set.extend(ring.successors(&primary, REPLICAS - 1));
    set
}

/// Waits (at most 15 s) until every node of `holders` holds `total` for `key`.
async fn wait_for_total(
    peers: &[Peer],
    holders: &[NodeId],
    key: RingId,
    total: u64,
) -> Result<(), Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for p in peers.iter().filter(|p| holders.contains(&p.node.id())) {
            seen.push(p.counter.call(move |c, _| c.total(key)).await?);
        }
        if seen.len() == holders.len() && seen.iter().all(|t| *t == total) {
            println!("  the {} replicas hold {total}", holders.len());
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("replicas hold {seen:?}, expected {total} at each").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 15 s) until every node's lookup of `key` names the same node.
async fn wait_for_ring(peers: &[Peer], key: RingId) -> Result<(), Box<dyn Error>> {
    let ids: Vec<NodeId> = peers.iter().map(|p| p.node.id()).collect();
    let want = true_replicas(&ids, key)[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut agree = true;
        for p in peers {
            agree &= p.node.lookup(key).await.is_ok_and(|r| r.node == want);
        }
        if agree {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the ring did not settle within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    run().await?;
    println!("replicated counter: ok");
    Ok(())
}

/// The whole example; an error says which check failed.
async fn run() -> Result<(), Box<dyn Error>> {
    let mut peers = Vec::new();
    for _ in 0..6 {
        peers.push(start_peer().await?);
    }
    peers[0].node.create().await?;
    let ticket = peers[0].node.ticket();
    for p in &peers[1..] {
        p.node.join(&ticket).await?;
    }
    let key = key_of(b"visits");
    wait_for_ring(&peers, key).await?;
    println!("six nodes joined; counter \"visits\" at {key}");

    // Ten increments from every node.
    for p in &peers {
        for _ in 0..10 {
            p.counter.call(move |c, ctx| c.add(ctx, key, 1)).await?;
        }
    }
    let ids: Vec<NodeId> = peers.iter().map(|p| p.node.id()).collect();
    let replicas = true_replicas(&ids, key);
    let primary = replicas[0];
    let events = &peers
        .iter()
        .find(|p| p.node.id() == primary)
        .ok_or("no primary")?
        .counter;
    // The primary's own account of the counter reaching 60.
    let reached = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(CounterEvent::Updated { total, .. }) = events.next_event().await {
            if total == 60 {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !reached {
        return Err("the primary never reported 60".into());
    }
    println!("60 increments counted by the primary {}", primary.short());
    wait_for_total(&peers, &replicas, key, 60).await?;

    // The primary leaves; its successor, a replica, takes over with the total it holds.
    let at = peers
        .iter()
        .position(|p| p.node.id() == primary)
        .ok_or("no primary")?;
    let leaver = peers.remove(at);
    leaver.node.leave().await?;
    leaver.node.shutdown().await;
    println!("the primary left");
    wait_for_ring(&peers, key).await?;
    for _ in 0..5 {
        peers[0]
            .counter
            .call(move |c, ctx| c.add(ctx, key, 1))
            .await?;
    }
    let ids: Vec<NodeId> = peers.iter().map(|p| p.node.id()).collect();
    let replicas = true_replicas(&ids, key);
    println!(
        "5 more increments; the new primary is {}",
        replicas[0].short()
    );
    wait_for_total(&peers, &replicas, key, 65).await?;
    if let Some(p) = peers.iter().find(|p| p.node.id() == replicas[0]) {
        let status = p.node.status().await?;
        if let Some(s) = status.services.iter().find(|s| s.name == "example/counter") {
            println!("the primary's status: {:?}", s.counters);
        }
    }
    for p in &peers {
        p.node.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example too (see `[[example]]` in Cargo.toml).
    #[tokio::test]
    async fn the_counter_survives_its_primary_leaving() {
        if let Err(e) = super::run().await {
            panic!("{e}");
        }
    }
}
