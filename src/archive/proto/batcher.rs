//! Pure: the archive's batch builder and ack accounting, one per stream.
//!
//! Events in: [`Batcher::handle_delivery`] (a JetStream delivery as plain
//! data, with an opaque `token` the driver acks with),
//! [`Batcher::handle_timeout`], [`Batcher::handle_committed`] and
//! [`Batcher::handle_failed`] (the outcome of the last [`Action::Write`]),
//! [`Batcher::handle_stop`] and [`Batcher::handle_rewound`]. Work out:
//! [`Batcher::poll`] ([`Action`]s, in order) and [`Batcher::poll_timeout`]
//! (when to call `handle_timeout`). The driver owns the consumer, the
//! database session and the clock.
//!
//! A batch closes when it holds `batch_len_max` messages or
//! `flush_interval` after its first, whichever comes first. Closed batches
//! are written one at a time, in delivery order; up to
//! `batches_queued_max` wait while one is written (decoded ahead), and
//! while that many wait [`Batcher::wants_deliveries`] says stop reading.
//!
//! **Invariants** (proved by the property tests against a simulated
//! consumer, `batcher/sim.rs`):
//! - nothing is acked before the transaction holding its row committed;
//! - under ack policy all, an ack never covers a message still held
//!   uncommitted, and after a delivery went missing (a consumer-sequence
//!   gap) nothing is acked until the consumer was rewound to its ack floor;
//! - every delivered message is committed (exactly once by stream sequence,
//!   thanks to the tables' unique keys) or left unacked for redelivery;
//! - a batch PostgreSQL refuses for good is bisected down to the refused
//!   messages, which become rejects with the server's reason; the stream
//!   goes on.

use super::batch::{Batch, OpsRow, Origin, RejectRow};
use super::commit::{CommitFailure, Retry};
use super::copy::CopyBuf;
use super::minutes::Minutes;
use super::rows::{self, OpsKind};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// How a batch's messages are acknowledged after its commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// Ack policy `explicit`: every message of a committed batch is acked.
    /// Safe across crashes, reconnects and several archivers sharing a
    /// durable; one small NATS publish per message.
    #[default]
    Explicit,
    /// Ack policy `all`: one ack covers every earlier delivery, including
    /// ones this process never saw: delivered to a crashed predecessor (so
    /// at start the consumer is rewound to its ack floor when it has
    /// unacked deliveries), or lost on the way (a consumer-sequence gap:
    /// nothing more is acked, and once what was taken is committed the
    /// consumer is rewound to its ack floor; the re-read rows are skipped).
    /// Needs a single archiver per durable: another client's deliveries
    /// look like losses and cause rewinds.
    All,
}

/// Which stream a batcher reads, hence how bodies become rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `TSPI`: telemetry rows (binary COPY).
    Telemetry,
    /// `TSPI_OPS`: tags, display commands, other operator events.
    Ops,
}

/// Reject label of a message PostgreSQL refused for good.
pub const REJECT_KIND_DATABASE: &str = "database";

#[derive(Clone, Debug, PartialEq)]
pub struct BatcherConfig {
    pub kind: Kind,
    /// Stream name, for reject rows.
    pub stream: &'static str,
    pub ack: AckMode,
    pub batch_len_max: usize,
    pub flush_interval: Duration,
    /// Closed batches held at most (one being written, the rest waiting)
    /// before [`Batcher::wants_deliveries`] says stop reading.
    pub batches_queued_max: usize,
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
}

/// One delivery, as plain data.
#[derive(Debug)]
pub struct Delivery<'a, T> {
    /// What the driver acks it with; handed back in an [`AckPlan`].
    pub token: T,
    /// 0: unknown (not a JetStream delivery).
    pub stream_seq: u64,
    /// 0: unknown (not used for gap detection).
    pub consumer_seq: u64,
    /// JetStream's delivery count (1: first delivery).
    pub delivered: u64,
    /// When JetStream stored it, µs since the Unix epoch.
    pub stream_unix_us: i64,
    pub subject: &'a str,
    /// The `Nats-Msg-Id` header.
    pub msg_id: Option<&'a str>,
    pub payload: Bytes,
}

