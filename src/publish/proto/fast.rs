//! The fast-ingest batch publisher as a state machine (ADR-50 on core
//! publishes; the wire is in [`super::wire`], flow control in
//! [`super::flow`]).
//!
//! One batch is open at a time. Frames are published into it while the flow
//! window allows; each stays owned here until a flow ack or the commit
//! covers it. A batch is committed when it is long (`batch_len_max`), old
//! (`batch_age_max`), the input has been idle for `idle_commit`, its window
//! is outgrown by the backlog ([`super::flow::outgrown`]), or on stop. Any
//! gap, error, unsent message or `ack_timeout` of silence ends the batch: its
//! unacknowledged frames go back to the front of the retry queue, due after
//! a backoff, and are published again, same frame (same `Nats-Msg-Id`), in
//! the next batch, which opens with at most half the ended batch's flow
//! (at least 1; each commit doubles it back towards `flow`): a batch keeps
//! only what a flow ack confirmed, so under per-message loss a batch retried
//! at the same flow can keep next to nothing, try after try. A server that
//! refuses fast batches (error 10205/10206)
//! ends the mode: every frame not acknowledged is handed back
//! ([`FastBatcher::take_queued`]) for the pipelined publisher.
//!
//! Calling sequence, one driver iteration (see [`crate::publish`]'s
//! `driver.rs`):
//! 1. answer every [`Event::StreamPositionWanted`] from [`FastBatcher::poll_event`]
//!    with [`FastBatcher::handle_stream_position`]; stop on [`Event::Done`]
//!    or [`Event::FellBack`];
//! 2. [`FastBatcher::handle_reply`] for each reply that arrived;
//!    [`FastBatcher::close_input`] once the input is closed;
//!    [`FastBatcher::handle_timeout`];
//! 3. while [`FastBatcher::wants_frame`], [`FastBatcher::push`] a frame, and
//!    publish every [`FastBatcher::poll_transmit`], answering each with
//!    [`FastBatcher::handle_send_result`] before the next poll;
//! 4. drain [`FastBatcher::poll_acked`]; wait for a reply, a frame or
//!    [`FastBatcher::poll_timeout`].
//!
//! Nothing here allocates per frame once the queues have grown to the
//! window: frames move between reused `VecDeque`s, reply subjects are
//! written into one reused `String`.

use super::flow::{Window, choose_flow, duplicates_in_batch, outgrown};
use super::wire::{Op, Reply, batch_of, classify, refuses_fast_batches, reply_subject};
use super::{Backoff, Nanos, nanos};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

pub use super::flow::FLOW_MAX;

/// Fast-ingest settings (from `[publish]`).
#[derive(Clone, Debug)]
pub struct FastConfig {
    /// Largest flow asked for: a flow ack at most every this many messages
    /// (1..=500).
    pub flow: u16,
    /// Target time between flow acks: each batch opens with the flow that
    /// gives this at the recent rate ([`choose_flow`]); zero always asks for
    /// `flow`.
    pub ack_interval: Duration,
    /// Flow periods that may be unacknowledged at once (2 or 3).
    pub outstanding: u16,
    /// Commit and start a new batch after this many messages.
    pub batch_len_max: u64,
    /// ... or after this long.
    pub batch_age_max: Duration,
    /// ... or when no frame has arrived for this long (acks the tail that
    /// has not filled a flow period).
    pub idle_commit: Duration,
    /// No reply for this long while waiting for one: the batch is over.
    pub ack_timeout: Duration,
    /// The stream written to (the driver asks it for its last sequence).
    pub stream: String,
}

/// A frame as the state machine sees it: opaque, except for the subject a
/// batch's commit and pings are sent to (the batch's first frame's).
pub trait Frame {
    /// Cheap to clone (cloned once per batch).
    type Subject: Clone;
    fn subject(&self) -> &Self::Subject;
}

