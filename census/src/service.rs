//! The census service: its settings, its state, and how a census covers the ring.
//!
//! The origin signs a [`Wire::Census`] envelope and cuts the whole ring at the midpoints
//! between the nodes it knows ([`Segment::split`], as a broadcast does); each node it knows
//! gets one piece with the envelope, cuts it the same way among the nodes it knows there, and
//! once every piece it gave out is answered, answers its own parent with the sum of its
//! children's figures and its own. The answer is the acknowledgement: on a stable ring a
//! census costs exactly N - 1 asks and N - 1 answers.
//!
//! Failures: a piece whose answer does not come in time (one wait per tree level the piece may
//! still span, from the density this node sees), or whose receiver is found dead, is cut again
//! among the other nodes known in it and re-sent; after `attempts` it is given up and the
//! census ends incomplete. A late answer for a piece that was re-sent is dropped, so the
//! figures of a slow subtree are never added twice: every figure added at a node belongs to a
//! piece still outstanding there, and those pieces never overlap.
//!
//! Hostile peers: an ask is taken only with its origin's sealed envelope (checked by the core)
//! naming this service; an answer only from the node the piece was given to, for that piece
//! and that segment; its size is bounded before it is read, its sum must be plausible for the
//! segment (no more than `slack` times the nodes its width holds at the density this node
//! sees, histograms that add up, bounded keys and bytes) and its rows must lie in the segment.
//! A refused answer counts as a failed piece (re-sent through others). Each node covers at
//! most `max_jobs` segments at once, `max_per_origin` of one origin, and takes at most
//! `max_asks` asks of one census; asks beyond are answered at once with this node's own
//! figures and `complete: false`.

use crate::estimate::{network_size, nodes_in};
use crate::figures::{check_rows, merge_rows, Aggregate, Figures, Row};
use crate::wire::{Wire, ANSWER_OVERHEAD, KINDS, ROW_BYTES};
use p2ps_overlay::service::{decode, encode, Context, Emits, Incoming, Service, ServiceId};
use p2ps_overlay::{Body, Class, CommandError, ConfigError, Node, PeerId, Sealed, Segment, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The service's name.
pub const NAME: &str = "p2ps/census";

/// The service's id.
pub const CENSUS: ServiceId = ServiceId::named(NAME);

/// Settings of the census. Start from `CensusConfig::default()` and change what you need.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CensusConfig {
    /// How long a node waits for a piece's answer, per tree level the piece may span (plus
    /// two): a piece of one node is waited for 3 times this. Default: 1 s.
    pub level_timeout: Duration,
    /// Attempts per piece before it is given up. Default: 3.
    pub attempts: u32,
    /// Segments this node covers at once, over all censuses. Default: 256.
    pub max_jobs: usize,
    /// Segments this node covers at once for one origin (its own censuses included).
    /// Default: 4.
    pub max_per_origin: usize,
    /// Asks of one census this node takes (a re-sent piece may reach it again). Default: 4.
    pub max_asks: u32,
    /// Most per-node rows a census may ask for (an answer must fit a frame:
    /// [`ROW_BYTES`] each). Default: 4096.
    pub max_rows: u32,
    /// A sum claiming more than `slack` times the nodes a segment plausibly holds (plus
    /// `slack`) is refused. Default: 16.
    pub slack: u64,
    /// Censuses remembered (to count asks of each). Default: 4096.
    pub max_tracked: usize,
}

impl Default for CensusConfig {
    fn default() -> Self {
        CensusConfig {
            level_timeout: Duration::from_secs(1),
            attempts: 3,
            max_jobs: 256,
            max_per_origin: 4,
            max_asks: 4,
            max_rows: 4096,
            slack: 16,
            max_tracked: 4096,
        }
    }
}

impl CensusConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.level_timeout.is_zero() {
            return Err(ConfigError::Zero("census level_timeout"));
        }
        if self.attempts == 0
            || self.max_jobs == 0
            || self.max_per_origin == 0
            || self.max_asks == 0
            || self.slack == 0
            || self.max_tracked == 0
        {
            return Err(ConfigError::Zero(
                "census attempts, max_jobs, max_per_origin, max_asks, slack, max_tracked",
            ));
        }
        Ok(())
    }

    /// Largest answer this node reads, in bytes.
    pub fn max_answer_bytes(&self) -> usize {
        ANSWER_OVERHEAD + self.max_rows as usize * ROW_BYTES
    }
}