/// Acks to send now: every message's (ack policy explicit) or one whose ack
/// covers every earlier delivery (ack policy all).
#[derive(Debug, PartialEq)]
pub struct AckPlan<T> {
    pub tokens: Vec<T>,
    /// Committed messages these acks account for.
    pub messages: u64,
}

/// Work for the driver.
#[derive(Debug, PartialEq)]
pub enum Action<T> {
    /// Write this batch in one transaction, then report its outcome with
    /// [`Batcher::handle_committed`] or [`Batcher::handle_failed`]. At most
    /// one write is outstanding.
    Write(Arc<Batch>),
    /// Committed: acknowledge.
    Ack(AckPlan<T>),
    /// Ack policy all, a delivery went missing, and everything taken before
    /// has been committed: drop the message stream, rewind the consumer to
    /// its ack floor, then call [`Batcher::handle_rewound`].
    Rewind,
}

/// What [`Batcher::handle_failed`] did with the batch, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written again at this time (transient failure).
    RetryAt(Duration),
    /// Permanent failure: split in two halves, written next.
    Split { messages: u64 },
    /// Permanent failure of one message: it goes to the rejects table.
    Refused { stream_seq: u64 },
}

/// What a message became in its batch.
#[derive(Clone, Debug)]
enum Content {
    /// A telemetry row: its bytes in the batch's COPY stream, and its day.
    Telemetry { bytes: Range<usize>, day: i32 },
    /// `Batch::ops[i]`.
    Ops(usize),
    /// `Batch::rejects[i]`.
    Reject(usize),
}

#[derive(Debug)]
struct Entry<T> {
    token: T,
    stream_seq: u64,
    stream_unix_us: i64,
    /// In the batch's `text`.
    subject: Range<usize>,
    msg_id: Option<Range<usize>>,
    /// In the batch's `bodies`: a copy, so the connection's read buffer the
    /// delivery arrived in is released at once rather than pinned until
    /// the batch commits. Only a refused message's reject row reads it.
    payload: Range<usize>,
    content: Content,
}

/// The batch being filled.
#[derive(Debug)]
struct Open<T> {
    copy: CopyBuf,
    days: Vec<i32>,
    minutes: Minutes,
    ops: Vec<OpsRow>,
    rejects: Vec<RejectRow>,
    entries: Vec<Entry<T>>,
    text: String,
    bodies: Vec<u8>,
    redelivered: bool,
    /// Ack policy all: a delivery went missing in this batch.
    no_ack: bool,
    deadline: Option<Duration>,
    /// Reused between telemetry rows.
    msg_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Writing,
    RetryAt(Duration),
}

/// A closed batch, until it commits.
#[derive(Debug)]
struct Flight<T> {
    batch: Arc<Batch>,
    entries: Vec<Entry<T>>,
    text: String,
    bodies: Vec<u8>,
    no_ack: bool,
    /// Lowest known stream sequence held (u64::MAX: none).
    seq_min: u64,
    state: State,
    /// The reject row of a message the database refused: a permanent
    /// failure of this cannot be narrowed further and is retried.
    refused: bool,
}

/// The state machine (see the module docs).
#[derive(Debug)]
pub struct Batcher<T> {
    cfg: BatcherConfig,
    open: Open<T>,
    queue: VecDeque<Flight<T>>,
    acks: VecDeque<AckPlan<T>>,
    /// Consumer sequence of the last delivery seen (at start: the
    /// consumer's delivered sequence).
    last_cseq: u64,
    /// Ack policy all: a delivery went missing; take nothing more, ack
    /// nothing more, rewind once all taken is committed.
    gap: bool,
    rewind_sent: bool,
    stopping: bool,
    backoff: Duration,
    /// Ack policy all: the committed, unacked delivery with the highest
    /// stream sequence, and the committed messages its ack accounts for.
    candidate: Option<(u64, T)>,
    owed: u64,
}