/// A publish to make now.
#[derive(Debug)]
pub enum Transmit<'a, F: Frame> {
    /// Publish `frame` (its subject, headers and body) with reply subject
    /// `reply`. `first_attempt`: the frame's first publish (for the
    /// receive-to-publish latency).
    Message {
        frame: &'a F,
        reply: &'a str,
        first_attempt: bool,
    },
    /// An empty control message to `subject` with reply subject `reply`: the
    /// batch's commit ([`Op::CommitEob`]) or a ping ([`Op::Ping`]).
    Control {
        subject: &'a F::Subject,
        reply: &'a str,
        op: Op,
    },
}

/// A frame JetStream has acknowledged (stored, or found a duplicate).
#[derive(Debug)]
pub struct Acked<F> {
    pub frame: F,
    /// When it was last published.
    pub sent: Nanos,
    /// When the acknowledgement arrived.
    pub at: Nanos,
}

/// A frame handed back on fall-back ([`FastBatcher::take_queued`]).
#[derive(Debug)]
pub struct Queued<F> {
    /// Due to be published again at.
    pub due: Nanos,
    /// Times published so far.
    pub attempts: u32,
    pub frame: F,
}

/// Why a batch ended before its commit was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A message or the commit could not be sent (the client's error).
    NotSent(String),
    /// The first flow ack did not come within `ack_timeout`.
    NotConfirmed { waited: Duration },
    /// No reply for `ack_timeout`.
    Silent { quiet: Duration },
    /// The server missed messages `from..=to`.
    Gap { from: u64, to: u64 },
    /// The server refused a message or the batch.
    ServerError {
        seq: Option<u64>,
        code: u64,
        description: String,
    },
    /// A reply this client cannot read (a protocol change?).
    BadReply(super::wire::ReplyError),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::NotSent(e) => write!(f, "publish not sent: {e}"),
            EndReason::NotConfirmed { waited } => {
                write!(f, "batch not confirmed within {} ms", waited.as_millis())
            }
            EndReason::Silent { quiet } => write!(f, "no reply for {} ms", quiet.as_millis()),
            EndReason::Gap { from, to } => write!(f, "server missed batch messages {from}..{to}"),
            EndReason::ServerError {
                seq,
                code,
                description,
            } => write!(f, "server error {code} at {seq:?}: {description}"),
            EndReason::BadReply(e) => std::fmt::Display::fmt(e, f),
        }
    }
}

/// What happened, for the driver to act on or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Ask the stream for its last sequence and answer with
    /// [`FastBatcher::handle_stream_position`] (`None` if it does not
    /// answer). No new batch opens until then.
    StreamPositionWanted,
    /// A batch's commit was acknowledged.
    Committed {
        batch: u64,
        stream_seq: u64,
        count: u64,
        sent: u64,
    },
    /// A batch ended early; `requeued` frames go round again after a
    /// backoff.
    Ended {
        batch: u64,
        reason: EndReason,
        requeued: u64,
    },
    /// The server refuses fast batches: publish pipelined from now on,
    /// starting with [`FastBatcher::take_queued`].
    FellBack { reason: EndReason },
    /// The drain timeout passed: `failed` frames (ring frames included) are
    /// given up.
    DrainTimedOut { failed: u64 },
    /// Input closed and everything taken is accounted for. Nothing more
    /// will happen.
    Done,
}

/// The state machine's counters (the driver mirrors them into
/// [`crate::publish::PublisherStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastCounts {
    /// Frames taken ([`FastBatcher::push`], plus ring frames given up at the
    /// drain timeout).
    pub taken: u64,
    /// Messages published, retries included (not commits or pings).
    pub published: u64,
    /// Frames acknowledged (duplicates included).
    pub acked: u64,
    /// Frames the server found duplicate (from commits, see
    /// [`duplicates_in_batch`]; an undercount when a position is unknown).
    pub duplicate: u64,
    /// Frames put back for another publish after their batch ended.
    pub retried: u64,
    /// Frames given up at the drain timeout.
    pub failed: u64,
    /// Frames handed back on fall-back ([`FastBatcher::take_queued`]).
    pub handed_back: u64,
    /// Batches committed.
    pub batches: u64,
}

#[derive(Debug)]
pub(super) struct Slot<F> {
    pub(super) frame: F,
    /// Times published.
    pub(super) attempts: u32,
    /// Last published at.
    pub(super) sent: Nanos,
}

