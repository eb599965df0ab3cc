//! A simulated JetStream consumer and database around one [`Batcher`], with
//! time under the test's control and faults chosen by a seeded generator:
//! deliveries lost (a consumer-sequence gap), duplicated or reordered on the
//! way, redeliveries after `ack_wait`, writes that fail transiently, rows
//! the database refuses for good, and a crash and restart of the archiver.
//! It checks the invariants at every ack and at the end.

use super::*;
use crate::archive::proto::{CommitFailure, Retry};
use crate::codec::{self, vectors};
use crate::message::{Message, RecvTime};
use std::collections::{BTreeMap, BTreeSet};

/// A token: which delivery it acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub stream_seq: u64,
    pub consumer_seq: u64,
}

/// What happens to messages on the way, per mille of deliveries.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub lose: u32,
    pub duplicate: u32,
    pub reorder: u32,
    /// Of writes.
    pub write_fails: u32,
    /// Of steps: the archiver crashes (a write outstanding may or may not
    /// have committed) and a new one starts.
    pub crash: u32,
    /// Of steps: a drained stop (SIGTERM), then a new archiver starts.
    pub stop: u32,
}

/// SplitMix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn per_mille(&mut self, p: u32) -> bool {
        self.next() % 1000 < u64::from(p)
    }
}

/// How a message is meant to end in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Row,
    /// Its body does not decode: a reject row by the batcher.
    DecodeReject,
    /// The database refuses its row for good: a reject row `database`.
    Refused,
}

/// Message `seq`'s subject, id and body.
pub fn message(seq: u64, fate: Fate) -> (String, String, Bytes) {
    let mut f = codec::parse(&vectors::bytes(vectors::GEOCENTRIC_1)).unwrap();
    f.time_ticks = seq as u32 * 7;
    f.sensor_id = (seq % 50) as u16 + 1;
    let m = Message::encode(
        "tspi",
        &f,
        RecvTime::from_unix_ns(1_700_000_000_000_000_000),
    );
    let body = match fate {
        Fate::DecodeReject => Bytes::from_static(b"not cbor"),
        _ => Bytes::from(m.body),
    };
    (m.subject, m.msg_id, body)
}

/// The stream sequences of the telemetry rows in a binary COPY stream.
pub fn copy_seqs(copy: &[u8]) -> Vec<u64> {
    let mut seqs = Vec::new();
    if copy.is_empty() {
        return seqs;
    }
    let mut at = 19;
    loop {
        let n = i16::from_be_bytes([copy[at], copy[at + 1]]);
        at += 2;
        if n < 0 {
            return seqs;
        }
        let mut last = &copy[0..0];
        for _ in 0..n {
            let len = i32::from_be_bytes(copy[at..at + 4].try_into().unwrap());
            at += 4;
            if len >= 0 {
                last = &copy[at..at + len as usize];
                at += len as usize;
            }
        }
        seqs.push(i64::from_be_bytes(last.try_into().unwrap()) as u64);
    }
}

/// A row in the simulated database, by stream sequence (the unique key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    Telemetry,
    Reject(&'static str),
}

pub struct Sim {
    pub ack: AckMode,
    pub fates: Vec<Fate>,
    pub rng: Rng,
    pub faults: Faults,
    pub now: Duration,
    pub ack_wait: Duration,
    pub commit_latency: Duration,
    // --- server (consumer) ---
    /// Next stream sequence never delivered by this consumer.
    next_new: u64,
    cseq: u64,
    /// Delivered, not acked: stream seq -> (deliveries, last delivery time).
    pending: BTreeMap<u64, (u64, Duration)>,
    acked: BTreeSet<u64>,
    ack_floor: u64,
    /// Deliveries on the way to the client (for reordering).
    wire: VecDeque<(Token, u64)>,
    // --- database ---
    pub rows: BTreeMap<u64, Row>,
    pub commits: u64,
    /// The write outstanding and when it completes.
    writing: Option<(Arc<Batch>, Duration)>,
    // --- archiver ---
    pub b: Batcher<Token>,
    cfg: BatcherConfig,
    pub acks_sent: u64,
    pub rewinds: u64,
    pub crashes: u64,
    /// A drained stop is under way.
    stopping: bool,
    pub stops: u64,
}

