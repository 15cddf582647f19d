//! Lookups checked against the ring as it should be: rounds of planned lookups from random
//! nodes (shared with `p2ps bench cluster`), and the demo's lookup step.

use super::ring_check::short_opt;
use super::rng::Rng;
use super::stats::{mean, quantile};
use super::{Demo, DemoArgs, ROUND_LIMIT};
use p2ps::{key_of, Node, NodeId, RingId};
use p2ps_overlay::TrueRing;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// The outcome of a round of lookups.
#[derive(Clone, Debug, Default)]
pub(crate) struct LookupRound {
    /// Lookups started.
    pub(crate) asked: usize,
    /// Planned but not started: the round ran out of time.
    pub(crate) not_asked: usize,
    /// Answers naming the responsible node.
    pub(crate) correct: usize,
    /// Answers naming another node.
    pub(crate) wrong: usize,
    /// Lookups that failed or got no answer in time.
    pub(crate) failed: usize,
    /// Answers naming a node that is gone.
    pub(crate) named_gone: usize,
    /// Hops of each answered lookup.
    pub(crate) hops: Vec<u16>,
    /// Latency of each answered lookup, in microseconds (command to answer, as the
    /// application sees it).
    pub(crate) micros: Vec<f64>,
    /// The first wrong or failed lookup, for the check's detail.
    pub(crate) first_problem: Option<String>,
}

impl LookupRound {
    /// Every planned lookup was asked and named the responsible node.
    pub(crate) fn ok(&self) -> bool {
        self.asked > 0 && self.not_asked == 0 && self.correct == self.asked
    }

    /// Adds the outcomes of `other` to these.
    pub(crate) fn merge(&mut self, other: LookupRound) {
        self.asked += other.asked;
        self.not_asked += other.not_asked;
        self.correct += other.correct;
        self.wrong += other.wrong;
        self.failed += other.failed;
        self.named_gone += other.named_gone;
        self.hops.extend(other.hops);
        self.micros.extend(other.micros);
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    /// Mean hops of the answered lookups.
    pub(crate) fn hops_mean(&self) -> f64 {
        mean(self.hops.iter().map(|h| f64::from(*h)))
    }

    /// Most hops an answered lookup took.
    pub(crate) fn hops_max(&self) -> u16 {
        self.hops.iter().copied().max().unwrap_or(0)
    }
}

/// One planned lookup: from `nodes[from]`, for `key`.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    /// Index of the asking node.
    pub(crate) from: usize,
    /// The key's ring position.
    pub(crate) key: RingId,
    /// How problems name the key.
    pub(crate) label: String,
}

/// Plans `count` lookups from random nodes (of `n`). With a `tag`, every other key is the
/// application key `"{tag}-{i}"` (placed by `key_of`) and the rest random ring positions;
/// without, all are random positions.
pub(crate) fn plan(rng: &mut Rng, n: usize, count: usize, tag: Option<&str>) -> Vec<Ask> {
    (0..count)
        .map(|i| {
            let from = rng.below(n);
            match tag {
                Some(tag) if i % 2 == 0 => {
                    let k = format!("{tag}-{i}");
                    Ask {
                        from,
                        key: key_of(&k),
                        label: format!("key {k:?}"),
                    }
                }
                _ => {
                    let key = rng.ring();
                    Ask {
                        from,
                        key,
                        label: format!("position {key}"),
                    }
                }
            }
        })
        .collect()
}

/// Runs the planned lookups one at a time and checks each answer against the truth. Each
/// lookup is bounded (15 s) and so is the round (`limit`; lookups not started by then are
/// counted as not asked).
pub(crate) async fn lookup_round(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    asks: &[Ask],
    gone: &[NodeId],
    limit: Duration,
) -> LookupRound {
    let mut r = LookupRound::default();
    let started = Instant::now();
    for ask in asks {
        let Some(from) = nodes.get(ask.from) else {
            continue;
        };
        if started.elapsed() > limit {
            r.not_asked += 1;
            continue;
        }
        r.asked += 1;
        let label = &ask.label;
        let t = Instant::now();
        let answer = timeout(Duration::from_secs(15), from.lookup(ask.key)).await;
        let took = t.elapsed();
        let want = truth.responsible(ask.key);
        match answer {
            Ok(Ok(a)) => {
                r.hops.push(a.hops);
                r.micros.push(took.as_secs_f64() * 1e6);
                if gone.contains(&a.node) {
                    r.named_gone += 1;
                }
                if Some(a.node) == want {
                    r.correct += 1;
                } else {
                    r.wrong += 1;
                    r.first_problem.get_or_insert_with(|| {
                        format!(
                            "{label} from {}: answer {} but {} is responsible",
                            from.id().short(),
                            a.node.short(),
                            short_opt(want.as_ref())
                        )
                    });
                }
            }
            Ok(Err(e)) => {
                r.failed += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!(
                        "{label} from {}: {e} ({:.1} s)",
                        from.id().short(),
                        took.as_secs_f64()
                    )
                });
            }
            Err(_) => {
                r.failed += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!("{label} from {}: no answer in 15 s", from.id().short())
                });
            }
        }
    }
    r
}

impl Demo {
    /// `--lookups` lookups of keys tagged `demo-key-{seed}` from random live nodes, each checked
    /// against `truth`.
    pub(super) async fn check_lookups(
        &mut self,
        live: &[Node],
        truth: &TrueRing<NodeId>,
        args: &DemoArgs,
    ) {
        let t = Instant::now();
        let asks = plan(
            &mut self.rng,
            live.len(),
            args.lookups,
            Some(&format!("demo-key-{}", args.seed)),
        );
        let round = lookup_round(live, truth, &asks, &[], ROUND_LIMIT).await;
        let p50 = quantile(&round.micros, 0.5);
        self.summary_hops = Some((round.hops_mean(), round.hops_max(), p50));
        self.check(
            "lookups",
            round.ok(),
            t.elapsed(),
            lookup_detail(&round, p50),
        );
    }
}

/// The detail line of a lookup check.
pub(super) fn lookup_detail(r: &LookupRound, p50_us: f64) -> String {
    let mut s = format!(
        "{} of {} lookups named the true responsible node; hops mean {:.2}, max {}; latency p50 \
         {:.0} µs, max {:.0} µs",
        r.correct,
        r.asked,
        r.hops_mean(),
        r.hops_max(),
        p50_us,
        quantile(&r.micros, 1.0)
    );
    if r.wrong + r.failed + r.not_asked > 0 {
        s.push_str(&format!(
            "; {} wrong, {} failed, {} not asked in time (first problem: {})",
            r.wrong,
            r.failed,
            r.not_asked,
            r.first_problem.as_deref().unwrap_or("none")
        ));
    }
    s
}