/// A census this node started, over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<P: PeerId> {
    /// The message number [`Census::start`] returned.
    pub seq: u64,
    /// The figures of every node counted.
    pub sum: Aggregate,
    /// Per-node rows, in ring order from the origin, evenly thinned to the number asked.
    pub rows: Vec<Row<P>>,
    /// Whether every piece was answered in full (no piece given up, no node refusing).
    pub complete: bool,
    /// When it started.
    pub started: Time,
    /// When the last answer came.
    pub finished: Time,
    /// The origin's own network-size estimate.
    pub estimate: Option<u64>,
}

/// What the census tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CensusEvent<P: PeerId> {
    /// A census this node started is over.
    Done(Outcome<P>),
}

/// Counters of the census service.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CensusStats {
    /// Censuses this node started.
    pub started: u64,
    /// Asks taken (segments covered for others).
    pub covered: u64,
    /// Asks answered at once without covering (too many at once, too deep).
    pub busy: u64,
    /// Answers refused: unasked, for another segment, implausible, malformed.
    pub refused: u64,
    /// Pieces re-sent through other nodes.
    pub resent: u64,
    /// Pieces given up after every attempt.
    pub given_up: u64,
}

/// Where a node reports when the segment it covers is done.
#[derive(Clone, Copy, Debug)]
enum Parent<P> {
    /// This node started the census.
    Origin,
    /// A piece from `from`, numbered `piece` there.
    Piece { from: P, piece: u64 },
}

/// A segment this node is covering for one census.
#[derive(Debug)]
struct Job<P: PeerId> {
    parent: Parent<P>,
    sealed: Sealed<P>,
    origin: P,
    seq: u64,
    rows_wanted: u32,
    seg: Segment,
    depth: u16,
    sum: Aggregate,
    rows: Vec<Row<P>>,
    outstanding: usize,
    complete: bool,
    started: Time,
}

/// A piece given to a node and not answered yet.
#[derive(Debug)]
struct Piece<P> {
    job: u64,
    to: P,
    seg: Segment,
    attempts: u32,
    deadline: Time,
    /// Peers that failed this piece before; it is not given to them again.
    avoid: Vec<P>,
}

/// The census service. See the module documentation.
#[derive(Debug)]
pub struct Census<P: PeerId> {
    cfg: CensusConfig,
    local: Figures,
    jobs: BTreeMap<u64, Job<P>>,
    pieces: BTreeMap<u64, Piece<P>>,
    deadlines: BTreeSet<(Time, u64)>,
    /// Asks taken per census, until when they are remembered.
    asked: BTreeMap<(P, u64), (u32, Time)>,
    next_id: u64,
    events: VecDeque<CensusEvent<P>>,
    stats: CensusStats,
}

impl<P: PeerId> Census<P> {
    /// The service with settings `cfg`.
    pub fn new(cfg: CensusConfig) -> Self {
        Census {
            cfg,
            local: Figures::default(),
            jobs: BTreeMap::new(),
            pieces: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            asked: BTreeMap::new(),
            next_id: 1,
            events: VecDeque::new(),
            stats: CensusStats::default(),
        }
    }

    /// Tells the service this node's figures (the runtime refreshes them).
    pub fn set_local(&mut self, figures: Figures) {
        self.local = figures;
    }

    /// This node's figures as last told.
    pub fn local(&self) -> Figures {
        self.local
    }

    /// Counters.
    pub fn stats(&self) -> CensusStats {
        self.stats
    }

    /// Segments this node is covering now.
    pub fn active(&self) -> usize {
        self.jobs.len()
    }

    /// Starts a census of every node, asking for up to `rows` per-node rows (at most the
    /// configured `max_rows`). [`CensusEvent::Done`] follows with the returned number.
    pub fn start(&mut self, ctx: &mut Context<'_, P>, rows: u32) -> Result<u64, CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        let me = ctx.me();
        if self.jobs.len() >= self.cfg.max_jobs || self.per_origin(me.id) >= self.cfg.max_per_origin
        {
            return Err(CommandError::TooManyPending);
        }
        let rows = rows.min(self.cfg.max_rows);
        let sealed = ctx.seal(me.pos, None, encode(&Wire::<P>::Census { rows }, &[]));
        let seq = sealed.env.seq;
        self.stats.started += 1;
        let seg = Segment::full(me.pos);
        self.start_job(ctx, Parent::Origin, sealed, (seq, rows, seg, 0));
        Ok(seq)
    }