impl Sim {
    pub fn new(
        ack: AckMode,
        fates: Vec<Fate>,
        seed: u64,
        faults: Faults,
        batch_len_max: usize,
    ) -> Sim {
        let cfg = BatcherConfig {
            kind: Kind::Telemetry,
            stream: "TSPI",
            ack,
            batch_len_max,
            flush_interval: Duration::from_millis(20),
            batches_queued_max: 2,
            retry_backoff_initial: Duration::from_millis(5),
            retry_backoff_max: Duration::from_millis(40),
        };
        Sim {
            ack,
            fates,
            rng: Rng(seed),
            faults,
            now: Duration::ZERO,
            ack_wait: Duration::from_millis(500),
            commit_latency: Duration::from_millis(3),
            next_new: 1,
            cseq: 0,
            pending: BTreeMap::new(),
            acked: BTreeSet::new(),
            ack_floor: 0,
            wire: VecDeque::new(),
            rows: BTreeMap::new(),
            commits: 0,
            writing: None,
            b: Batcher::new(cfg.clone(), 0),
            cfg,
            acks_sent: 0,
            rewinds: 0,
            crashes: 0,
            stopping: false,
            stops: 0,
        }
    }

    fn len(&self) -> u64 {
        self.fates.len() as u64
    }

    pub fn all_acked(&self) -> bool {
        (1..=self.len()).all(|s| self.acked.contains(&s))
    }

    /// The server hands the next delivery to the wire: a redelivery whose
    /// ack wait ran out, else the next new message.
    fn server_deliver(&mut self) {
        let max_ack_pending = self.cfg.batch_len_max * (self.cfg.batches_queued_max + 2);
        let due = self
            .pending
            .iter()
            .find(|(_, (_, at))| self.now >= *at + self.ack_wait)
            .map(|(s, _)| *s);
        let seq = match due {
            Some(s) => s,
            None if self.next_new <= self.len() && self.pending.len() < max_ack_pending => {
                self.next_new += 1;
                self.next_new - 1
            }
            None => return,
        };
        let p = self.pending.entry(seq).or_insert((0, self.now));
        p.0 += 1;
        p.1 = self.now;
        let delivered = p.0;
        self.cseq += 1;
        if self.rng.per_mille(self.faults.lose) {
            return;
        }
        let t = Token {
            stream_seq: seq,
            consumer_seq: self.cseq,
        };
        self.wire.push_back((t, delivered));
        if self.rng.per_mille(self.faults.duplicate) {
            self.wire.push_back((t, delivered));
        }
        if self.wire.len() >= 2 && self.rng.per_mille(self.faults.reorder) {
            let n = self.wire.len();
            self.wire.swap(n - 1, n - 2);
        }
    }

    fn client_receive(&mut self) {
        if !self.b.wants_deliveries() {
            return;
        }
        let Some((t, delivered)) = self.wire.pop_front() else {
            return;
        };
        let fate = self.fates[t.stream_seq as usize - 1];
        let (subject, msg_id, payload) = message(t.stream_seq, fate);
        self.b.handle_delivery(
            self.now,
            Delivery {
                token: t,
                stream_seq: t.stream_seq,
                consumer_seq: t.consumer_seq,
                delivered,
                stream_unix_us: 1_700_000_000_000_000 + t.stream_seq as i64,
                subject: &subject,
                msg_id: Some(&msg_id),
                payload,
            },
        );
    }

    /// Every message an ack from this token covers must have its row.
    fn server_ack(&mut self, t: Token) {
        let covered: Vec<u64> = match self.ack {
            AckMode::Explicit => vec![t.stream_seq],
            AckMode::All => (self.ack_floor + 1..=t.stream_seq)
                .filter(|s| !self.acked.contains(s))
                .collect(),
        };
        for s in covered {
            assert!(
                self.rows.contains_key(&s),
                "seq {s} acked (by {t:?}, {:?}) before its row committed",
                self.ack
            );
            self.acked.insert(s);
            self.pending.remove(&s);
        }
        while self.acked.contains(&(self.ack_floor + 1)) {
            self.ack_floor += 1;
        }
    }

    /// The database: a batch with a refused row fails for good; otherwise
    /// it may fail transiently; else its rows are inserted (existing keys
    /// skipped).
    fn db_write(&mut self, batch: &Batch) -> Result<(), CommitFailure> {
        let seqs = copy_seqs(&batch.copy);
        assert_eq!(seqs.len(), batch.copy_rows);
        if let Some(s) = seqs
            .iter()
            .find(|&&s| self.fates[s as usize - 1] == Fate::Refused)
        {
            return Err(CommitFailure {
                retry: Retry::Permanent,
                reason: format!("SQLSTATE 23514: seq {s} violates a check constraint"),
            });
        }
        if self.rng.per_mille(self.faults.write_fails) {
            return Err(CommitFailure {
                retry: Retry::Transient,
                reason: "SQLSTATE 40001: could not serialize".into(),
            });
        }
        self.commits += 1;
        for s in seqs {
            self.rows.entry(s).or_insert(Row::Telemetry);
        }
        for r in &batch.rejects {
            self.rows
                .entry(r.origin.stream_seq)
                .or_insert(Row::Reject(r.kind));
        }
        Ok(())
    }