fn seq_min<T>(entries: &[Entry<T>]) -> u64 {
    entries
        .iter()
        .map(|e| e.stream_seq)
        .filter(|&s| s != 0)
        .min()
        .unwrap_or(u64::MAX)
}

impl<T> Batcher<T> {
    /// `last_consumer_seq`: the consumer's delivered sequence when the
    /// driver opened it (0 for a new consumer).
    pub fn new(cfg: BatcherConfig, last_consumer_seq: u64) -> Self {
        assert!(cfg.batch_len_max > 0 && cfg.batches_queued_max > 0);
        let rows = if cfg.kind == Kind::Telemetry {
            cfg.batch_len_max
        } else {
            0
        };
        Batcher {
            open: Open {
                copy: CopyBuf::with_capacity(64 + rows * 320),
                days: Vec::new(),
                minutes: Minutes::default(),
                ops: Vec::new(),
                rejects: Vec::new(),
                entries: Vec::with_capacity(cfg.batch_len_max),
                text: String::new(),
                bodies: Vec::new(),
                redelivered: false,
                no_ack: false,
                deadline: None,
                msg_id: String::with_capacity(32),
            },
            queue: VecDeque::new(),
            acks: VecDeque::new(),
            last_cseq: last_consumer_seq,
            gap: false,
            rewind_sent: false,
            stopping: false,
            backoff: cfg.retry_backoff_initial,
            candidate: None,
            owed: 0,
            cfg,
        }
    }

    /// Whether the driver should read the next delivery: not stopping, no
    /// rewind pending, and room for another closed batch.
    pub fn wants_deliveries(&self) -> bool {
        !self.stopping && !self.gap && self.queued_messages() < self.queued_messages_max()
    }

    fn queued_messages(&self) -> usize {
        self.queue.iter().map(|f| f.entries.len()).sum()
    }

    fn queued_messages_max(&self) -> usize {
        self.cfg.batch_len_max * self.cfg.batches_queued_max
    }

    /// Messages taken and not yet committed.
    pub fn held(&self) -> usize {
        self.queued_messages() + self.open.entries.len()
    }