    fn per_origin(&self, origin: P) -> usize {
        self.jobs.values().filter(|j| j.origin == origin).count()
    }

    /// This node's own figures, as a sum and a row.
    fn own(&self, ctx: &Context<'_, P>) -> (Aggregate, Row<P>) {
        let table = ctx.table().distinct_peers().len() as u32;
        let estimate = network_size(ctx.table());
        let sum = Aggregate::one(&self.local, table, estimate);
        let row = Row {
            id: ctx.me().id,
            figures: self.local,
            table,
            estimate: estimate.unwrap_or(0),
        };
        (sum, row)
    }

    fn start_job(
        &mut self,
        ctx: &mut Context<'_, P>,
        parent: Parent<P>,
        sealed: Sealed<P>,
        (seq, rows_wanted, seg, depth): (u64, u32, Segment, u16),
    ) {
        let me = ctx.me();
        let (mut sum, mut rows) = (Aggregate::default(), Vec::new());
        if seg.contains(me.pos) {
            let (s, r) = self.own(ctx);
            sum = s;
            if rows_wanted > 0 {
                rows.push(r);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(
            id,
            Job {
                parent,
                origin: sealed.origin(),
                sealed,
                seq,
                rows_wanted,
                seg,
                depth,
                sum,
                rows,
                outstanding: 0,
                complete: true,
                started: ctx.now(),
            },
        );
        self.send_pieces(ctx, id, seg, 0, Vec::new());
        if self.jobs.get(&id).is_some_and(|j| j.outstanding == 0) {
            self.finish_job(ctx, id);
        }
    }

    /// Cuts `seg` among the nodes known in it (and this node, whose own piece needs no
    /// message) and gives out every other piece. A segment that holds no known node goes
    /// whole to the known node nearest to it, if that is nearer than this node.
    fn send_pieces(
        &mut self,
        ctx: &mut Context<'_, P>,
        job: u64,
        seg: Segment,
        attempts: u32,
        avoid: Vec<P>,
    ) {
        for (to, piece) in ctx.cut(seg, &avoid) {
            self.send_piece(ctx, job, to, piece, (attempts, avoid.clone()));
        }
    }

    fn send_piece(
        &mut self,
        ctx: &mut Context<'_, P>,
        job: u64,
        to: P,
        seg: Segment,
        (attempts, avoid): (u32, Vec<P>),
    ) {
        let deadline = ctx.now() + self.wait(ctx, seg);
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        j.outstanding += 1;
        let head = Wire::<P>::Ask {
            piece: id,
            seg,
            depth: j.depth + 1,
        };
        let sealed = j.sealed.clone();
        self.pieces.insert(
            id,
            Piece {
                job,
                to,
                seg,
                attempts,
                deadline,
                avoid,
            },
        );
        self.deadlines.insert((deadline, id));
        ctx.send_sealed(to, encode(&head, &[]), sealed);
    }

    /// How many nodes `seg` plausibly holds, at the density this node sees.
    fn plausible(&self, ctx: &Context<'_, P>, seg: Segment) -> u64 {
        let n = network_size(ctx.table()).unwrap_or(1);
        nodes_in(seg.span, n)
    }

    /// How long to wait for the answer of a piece covering `seg`.
    fn wait(&self, ctx: &Context<'_, P>, seg: Segment) -> Duration {
        let nodes = self.plausible(ctx, seg);
        let levels = 64 - nodes.leading_zeros();
        self.cfg.level_timeout * (2 + levels.min(40))
    }

    /// An ask from `from`.
    fn on_ask(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        sealed: Sealed<P>,
        (piece, seg, depth): (u64, Segment, u16),
    ) {
        let rows = match &sealed.env.body {
            Body::Service { service, data, .. } if *service == CENSUS => {
                match decode::<Wire<P>>(data) {
                    Ok((Wire::Census { rows }, _)) => rows.min(self.cfg.max_rows),
                    _ => {
                        self.stats.refused += 1;
                        return;
                    }
                }
            }
            _ => {
                self.stats.refused += 1;
                return;
            }
        };
        let (origin, seq) = (sealed.origin(), sealed.env.seq);
        let now = ctx.now();
        self.asked.retain(|_, (_, until)| *until > now);
        let until = now + ctx.config().seen_ttl;
        let tracked = self.asked.len() < self.cfg.max_tracked;
        let asks = match self.asked.get_mut(&(origin, seq)) {
            Some((n, _)) => {
                *n += 1;
                *n
            }
            None if tracked => {
                self.asked.insert((origin, seq), (1, until));
                1
            }
            None => u32::MAX,
        };
        let parent = Parent::Piece { from, piece };
        let busy = asks > self.cfg.max_asks
            || depth >= ctx.config().max_hops
            || self.jobs.len() >= self.cfg.max_jobs
            || self.per_origin(origin) >= self.cfg.max_per_origin;
        if busy {
            // Answered at once with this node's own figures: the parent's wait ends now.
            self.stats.busy += 1;
            let (mut sum, mut row) = (Aggregate::default(), Vec::new());
            if seg.contains(ctx.me().pos) {
                let (s, r) = self.own(ctx);
                sum = s;
                if rows > 0 {
                    row.push(r);
                }
            }
            answer(ctx, parent, (origin, seq, seg), false, sum, row);
            return;
        }
        self.stats.covered += 1;
        self.start_job(ctx, parent, sealed, (seq, rows, seg, depth));
    }

    /// An answer from `from`.
    fn on_answer(&mut self, ctx: &mut Context<'_, P>, from: P, answer: Wire<P>) {
        let Wire::Answer {
            origin,
            seq,
            piece,
            seg,
            complete,
            sum,
            rows,
        } = answer
        else {
            return;
        };
        let Some(p) = self.pieces.get(&piece) else {
            // Unasked, or late (the piece was re-sent through others): never added.
            self.stats.refused += 1;
            return;
        };
        let matches = p.to == from
            && p.seg == seg
            && self
                .jobs
                .get(&p.job)
                .is_some_and(|j| j.origin == origin && j.seq == seq);
        if !matches {
            self.stats.refused += 1;
            return;
        }
        let job = p.job;
        let max_nodes = self
            .plausible(ctx, seg)
            .saturating_mul(self.cfg.slack)
            .saturating_add(self.cfg.slack);
        let wanted = self.jobs.get(&job).map_or(0, |j| j.rows_wanted);
        let plausible = sum
            .check(max_nodes)
            .and_then(|()| check_rows(&rows, &seg, sum.nodes.min(u64::from(wanted))));
        if plausible.is_err() {
            // A lie: the piece is covered again through other nodes.
            self.stats.refused += 1;
            self.resend_piece(ctx, piece);
            return;
        }
        let Some(p) = self.pieces.remove(&piece) else {
            return;
        };
        self.deadlines.remove(&(p.deadline, piece));
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.sum.add(&sum);
        let start = j.seg.start;
        merge_rows(&mut j.rows, rows, start, j.rows_wanted as usize);
        j.complete &= complete;
        j.outstanding = j.outstanding.saturating_sub(1);
        if j.outstanding == 0 {
            self.finish_job(ctx, job);
        }
    }

    fn finish_job(&mut self, ctx: &mut Context<'_, P>, job: u64) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        match j.parent {
            Parent::Origin => self.events.push_back(CensusEvent::Done(Outcome {
                seq: j.seq,
                sum: j.sum,
                rows: j.rows,
                complete: j.complete,
                started: j.started,
                finished: ctx.now(),
                estimate: network_size(ctx.table()),
            })),
            Parent::Piece { .. } => answer(
                ctx,
                j.parent,
                (j.origin, j.seq, j.seg),
                j.complete,
                j.sum,
                j.rows,
            ),
        }
    }

    /// Re-sends piece `id` through other nodes (its receiver failed it), or gives it up.
    fn resend_piece(&mut self, ctx: &mut Context<'_, P>, id: u64) {
        let Some(p) = self.pieces.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(p.deadline, id));
        let attempts = p.attempts + 1;
        let Some(j) = self.jobs.get_mut(&p.job) else {
            return;
        };
        j.outstanding = j.outstanding.saturating_sub(1);
        if attempts >= self.cfg.attempts {
            j.complete = false;
            self.stats.given_up += 1;
        } else {
            self.stats.resent += 1;
            let mut avoid = p.avoid;
            avoid.push(p.to);
            self.send_pieces(ctx, p.job, p.seg, attempts, avoid);
        }
        if self.jobs.get(&p.job).is_some_and(|j| j.outstanding == 0) {
            self.finish_job(ctx, p.job);
        }
    }
}