    /// A new archiver process: its consumer's delivered sequence, or a
    /// rewind first under ack policy all when deliveries are unacked.
    fn start(&mut self) {
        self.wire.clear();
        let mut last_cseq = self.cseq;
        if self.ack == AckMode::All && !self.pending.is_empty() {
            // The driver's start-up rewind: a new consumer from the floor.
            self.rewind_server();
            last_cseq = 0;
        }
        self.b = Batcher::new(self.cfg.clone(), last_cseq);
    }

    fn crash(&mut self) {
        self.crashes += 1;
        self.stopping = false;
        // A write in flight may have committed before the crash.
        if let Some((batch, _)) = self.writing.take()
            && self.rng.per_mille(500)
        {
            let _ = self.db_write(&batch);
        }
        self.start();
    }

    fn rewind_server(&mut self) {
        self.rewinds += 1;
        self.wire.clear();
        self.pending.clear();
        self.next_new = self.ack_floor + 1;
        self.cseq = 0;
        // Acked above the floor (explicit only) stays acked; under ack
        // policy all nothing is acked above the floor.
        self.acked
            .retain(|&s| s <= self.ack_floor || self.ack == AckMode::Explicit);
    }

    /// One millisecond of simulated time.
    pub fn step(&mut self) {
        self.now += Duration::from_millis(1);
        if self.rng.per_mille(self.faults.crash) {
            self.crash();
        }
        if !self.stopping && self.rng.per_mille(self.faults.stop) {
            self.stopping = true;
            self.b.handle_stop();
        }
        if self.stopping && self.b.is_idle() && self.writing.is_none() {
            // Drained: everything taken is committed and acked.
            assert_eq!(self.b.held(), 0);
            self.stopping = false;
            self.stops += 1;
            self.start();
        }
        for _ in 0..4 {
            self.server_deliver();
            self.client_receive();
        }
        if let Some((batch, at)) = self.writing.clone()
            && at <= self.now
        {
            self.writing = None;
            match self.db_write(&batch) {
                Ok(()) => self.b.handle_committed(self.now),
                Err(f) => {
                    self.b.handle_failed(self.now, f);
                }
            }
        }
        if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
            self.b.handle_timeout(self.now);
        }
        while let Some(a) = self.b.poll() {
            match a {
                Action::Write(batch) => {
                    assert!(self.writing.is_none(), "two writes outstanding");
                    self.writing = Some((batch, self.now + self.commit_latency));
                }
                Action::Ack(plan) => {
                    assert!(!plan.tokens.is_empty());
                    if self.ack == AckMode::All {
                        assert_eq!(plan.tokens.len(), 1, "one ack per plan under ack all");
                    }
                    for t in plan.tokens {
                        self.server_ack(t);
                    }
                    self.acks_sent += 1;
                }
                Action::Rewind => {
                    assert_eq!(self.ack, AckMode::All);
                    assert!(self.writing.is_none() && self.b.held() == 0);
                    self.rewind_server();
                    self.b.handle_rewound(0);
                }
            }
        }
    }

    /// Run until every message is acked (or panic after `steps_max`), then
    /// check the database: every message has exactly its row.
    pub fn run(&mut self, steps_max: u64) {
        let mut steps = 0;
        while !self.all_acked() {
            self.step();
            steps += 1;
            assert!(
                steps < steps_max,
                "stalled: acked {} of {}, floor {}, held {}, rows {}, {:?}",
                self.acked.len(),
                self.len(),
                self.ack_floor,
                self.b.held(),
                self.rows.len(),
                self.b.poll_timeout()
            );
        }
        for (i, fate) in self.fates.iter().enumerate() {
            let seq = i as u64 + 1;
            let want = match fate {
                Fate::Row => Row::Telemetry,
                Fate::DecodeReject => Row::Reject("cbor"),
                Fate::Refused => Row::Reject(REJECT_KIND_DATABASE),
            };
            assert_eq!(self.rows.get(&seq), Some(&want), "seq {seq}");
        }
        assert_eq!(self.rows.len() as u64, self.len());
    }
}
