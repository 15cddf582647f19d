//! The fast path for hop statistics: a stable ring of 100 000 – 1 000 000 nodes built directly.
//!
//! Every node's table is the exact one ([`Ring::ideal_table`]), so no joins are replayed, and
//! lookups walk [`RoutingTable::next_hop`] — the very code a live node routes with. Building and
//! routing are split over threads (the work is independent per node and per lookup).

use super::ideal::Ring;
use super::summary::Summary;
use super::SimId;
use crate::peer::{Peer, PeerId};
use crate::ring::RingId;
use crate::routing_table::{NextHop, RoutingTable};
use crate::strategy::FingerStrategy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::VecDeque;

/// A stable ring with every routing table exact.
pub struct StableRing {
    ring: Ring<SimId>,
    /// `order[id.index()]` = the node's index in ring order.
    order: Vec<u32>,
    /// Tables in ring order.
    tables: Vec<RoutingTable<SimId>>,
    strategy: FingerStrategy,
}

/// Why a lookup on the stable ring did not reach the responsible node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFailure {
    /// No known node was nearer to the key.
    Stuck,
    /// More hops than any correct route needs.
    TooManyHops,
}

/// Hop statistics of a batch of lookups.
#[derive(Clone, Debug, Serialize)]
pub struct LookupStats {
    /// Lookups made.
    pub lookups: usize,
    /// Fraction that reached the responsible node.
    pub success: f64,
    /// Hops of the successful ones.
    pub hops: Summary,
}

const MAX_HOPS: u32 = 512;