#[derive(Debug)]
struct Batch<S> {
    id: u64,
    window: Window,
    first_subject: S,
    opened: Nanos,
    /// Last time the server said anything about this batch (or it opened).
    heard: Nanos,
    last_ping: Nanos,
    committing: bool,
    /// The stream's last sequence before this batch, when known.
    stream_before: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    FellBack,
    Done,
}

/// The fast-batch publisher, without I/O. See the module docs.
#[derive(Debug)]
pub struct FastBatcher<F: Frame> {
    prefix: String,
    cfg: FastConfig,
    ack_timeout: Nanos,
    backoff: Backoff,
    drain_timeout: Nanos,
    state: State,
    batch: Option<Batch<F::Subject>>,
    next_id: u64,
    /// `unacked[i]` has batch sequence `window.acked + 1 + i`.
    unacked: VecDeque<Slot<F>>,
    /// Frames to publish again, oldest first, each due at its time.
    pub(super) retries: VecDeque<(Nanos, Slot<F>)>,
    /// A frame pushed and not yet published.
    offered: Option<Slot<F>>,
    pub(super) acked: VecDeque<Acked<F>>,
    /// Frames given up at the drain deadline ([`Self::take_given_up`]).
    given_up: Vec<Queued<F>>,
    events: VecDeque<Event>,
    /// The publish handed out by `poll_transmit` whose result is awaited.
    sending: Option<Op>,
    reply: String,
    last_frame: Nanos,
    /// Frames taken since this instant: the rate the next flow is for.
    rate_mark: (Nanos, u64),
    stream_last: Option<u64>,
    /// The largest flow the next batch may open with: `cfg.flow` at first,
    /// halved (to the failed batch's flow / 2, at least 1) when a batch
    /// ends early, doubled back towards `cfg.flow` by each commit.
    flow_ceiling: u16,
    position_wanted: bool,
    /// A committed batch whose stream sequence the server did not say
    /// (`before`, `count`), settled by the next stream position.
    unsettled: Option<(u64, u64)>,
    drain_deadline: Option<Nanos>,
    pub(super) counts: FastCounts,
}

impl<F: Frame> FastBatcher<F> {
    /// A publisher whose batches' reply subjects start with `prefix` (the
    /// driver subscribes to `<prefix>.>`). Its first event asks for the
    /// stream's position.
    pub fn new(
        prefix: String,
        cfg: FastConfig,
        backoff: Backoff,
        drain_timeout: Duration,
        now: Nanos,
    ) -> Self {
        assert!(cfg.batch_len_max > 0, "batch_len_max must be positive");
        let mut events = VecDeque::with_capacity(8);
        let flow_ceiling = cfg.flow.clamp(1, FLOW_MAX);
        events.push_back(Event::StreamPositionWanted);
        FastBatcher {
            prefix,
            ack_timeout: nanos(cfg.ack_timeout),
            cfg,
            backoff,
            drain_timeout: nanos(drain_timeout),
            state: State::Running,
            batch: None,
            next_id: 1,
            unacked: VecDeque::new(),
            retries: VecDeque::new(),
            offered: None,
            acked: VecDeque::new(),
            given_up: Vec::new(),
            events,
            sending: None,
            reply: String::with_capacity(96),
            last_frame: now,
            rate_mark: (now, 0),
            stream_last: None,
            flow_ceiling,
            position_wanted: true,
            unsettled: None,
            drain_deadline: None,
            counts: FastCounts::default(),
        }
    }

    pub fn counts(&self) -> FastCounts {
        self.counts
    }

    /// The largest flow the next batch may open with: `flow` from the
    /// config, halved by each batch that ends early, doubled back by each
    /// commit.
    pub fn flow_ceiling(&self) -> u16 {
        self.flow_ceiling
    }