    /// Nothing held, nothing to ack: a drain is complete.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.open.entries.is_empty() && self.acks.is_empty()
    }

    /// Take a delivery. Returns false if it was not taken (stopping, or a
    /// rewind is pending): its token is dropped unacked, so it comes again.
    pub fn handle_delivery(&mut self, now: Duration, d: Delivery<'_, T>) -> bool {
        if self.stopping || self.gap {
            return false;
        }
        // Every delivery, redeliveries too, takes the next consumer
        // sequence: a jump means one never reached us (lost in a
        // reconnect). Under ack policy all, any later ack would cover it.
        // The first delivery too: the driver passes the consumer's
        // delivered sequence when it opened it, so a first delivery lost
        // after a start or a rewind is a gap as well.
        if self.cfg.ack == AckMode::All
            && d.consumer_seq != 0
            && d.consumer_seq != self.last_cseq + 1
        {
            self.gap = true;
            self.open.no_ack = true;
        }
        if d.consumer_seq != 0 {
            self.last_cseq = d.consumer_seq;
        }
        if self.open.entries.is_empty() {
            self.open.deadline = Some(now + self.cfg.flush_interval);
        }
        self.add(d);
        if self.open.entries.len() >= self.cfg.batch_len_max || self.gap {
            self.close();
        }
        true
    }

    fn add(&mut self, d: Delivery<'_, T>) {
        let o = &mut self.open;
        o.redelivered |= d.delivered > 1 || d.stream_seq == 0;
        let start = o.text.len();
        o.text.push_str(d.subject);
        let subject = start..o.text.len();
        let msg_id = d.msg_id.map(|id| {
            let start = o.text.len();
            o.text.push_str(id);
            start..o.text.len()
        });
        let origin = || Origin {
            subject: d.subject.to_owned(),
            msg_id: d.msg_id.map(str::to_owned),
            stream_seq: d.stream_seq,
            stream_unix_us: d.stream_unix_us,
        };
        let stream = self.cfg.stream;
        let reject = |o: &mut Open<T>, r: rows::Reject| {
            o.rejects.push(RejectRow {
                stream,
                origin: origin(),
                kind: r.label(),
                reason: r.to_string(),
                body: d.payload.clone(),
            });
            Content::Reject(o.rejects.len() - 1)
        };
        let content = match self.cfg.kind {
            Kind::Telemetry => match rows::decode_telemetry(&d.payload, Some(d.subject)) {
                Ok(row) => {
                    o.msg_id.clear();
                    match d.msg_id {
                        Some(id) => o.msg_id.push_str(id),
                        None => crate::message::write_msg_id(&row.frame, &mut o.msg_id),
                    }
                    let start = o.copy.bytes().len();
                    o.copy.telemetry(&row, &o.msg_id, d.stream_seq);
                    o.minutes
                        .add(row.recv_unix_us, i32::from(row.frame.sensor_id));
                    let day = row.day_index();
                    if !o.days.contains(&day) {
                        o.days.push(day);
                    }
                    Content::Telemetry {
                        bytes: start..o.copy.bytes().len(),
                        day,
                    }
                }
                Err(r) => reject(o, r),
            },
            Kind::Ops => {
                let row = match rows::ops_kind(d.subject) {
                    OpsKind::Tag => rows::decode_tag(&d.payload)
                        .map(|t| OpsRow::Tag(t, origin(), d.payload.clone()))
                        .map_err(rows::Reject::from),
                    OpsKind::Command => rows::decode_command(&d.payload)
                        .map(|c| OpsRow::Command(c, origin(), d.payload.clone()))
                        .map_err(rows::Reject::from),
                    OpsKind::Event => Ok(OpsRow::Event(
                        origin(),
                        d.payload.clone(),
                        rows::event_json(&d.payload),
                    )),
                };
                match row {
                    Ok(row) => {
                        o.ops.push(row);
                        Content::Ops(o.ops.len() - 1)
                    }
                    Err(r) => reject(o, r),
                }
            }
        };
        o.entries.push(Entry {
            token: d.token,
            stream_seq: d.stream_seq,
            stream_unix_us: d.stream_unix_us,
            subject,
            msg_id,
            payload: {
                let start = o.bodies.len();
                o.bodies.extend_from_slice(&d.payload);
                start..o.bodies.len()
            },
            content,
        });
    }

    /// Close the open batch (if it holds anything) into the queue.
    fn close(&mut self) {
        let o = &mut self.open;
        if o.entries.is_empty() {
            return;
        }
        let copy_rows = o.copy.rows();
        let copy = if copy_rows > 0 {
            Bytes::from(o.copy.finish())
        } else {
            Bytes::new()
        };
        o.copy.clear();
        let mut days = std::mem::take(&mut o.days);
        days.sort_unstable();
        let entries = std::mem::replace(&mut o.entries, Vec::with_capacity(self.cfg.batch_len_max));
        let batch = Batch {
            copy,
            copy_rows,
            days,
            minutes: o.minutes.take(),
            redelivered: std::mem::take(&mut o.redelivered),
            ops: std::mem::take(&mut o.ops),
            rejects: std::mem::take(&mut o.rejects),
            messages: entries.len() as u64,
            last_stream_unix_us: entries.last().map_or(0, |e| e.stream_unix_us),
        };
        self.queue.push_back(Flight {
            batch: Arc::new(batch),
            seq_min: seq_min(&entries),
            entries,
            text: std::mem::take(&mut o.text),
            bodies: {
                // The next batch is about as large: no regrowth.
                let len = o.bodies.len();
                std::mem::replace(&mut o.bodies, Vec::with_capacity(len))
            },
            no_ack: std::mem::take(&mut o.no_ack),
            state: State::Ready,
            refused: false,
        });
        o.deadline = None;
    }

    /// When [`Batcher::handle_timeout`] is next due: the open batch's flush
    /// deadline or the head batch's retry time.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let retry = match self.queue.front().map(|f| f.state) {
            Some(State::RetryAt(t)) => Some(t),
            _ => None,
        };
        match (self.open.deadline, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Duration) {
        if self.open.deadline.is_some_and(|d| d <= now) {
            self.close();
        }
        if let Some(f) = self.queue.front_mut()
            && let State::RetryAt(t) = f.state
            && t <= now
        {
            f.state = State::Ready;
        }
    }

    /// Stop taking deliveries; the open batch closes and is written. Keep
    /// driving until [`Batcher::is_idle`] (or the drain times out).
    pub fn handle_stop(&mut self) {
        self.stopping = true;
        self.close();
    }

    /// The consumer was rewound (after [`Action::Rewind`]); deliveries
    /// continue from `consumer_seq`, its delivered sequence.
    pub fn handle_rewound(&mut self, consumer_seq: u64) {
        debug_assert!(self.queue.is_empty() && self.open.entries.is_empty());
        self.gap = false;
        self.rewind_sent = false;
        self.last_cseq = consumer_seq;
        // Committed but never acked: the rewound consumer delivers them
        // again and the unique keys skip their rows.
        self.candidate = None;
        self.owed = 0;
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Action<T>> {
        if let Some(a) = self.acks.pop_front() {
            return Some(Action::Ack(a));
        }
        if let Some(f) = self.queue.front_mut() {
            if f.state == State::Ready {
                f.state = State::Writing;
                return Some(Action::Write(f.batch.clone()));
            }
            return None;
        }
        // Stopping: no rewind; the next start rewinds a consumer with
        // unacked deliveries anyway.
        if self.gap && !self.rewind_sent && !self.stopping && self.open.entries.is_empty() {
            self.rewind_sent = true;
            return Some(Action::Rewind);
        }
        None
    }

    fn head_writing(&mut self) -> Flight<T> {
        let f = self.queue.pop_front();
        assert!(
            f.as_ref().is_some_and(|f| f.state == State::Writing),
            "a write outcome without a write outstanding"
        );
        f.unwrap_or_else(|| unreachable!())
    }

    /// The outstanding write committed.
    pub fn handle_committed(&mut self, _now: Duration) {
        let f = self.head_writing();
        self.backoff = self.cfg.retry_backoff_initial;
        let messages = f.entries.len() as u64;
        match self.cfg.ack {
            AckMode::Explicit => self.acks.push_back(AckPlan {
                tokens: f.entries.into_iter().map(|e| e.token).collect(),
                messages,
            }),
            AckMode::All => {
                if f.no_ack || self.gap {
                    return;
                }
                for e in f.entries {
                    if self
                        .candidate
                        .as_ref()
                        .is_none_or(|(s, _)| e.stream_seq >= *s)
                    {
                        self.candidate = Some((e.stream_seq, e.token));
                    }
                }
                self.owed += messages;
                self.release_ack_all();
            }
        }
    }

    /// Ack policy all: ack the candidate if that covers nothing still held
    /// (a redelivery, or the rest of a bisected batch, may hold a lower
    /// stream sequence than a committed one).
    fn release_ack_all(&mut self) {
        let held_min = self
            .queue
            .iter()
            .map(|f| f.seq_min)
            .chain(std::iter::once(seq_min(&self.open.entries)))
            .min()
            .unwrap_or(u64::MAX);
        if self.candidate.as_ref().is_some_and(|(s, _)| *s < held_min)
            && let Some((_, token)) = self.candidate.take()
        {
            self.acks.push_back(AckPlan {
                tokens: vec![token],
                messages: std::mem::take(&mut self.owed),
            });
        }
    }

    /// The outstanding write failed. Transient: the same batch again after
    /// the backoff. Permanent: split in halves (written next, no backoff);
    /// a single message becomes a reject row with the server's reason.
    pub fn handle_failed(&mut self, now: Duration, failure: CommitFailure) -> Outcome {
        let mut f = self.head_writing();
        if failure.retry == Retry::Permanent && !f.refused {
            if f.entries.len() > 1 {
                let messages = f.entries.len() as u64;
                let right = f.entries.split_off(f.entries.len() / 2);
                let b = self.sub_flight(&f, right);
                let left = std::mem::take(&mut f.entries);
                let a = self.sub_flight(&f, left);
                self.queue.push_front(b);
                self.queue.push_front(a);
                return Outcome::Split { messages };
            }
            let e = f
                .entries
                .pop()
                .unwrap_or_else(|| unreachable!("a flight is never empty"));
            let stream_seq = e.stream_seq;
            let reject = RejectRow {
                stream: self.cfg.stream,
                origin: Origin {
                    subject: f.text[e.subject.clone()].to_owned(),
                    msg_id: e.msg_id.clone().map(|r| f.text[r].to_owned()),
                    stream_seq: e.stream_seq,
                    stream_unix_us: e.stream_unix_us,
                },
                kind: REJECT_KIND_DATABASE,
                reason: failure.reason,
                body: Bytes::copy_from_slice(&f.bodies[e.payload.clone()]),
            };
            let batch = Batch {
                redelivered: f.batch.redelivered,
                rejects: vec![reject],
                messages: 1,
                last_stream_unix_us: e.stream_unix_us,
                ..Batch::default()
            };
            self.queue.push_front(Flight {
                batch: Arc::new(batch),
                seq_min: seq_min(std::slice::from_ref(&e)),
                entries: vec![Entry {
                    content: Content::Reject(0),
                    ..e
                }],
                text: f.text,
                bodies: f.bodies,
                no_ack: f.no_ack,
                state: State::Ready,
                refused: true,
            });
            return Outcome::Refused { stream_seq };
        }
        let at = now + self.backoff;
        self.backoff = crate::backoff::Backoff::new(
            self.cfg.retry_backoff_initial,
            self.cfg.retry_backoff_max,
        )
        .next(self.backoff);
        f.state = State::RetryAt(at);
        self.queue.push_front(f);
        Outcome::RetryAt(at)
    }

    /// A flight of some of `parent`'s entries (in order), its batch rebuilt
    /// from the parent's: COPY rows copied as bytes, operator rows and
    /// rejects cloned.
    fn sub_flight(&self, parent: &Flight<T>, entries: Vec<Entry<T>>) -> Flight<T> {
        let p = &parent.batch;
        let mut copy = CopyBuf::with_capacity(0);
        let mut days = Vec::new();
        let mut minutes = Minutes::default();
        let mut ops = Vec::new();
        let mut rejects = Vec::new();
        let entries: Vec<Entry<T>> = entries
            .into_iter()
            .map(|e| {
                let content = match &e.content {
                    Content::Telemetry { bytes, day } => {
                        let start = copy.bytes().len();
                        let row = &p.copy[bytes.clone()];
                        copy.push_row_bytes(row);
                        // The parent's rows were encoded here: the prefix is there.
                        let _ = minutes.add_copy_row(row);
                        if !days.contains(day) {
                            days.push(*day);
                        }
                        Content::Telemetry {
                            bytes: start..copy.bytes().len(),
                            day: *day,
                        }
                    }
                    Content::Ops(i) => {
                        ops.push(p.ops[*i].clone());
                        Content::Ops(ops.len() - 1)
                    }
                    Content::Reject(i) => {
                        rejects.push(p.rejects[*i].clone());
                        Content::Reject(rejects.len() - 1)
                    }
                };
                Entry { content, ..e }
            })
            .collect();
        days.sort_unstable();
        let copy_rows = copy.rows();
        let batch = Batch {
            copy: if copy_rows > 0 {
                Bytes::from(copy.finish())
            } else {
                Bytes::new()
            },
            copy_rows,
            days,
            minutes: minutes.take(),
            redelivered: p.redelivered,
            ops,
            rejects,
            messages: entries.len() as u64,
            last_stream_unix_us: entries.last().map_or(0, |e| e.stream_unix_us),
        };
        Flight {
            batch: Arc::new(batch),
            seq_min: seq_min(&entries),
            entries,
            text: parent.text.clone(),
            bodies: parent.bodies.clone(),
            no_ack: parent.no_ack,
            state: State::Ready,
            refused: false,
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