impl StableRing {
    /// Builds a stable ring of `n` nodes whose ids are salted with `seed`, on `threads` threads.
    pub fn build(
        n: usize,
        strategy: FingerStrategy,
        list_len: usize,
        seed: u64,
        threads: usize,
    ) -> StableRing {
        let salt = ChaCha8Rng::seed_from_u64(seed).gen::<u32>();
        let ring = Ring::new(
            (0..n as u32)
                .map(|i| Peer::new(SimId::new(i, salt)))
                .collect(),
        );
        let mut order = vec![0u32; n];
        for (i, p) in ring.members().iter().enumerate() {
            order[p.id.index()] = i as u32;
        }
        let threads = threads.max(1);
        let chunk = n.div_ceil(threads).max(1);
        let mut tables: Vec<RoutingTable<SimId>> = Vec::with_capacity(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|start| {
                    let ring = &ring;
                    s.spawn(move || {
                        (start..(start + chunk).min(n))
                            .map(|i| ring.ideal_table(i, strategy, list_len))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                // A panic in a builder thread is a bug in this crate; surface it.
                match h.join() {
                    Ok(part) => tables.extend(part),
                    Err(e) => std::panic::resume_unwind(e),
                }
            }
        });
        StableRing {
            ring,
            order,
            tables,
            strategy,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The finger strategy of every table.
    pub fn strategy(&self) -> FingerStrategy {
        self.strategy
    }

    /// Routes from the node at ring index `from` to `key`, greedily as a live node would.
    /// Returns the hop count and the ring index of the node the route ended at.
    pub fn route(&self, from: usize, key: RingId) -> Result<(u32, usize), RouteFailure> {
        let mut cur = from;
        let mut hops = 0;
        loop {
            match self.tables[cur].next_hop(key) {
                Some(NextHop::Local) => return Ok((hops, cur)),
                Some(NextHop::Forward(p)) => {
                    cur = self.order[p.id.index()] as usize;
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(RouteFailure::TooManyHops);
                    }
                }
                None => return Err(RouteFailure::Stuck),
            }
        }
    }

    /// `count` lookups of random keys from random nodes, on `threads` threads.
    pub fn lookups(&self, count: usize, seed: u64, threads: usize) -> LookupStats {
        let threads = threads.max(1);
        let per = count.div_ceil(threads);
        let results: Vec<(usize, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((t as u64 + 1) * 0x9E37));
                        let todo = per.min(count.saturating_sub(t * per));
                        let mut ok = 0;
                        let mut hops = Vec::with_capacity(todo);
                        for _ in 0..todo {
                            let from = rng.gen_range(0..self.len());
                            let key = RingId(rng.gen());
                            let want = self.ring.responsible_index(key);
                            if let Ok((h, end)) = self.route(from, key) {
                                if Some(end) == want {
                                    ok += 1;
                                    hops.push(h as f64);
                                }
                            }
                        }
                        (ok, hops)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r,
                    Err(e) => std::panic::resume_unwind(e),
                })
                .collect()
        });
        let ok: usize = results.iter().map(|r| r.0).sum();
        let mut hops: Vec<f64> = results.into_iter().flat_map(|r| r.1).collect();
        LookupStats {
            lookups: count,
            success: if count == 0 {
                1.0
            } else {
                ok as f64 / count as f64
            },
            hops: Summary::of(&mut hops),
        }
    }

    /// Distinct peers in each table (lists and stored fingers), over every node.
    pub fn distinct_neighbours(&self) -> Summary {
        let mut v: Vec<f64> = self
            .tables
            .iter()
            .map(|t| t.distinct_peers().len() as f64)
            .collect();
        Summary::of(&mut v)
    }

    /// Distinct nodes among all of a node's finger slots (every level, including those its
    /// lists cover), over `sample` nodes: the "distinct fingers" of the Tango paper's tables.
    pub fn distinct_fingers(&self, sample: usize, seed: u64) -> Summary {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let levels = self.strategy.distances().len();
        let mut v = Vec::with_capacity(sample);
        for _ in 0..sample.min(self.len()) {
            let i = rng.gen_range(0..self.len());
            let me = self.ring.members()[i];
            let mut ids: Vec<SimId> = Vec::new();
            for dir in crate::ring::Dir::BOTH {
                if !self.strategy.has_dir(dir) {
                    continue;
                }
                for level in 0..levels {
                    if let Some(p) = self
                        .ring
                        .responsible(self.strategy.target(me.pos, dir, level))
                    {
                        if p.id != me.id {
                            ids.push(p.id);
                        }
                    }
                }
            }
            ids.sort_unstable();
            ids.dedup();
            v.push(ids.len() as f64);
        }
        Summary::of(&mut v)
    }

    /// Greedy hops divided by shortest-path hops in the overlay graph, over `sources` random
    /// sources with `keys_per_source` random keys each (breadth-first search per source).
    pub fn stretch(&self, sources: usize, keys_per_source: usize, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = self.len();
        let (mut greedy, mut shortest) = (0u64, 0u64);
        let mut dist = vec![u32::MAX; n];
        let mut queue = VecDeque::new();
        for _ in 0..sources {
            let s = rng.gen_range(0..n);
            dist.iter_mut().for_each(|d| *d = u32::MAX);
            dist[s] = 0;
            queue.clear();
            queue.push_back(s);
            while let Some(u) = queue.pop_front() {
                let du = dist[u];
                for p in self.tables[u].entries() {
                    let v = self.order[p.id.index()] as usize;
                    if dist[v] == u32::MAX {
                        dist[v] = du + 1;
                        queue.push_back(v);
                    }
                }
            }
            for _ in 0..keys_per_source {
                let key = RingId(rng.gen());
                let Some(want) = self.ring.responsible_index(key) else {
                    continue;
                };
                if let Ok((h, end)) = self.route(s, key) {
                    if end == want && dist[want] != u32::MAX {
                        greedy += h as u64;
                        shortest += dist[want] as u64;
                    }
                }
            }
        }
        if shortest == 0 {
            1.0
        } else {
            greedy as f64 / shortest as f64
        }
    }

    /// The routing table of the node at ring index `i`.
    pub fn table_at(&self, i: usize) -> &RoutingTable<SimId> {
        &self.tables[i]
    }

    /// The ring index of node `id`.
    pub fn index_of(&self, id: SimId) -> usize {
        self.order[id.index()] as usize
    }

    /// The identity of the node at ring index `i`.
    pub fn id_at(&self, i: usize) -> SimId {
        self.ring.members()[i].id
    }

    /// The ring position of the node at ring index `i`.
    pub fn pos_at(&self, i: usize) -> RingId {
        self.ring.members()[i].id.ring_id()
    }
}