    /// Frames published in the open batch and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.unacked.len() as u64
    }

    /// Frames taken and waiting to be published (again).
    pub fn queued(&self) -> u64 {
        self.retries.len() as u64 + u64::from(self.offered.is_some())
    }

    /// The account: `taken = acked + failed + handed_back + in_flight +
    /// queued` holds after every call (frames still to be polled from
    /// [`Self::poll_acked`] count as acked).
    pub fn balanced(&self) -> bool {
        let c = &self.counts;
        c.taken == c.acked + c.failed + c.handed_back + self.in_flight() + self.queued()
    }

    /// Would a frame pushed now be published at once? (The batch can take
    /// one, and no frame is waiting already.)
    pub fn wants_frame(&self) -> bool {
        self.state == State::Running
            && self.offered.is_none()
            && self.sending.is_none()
            && match &self.batch {
                None => !self.position_wanted,
                Some(b) => self.sendable(b),
            }
    }

    fn sendable(&self, b: &Batch<F::Subject>) -> bool {
        b.window.confirmed
            && !b.committing
            && !b.window.stalled()
            && b.window.sent < self.cfg.batch_len_max
    }

    /// Take a frame (from a ring). Call only when [`Self::wants_frame`].
    pub fn push(&mut self, now: Nanos, frame: F) {
        assert!(self.wants_frame(), "push without wants_frame");
        self.counts.taken += 1;
        self.offered = Some(Slot {
            frame,
            attempts: 0,
            sent: now,
        });
    }

    /// The input is closed: drain what is taken, commit, and finish (or
    /// give up at the drain timeout).
    pub fn close_input(&mut self, now: Nanos) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(now.saturating_add(self.drain_timeout));
        }
    }

    /// The next publish to make. Answer it with
    /// [`Self::handle_send_result`] before polling again. `ring_frames`
    /// counts the frames waiting in the rings now; it is called only when a
    /// decision needs it (a batch opening, a commit check), so the driver
    /// does not read the rings' shared indices once per frame.
    pub fn poll_transmit(
        &mut self,
        now: Nanos,
        ring_frames: impl FnOnce() -> u64,
    ) -> Option<Transmit<'_, F>> {
        assert!(self.sending.is_none(), "poll_transmit before send result");
        if self.state != State::Running {
            return None;
        }
        // 1. A frame: due retries first (they are oldest), then the offered.
        let can_send = match &self.batch {
            None => !self.position_wanted,
            Some(b) => self.sendable(b),
        };
        if can_send {
            let slot = if self.retries.front().is_some_and(|(due, _)| *due <= now) {
                self.retries.pop_front().map(|(_, s)| s)
            } else {
                self.offered.take()
            };
            if let Some(slot) = slot {
                return Some(self.transmit_frame(now, slot, ring_frames));
            }
        }
        let b = self.batch.as_mut()?;
        if !b.window.confirmed {
            return None;
        }
        // 2. The commit, when due. A commit is one more message against the
        // window, except when the window is what is too small.
        if !b.committing {
            let ring_frames = ring_frames();
            let input_empty = ring_frames == 0 && self.offered.is_none();
            let age = Duration::from_nanos(now.saturating_sub(b.opened));
            let due = outgrown(&b.window, ring_frames, self.cfg.flow, age)
                || (!b.window.stalled()
                    && (b.window.sent >= self.cfg.batch_len_max
                        || age >= self.cfg.batch_age_max
                        || (input_empty
                            && now.saturating_sub(self.last_frame)
                                >= nanos(self.cfg.idle_commit))
                        || (self.drain_deadline.is_some()
                            && input_empty
                            && self.retries.is_empty())));
            if due {
                reply_subject(
                    &self.prefix,
                    b.id,
                    b.window.flow_requested,
                    b.window.sent + 1,
                    Op::CommitEob,
                    &mut self.reply,
                );
                self.sending = Some(Op::CommitEob);
                return Some(Transmit::Control {
                    subject: &b.first_subject,
                    reply: &self.reply,
                    op: Op::CommitEob,
                });
            }
        }
        // 3. A lost flow ack: ask for it again.
        let third = self.ack_timeout / 3;
        if b.window.stalled()
            && now.saturating_sub(b.last_ping) >= third
            && now.saturating_sub(b.heard) >= third
        {
            b.last_ping = now;
            reply_subject(
                &self.prefix,
                b.id,
                b.window.flow_requested,
                b.window.sent,
                Op::Ping,
                &mut self.reply,
            );
            self.sending = Some(Op::Ping);
            return Some(Transmit::Control {
                subject: &b.first_subject,
                reply: &self.reply,
                op: Op::Ping,
            });
        }
        None
    }

    fn transmit_frame(
        &mut self,
        now: Nanos,
        mut slot: Slot<F>,
        ring_frames: impl FnOnce() -> u64,
    ) -> Transmit<'_, F> {
        self.last_frame = now;
        if self.batch.is_none() {
            let taken = self.counts.taken;
            let secs = Duration::from_nanos(now.saturating_sub(self.rate_mark.0)).as_secs_f64();
            let rate = if secs > 0.0 {
                (taken - self.rate_mark.1) as f64 / secs
            } else {
                0.0
            };
            self.rate_mark = (now, taken);
            let backlog = ring_frames() + self.queued();
            let flow = choose_flow(
                rate,
                backlog,
                self.cfg.outstanding,
                self.cfg.ack_interval,
                self.flow_ceiling,
            );
            let id = self.next_id;
            self.next_id += 1;
            self.batch = Some(Batch {
                id,
                window: Window::new(flow, self.cfg.outstanding),
                first_subject: slot.frame.subject().clone(),
                opened: now,
                heard: now,
                last_ping: now,
                committing: false,
                stream_before: self.stream_last,
            });
        }
        let b = self.batch.as_mut().expect("opened above");
        let (seq, op) = b.window.advance();
        reply_subject(
            &self.prefix,
            b.id,
            b.window.flow_requested,
            seq,
            op,
            &mut self.reply,
        );
        slot.attempts += 1;
        slot.sent = now;
        let first_attempt = slot.attempts == 1;
        self.unacked.push_back(slot);
        self.sending = Some(op);
        Transmit::Message {
            frame: &self.unacked.back().expect("pushed above").frame,
            reply: &self.reply,
            first_attempt,
        }
    }

    /// The result of the publish [`Self::poll_transmit`] handed out: `Err`
    /// with the client's error if it could not be sent.
    pub fn handle_send_result(&mut self, now: Nanos, result: Result<(), String>) {
        let op = self
            .sending
            .take()
            .expect("a send result without a transmit");
        match (op, result) {
            (Op::Start | Op::Append | Op::Commit, Ok(())) => self.counts.published += 1,
            (Op::CommitEob, Ok(())) => {
                if let Some(b) = &mut self.batch {
                    b.committing = true;
                    b.heard = now;
                }
            }
            // A ping is a hint; a lost one is asked again.
            (Op::Ping, _) => {}
            (_, Err(e)) => self.end_batch(now, EndReason::NotSent(e)),
        }
    }

    /// A message on the reply subscription (`<prefix>.>`).
    pub fn handle_reply(&mut self, now: Nanos, subject: &str, payload: &[u8]) {
        if self.state != State::Running {
            return;
        }
        let Some(b) = &mut self.batch else { return };
        if batch_of(&self.prefix, subject) != Some(b.id) {
            // A late reply to a batch already given up or committed.
            return;
        }
        let reply = match classify(payload) {
            Ok(r) => r,
            Err(e) => return self.end_batch(now, EndReason::BadReply(e)),
        };
        match reply {
            Reply::FlowAck { seq, flow } => {
                b.heard = now;
                let newly = b.window.on_ack(seq, flow);
                self.ack_front(newly as usize, now);
            }
            Reply::Gap { last_seq, seq } => self.end_batch(
                now,
                EndReason::Gap {
                    from: last_seq + 1,
                    to: seq,
                },
            ),
            Reply::Error {
                seq,
                code,
                description,
            } => {
                let reason = EndReason::ServerError {
                    seq,
                    code,
                    description,
                };
                if refuses_fast_batches(code) {
                    self.fall_back(now, reason);
                } else {
                    self.end_batch(now, reason);
                }
            }
            Reply::Committed { stream_seq, count } => {
                let b = self.batch.take().expect("matched above");
                self.counts.batches += 1;
                self.flow_ceiling = self
                    .flow_ceiling
                    .saturating_mul(2)
                    .min(self.cfg.flow.clamp(1, FLOW_MAX));
                self.ack_front(self.unacked.len(), now);
                match (b.stream_before, stream_seq) {
                    // nats-server 2.15 says 0 when the batch ended on a
                    // duplicate: ask the stream before the next batch.
                    (before, 0) => {
                        self.unsettled = before.map(|before| (before, count));
                        self.stream_last = None;
                        self.want_position();
                    }
                    (Some(before), _) => {
                        self.counts.duplicate += duplicates_in_batch(before, stream_seq, count);
                        self.stream_last = Some(stream_seq.max(self.stream_last.unwrap_or(0)));
                    }
                    (None, _) => {
                        self.stream_last = Some(stream_seq.max(self.stream_last.unwrap_or(0)));
                    }
                }
                self.events.push_back(Event::Committed {
                    batch: b.id,
                    stream_seq,
                    count,
                    sent: b.window.sent,
                });
            }
        }
    }

    /// The stream's last sequence, asked for by
    /// [`Event::StreamPositionWanted`]; `None` if the server did not say.
    pub fn handle_stream_position(&mut self, last_seq: Option<u64>) {
        self.position_wanted = false;
        self.stream_last = last_seq;
        if let Some((before, count)) = self.unsettled.take()
            && let Some(now) = last_seq
        {
            self.counts.duplicate += duplicates_in_batch(before, now, count);
        }
    }

    /// Check the timers: a batch the server has gone quiet on ends; the
    /// drain ends, done or timed out. `ring_frames` as for
    /// [`Self::poll_transmit`].
    ///
    /// A send the driver has handed to the client and not finished (the
    /// server stopped reading: the client's buffer is full) waits, except
    /// past the drain deadline: then the machine gives up on it with the
    /// rest, and the driver drops that send (see [`Self::is_done`]).
    pub fn handle_timeout(&mut self, now: Nanos, ring_frames: u64) {
        if self.state != State::Running {
            return;
        }
        if self.sending.is_some() {
            if self.drain_deadline.is_some_and(|d| now >= d) {
                self.sending = None;
                self.give_up(ring_frames);
            }
            return;
        }
        if let Some(b) = &self.batch
            && (b.committing || !self.unacked.is_empty())
        {
            let quiet = now.saturating_sub(b.heard);
            if quiet >= self.ack_timeout {
                let reason = if b.window.confirmed {
                    EndReason::Silent {
                        quiet: Duration::from_nanos(quiet),
                    }
                } else {
                    EndReason::NotConfirmed {
                        waited: Duration::from_nanos(quiet),
                    }
                };
                self.end_batch(now, reason);
            }
        }
        let Some(deadline) = self.drain_deadline else {
            return;
        };
        if ring_frames == 0
            && self.offered.is_none()
            && self.retries.is_empty()
            && self.batch.is_none()
            && !self.position_wanted
        {
            self.state = State::Done;
            self.events.push_back(Event::Done);
        } else if now >= deadline {
            self.give_up(ring_frames);
        }
    }

    /// The drain deadline has passed: everything in hand and in the rings
    /// is counted failed, and the machine is done.
    fn give_up(&mut self, ring_frames: u64) {
        let failed = self.in_flight() + self.queued() + ring_frames;
        let unacked = self.unacked.drain(..).map(|s| (0, s));
        let retries = self.retries.drain(..);
        let offered = self.offered.take().map(|s| (0, s));
        self.given_up.extend(
            unacked
                .chain(retries)
                .chain(offered)
                .map(|(due, s)| Queued {
                    due,
                    attempts: s.attempts,
                    frame: s.frame,
                }),
        );
        self.batch = None;
        self.counts.failed += failed;
        // Frames still in the rings were never taken: count them as
        // taken so taken = acked + failed holds.
        self.counts.taken += ring_frames;
        self.state = State::Done;
        self.events.push_back(Event::DrainTimedOut { failed });
        self.events.push_back(Event::Done);
    }

    /// When the drain ends whatever happens: set by
    /// [`Self::close_input`].
    pub fn drain_deadline(&self) -> Option<Nanos> {
        self.drain_deadline
    }

    /// Finished (drained, timed out or fallen back): a send still awaited
    /// is to be dropped, its result not handed in.
    pub fn is_done(&self) -> bool {
        self.state != State::Running
    }

    /// The earliest time something may be due without any input: a retry,
    /// a commit, a ping, a silent batch, the drain deadline. May be in the
    /// past when what is due waits on something else (a full window).
    pub fn poll_timeout(&self) -> Option<Nanos> {
        if self.state != State::Running {
            return None;
        }
        let mut t: Option<Nanos> = None;
        let mut at = |x: Nanos| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some((due, _)) = self.retries.front() {
            at(*due);
        }
        if let Some(d) = self.drain_deadline {
            at(d);
        }
        if let Some(b) = &self.batch {
            if b.committing || !self.unacked.is_empty() {
                at(b.heard.saturating_add(self.ack_timeout));
            }
            if b.window.confirmed && !b.committing {
                at(b.opened.saturating_add(nanos(self.cfg.batch_age_max)));
                at(self.last_frame.saturating_add(nanos(self.cfg.idle_commit)));
                if b.window.stalled() {
                    let third = self.ack_timeout / 3;
                    at(b.last_ping.max(b.heard).saturating_add(third));
                    at(b.opened
                        .saturating_add(nanos(super::flow::OUTGROWN_AGE_MIN)));
                }
            }
        }
        t
    }

    /// The next acknowledged frame.
    pub fn poll_acked(&mut self) -> Option<Acked<F>> {
        self.acked.pop_front()
    }

    /// The frames counted failed at the drain deadline (not ring frames):
    /// `attempts` > 0 were published without an acknowledgement seen.
    pub fn take_given_up(&mut self) -> Vec<Queued<F>> {
        std::mem::take(&mut self.given_up)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// After [`Event::FellBack`]: every frame taken and not acknowledged,
    /// oldest first, with the time each is due to be published again and
    /// how often it has been published.
    pub fn take_queued(&mut self) -> impl Iterator<Item = Queued<F>> + '_ {
        self.counts.handed_back += self.queued();
        let offered = self.offered.take().map(|s| (0, s));
        self.retries
            .drain(..)
            .chain(offered)
            .map(|(due, s)| Queued {
                due,
                attempts: s.attempts,
                frame: s.frame,
            })
    }

    /// Are events waiting for [`Self::poll_event`]?
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    fn ack_front(&mut self, n: usize, now: Nanos) {
        let n = n.min(self.unacked.len());
        self.counts.acked += n as u64;
        for s in self.unacked.drain(..n) {
            self.acked.push_back(Acked {
                frame: s.frame,
                sent: s.sent,
                at: now,
            });
        }
    }

    fn want_position(&mut self) {
        if !self.position_wanted {
            self.position_wanted = true;
            self.events.push_back(Event::StreamPositionWanted);
        }
    }

    /// Hand the open batch's unacknowledged frames back to the front of
    /// the retry queue, oldest first, due at `due`.
    fn requeue(&mut self, due: Nanos) -> u64 {
        let n = self.unacked.len() as u64;
        while let Some(s) = self.unacked.pop_back() {
            self.retries.push_front((due, s));
        }
        n
    }

    /// The batch is over; its frames go round again after a backoff.
    fn end_batch(&mut self, now: Nanos, reason: EndReason) {
        let Some(b) = self.batch.take() else { return };
        // Multiplicative decrease: a batch keeps only what a flow ack
        // confirmed before it ended, so with a loss rate p per message a
        // flow of F makes progress with probability (1 - p)^F per try.
        // Retrying at the same flow can make next to no progress; half the
        // flow each time reaches one where flow acks get through.
        self.flow_ceiling = (b.window.flow / 2).max(1);
        let attempts = self.unacked.front().map_or(1, |s| s.attempts);
        let due = now.saturating_add(nanos(self.backoff.after(attempts)));
        let requeued = self.requeue(due);
        self.counts.retried += requeued;
        self.events.push_back(Event::Ended {
            batch: b.id,
            reason,
            requeued,
        });
        // The failed batch may have stored some: the stream's position is
        // unknown until asked again.
        self.stream_last = None;
        self.want_position();
    }

    fn fall_back(&mut self, now: Nanos, reason: EndReason) {
        self.batch = None;
        self.requeue(now);
        self.state = State::FellBack;
        self.events.push_back(Event::FellBack { reason });
    }
}