/// Sends the answer of a segment to the node it came from.
fn answer<P: PeerId>(
    ctx: &mut Context<'_, P>,
    parent: Parent<P>,
    (origin, seq, seg): (P, u64, Segment),
    complete: bool,
    sum: Aggregate,
    rows: Vec<Row<P>>,
) {
    if let Parent::Piece { from, piece } = parent {
        let head = Wire::Answer {
            origin,
            seq,
            piece,
            seg,
            complete,
            sum: Box::new(sum),
            rows,
        };
        ctx.send(from, encode(&head, &[]));
    }
}

impl<P: PeerId> Emits for Census<P> {
    type Event = CensusEvent<P>;

    fn poll_event(&mut self) -> Option<CensusEvent<P>> {
        self.events.pop_front()
    }
}

impl<P: PeerId> Service<P> for Census<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("started", self.stats.started),
            ("covered", self.stats.covered),
            ("busy", self.stats.busy),
            ("refused", self.stats.refused),
            ("resent", self.stats.resent),
            ("given_up", self.stats.given_up),
            ("in_progress", self.jobs.len() as u64),
        ]
    }

    fn class(&self) -> Class {
        Class::Tree
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        if msg.data.len() > self.cfg.max_answer_bytes() {
            self.stats.refused += 1;
            return;
        }
        let Ok((head, _)) = decode::<Wire<P>>(&msg.data) else {
            self.stats.refused += 1;
            return;
        };
        match (head, msg.sealed) {
            (Wire::Ask { piece, seg, depth }, Some(sealed)) => {
                self.on_ask(ctx, msg.from, sealed, (piece, seg, depth))
            }
            (a @ Wire::Answer { .. }, None) => self.on_answer(ctx, msg.from, a),
            _ => self.stats.refused += 1,
        }
    }

    fn peer_failed(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        let held: Vec<u64> = self
            .pieces
            .iter()
            .filter(|(_, p)| p.to == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.resend_piece(ctx, id);
        }
    }

    fn leave(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        let own: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.parent, Parent::Origin))
            .map(|(id, _)| *id)
            .collect();
        for id in own {
            if let Some(j) = self.jobs.remove(&id) {
                self.events.push_back(CensusEvent::Done(Outcome {
                    seq: j.seq,
                    sum: j.sum,
                    rows: j.rows,
                    complete: false,
                    started: j.started,
                    finished: now,
                    estimate: None,
                }));
            }
        }
        self.jobs.clear();
        self.pieces.clear();
        self.deadlines.clear();
        self.asked.clear();
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if self.pieces.contains_key(&id) {
                self.resend_piece(ctx, id);
            }
        }
    }

    fn uses_link(&self, peer: &P) -> bool {
        self.pieces.values().any(|p| p.to == *peer)
    }
}

/// The census as calls on a [`Node`] that runs [`Census`].
pub trait CensusExt<P: PeerId> {
    /// See [`Census::start`].
    fn census(&mut self, now: Time, rows: u32) -> Result<u64, CommandError>;

    /// See [`Census::set_local`] (nothing without the service).
    fn set_census_figures(&mut self, figures: Figures);
}

impl<P: PeerId> CensusExt<P> for Node<P> {
    fn census(&mut self, now: Time, rows: u32) -> Result<u64, CommandError> {
        self.command::<Census<P>, _>(now, |c, ctx| c.start(ctx, rows))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn set_census_figures(&mut self, figures: Figures) {
        if let Some(c) = self.service_mut::<Census<P>>() {
            c.set_local(figures);
        }
    }
}
