//! JetStream publisher: drains the receive rings, encodes the contract
//! message and publishes it with its `Nats-Msg-Id`, either in fast-ingest
//! batches (nats-server 2.14+, the default) or one JetStream publish per
//! message with many acks in flight (pipelined).
//!
//! Layout: [`proto`] holds the protocol cores, pure state machines with no
//! I/O and no clock that decide everything about delivery (the fast-batch
//! publisher [`proto::fast::FastBatcher`] with the ADR-50 wire format and
//! flow control, and the pipelined accounting [`proto::pipelined::Pipeline`]),
//! tested against a simulated JetStream. The drivers own the async-nats
//! client, the rings, the clock and the counters and only shuttle events
//! and actions: `driver.rs` for fast batches, [`Publisher::run`] here for
//! the pipelined mode (which the fast mode falls back to, handing over
//! every frame it has not seen acknowledged).
//!
//! Every frame taken from a ring is owned by the publisher until JetStream
//! acknowledges it: a failed or timed-out publish is retried with the same
//! id (so a retry can never store a second copy inside the duplicate
//! window) after a doubling backoff. While publishes wait, no more frames
//! are taken from the rings, so an outage backs up into the rings (which
//! the receive threads never block on) and memory here stays bounded by
//! `acks_in_flight_max`.

pub mod config;
mod doubt;
mod driver;
pub mod proto;

pub use config::{PublishConfig, PublishMode};
/// The fast-batch publisher's pure core, under its old path.
pub use proto::fast;
pub use proto::fast::FastConfig;
pub use proto::wire::server_supports_fast_batches;

use crate::clock::mono_ns;
use crate::message;
use crate::metrics::LatencyRecorder;
use crate::receive::Received;
use crate::spool::{SpoolLink, SpoolRef, ToSpool};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use futures_util::FutureExt as _;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use proto::fast::Queued;
use proto::pipelined::{self, Pipeline, Token};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Longest idle wait when no frame, ack or wake arrives: bounds how late a
/// due retry or the end of input is noticed.
const IDLE_TICK: Duration = Duration::from_millis(5);

/// Publisher settings (from `[publish]` and `[nats]`).
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub subject_prefix: String,
    pub acks_in_flight_max: usize,
    pub batch_len_max: usize,
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
    pub drain_timeout: Duration,
    /// Fast-ingest batches; `None` publishes pipelined.
    pub fast: Option<FastConfig>,
}

/// Counters the publisher keeps; read by the reporter at any time.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Frames taken from the rings (each once, however often retried).
    pub taken: CachePadded<AtomicU64>,
    /// Publish calls, retries included.
    pub published: CachePadded<AtomicU64>,
    /// Frames acknowledged by JetStream (duplicates included).
    pub acked: CachePadded<AtomicU64>,
    /// Acks that said `duplicate: true`.
    pub duplicate: CachePadded<AtomicU64>,
    /// Publishes repeated after a failure or timeout.
    pub retried: CachePadded<AtomicU64>,
    /// Frames given up at the end of the drain timeout.
    pub failed: CachePadded<AtomicU64>,
    /// Publishes awaiting an ack now.
    pub in_flight: CachePadded<AtomicU64>,
    /// Fast-ingest batches committed.
    pub batches: CachePadded<AtomicU64>,
    /// Frames taken from the disk spool's drain (counted in `taken` too).
    pub from_spool: CachePadded<AtomicU64>,
    /// Live frames handed to the disk spool at the stop, unacknowledged
    /// (counted in `failed` too).
    pub to_spool: CachePadded<AtomicU64>,
    /// Frames from the spool unacknowledged at the stop: they stay there
    /// (counted in `failed` too).
    pub returned: CachePadded<AtomicU64>,
    /// Frames from the spool in doubt that the stream held already: not
    /// published again (not in `acked`).
    pub resolved: CachePadded<AtomicU64>,
    /// Of the frames given up at the stop, those published at least once
    /// without an answer: the stream may hold them.
    pub given_up_in_doubt: CachePadded<AtomicU64>,
    /// The mode running now: true while fast-ingest batches are used.
    pub fast: AtomicBool,
}

/// A plain copy of [`PublisherStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherCounts {
    pub taken: u64,
    pub published: u64,
    pub acked: u64,
    pub duplicate: u64,
    pub retried: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub batches: u64,
    pub from_spool: u64,
    pub to_spool: u64,
    pub returned: u64,
    pub resolved: u64,
    pub given_up_in_doubt: u64,
    /// Fast-ingest batches were the mode at the end (false: pipelined,
    /// configured or fallen back to).
    pub fast: bool,
}

impl PublisherStats {
    pub fn snapshot(&self) -> PublisherCounts {
        PublisherCounts {
            taken: self.taken.load(Relaxed),
            published: self.published.load(Relaxed),
            acked: self.acked.load(Relaxed),
            duplicate: self.duplicate.load(Relaxed),
            retried: self.retried.load(Relaxed),
            failed: self.failed.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            batches: self.batches.load(Relaxed),
            from_spool: self.from_spool.load(Relaxed),
            to_spool: self.to_spool.load(Relaxed),
            returned: self.returned.load(Relaxed),
            resolved: self.resolved.load(Relaxed),
            given_up_in_doubt: self.given_up_in_doubt.load(Relaxed),
            fast: self.fast.load(Relaxed),
        }
    }
}

/// One frame on its way: everything needed to publish it again.
struct Pending {
    subject: Subject,
    headers: HeaderMap,
    body: Bytes,
    recv_mono_ns: u64,
    /// The frame itself, for the spool should it not be acknowledged.
    raw: Received,
    /// Where it lives in the spool, when it came from there.
    origin: Option<SpoolRef>,
}

/// A pipelined publish's ack, named by the token the machine gave it.
type AckFuture = Pin<Box<dyn Future<Output = (Token, Result<PublishAck, PublishError>)> + Send>>;

/// How often a send the client has not finished looks at the input and
/// the drain deadline.
const SEND_CHECK: Duration = Duration::from_millis(50);

/// Await a send (the client's buffer may be full because the server
/// stopped reading, for any time). Every [`SEND_CHECK`], `check(now)` lets
/// the machine see the input close and its drain deadline pass; when it
/// says the machine is done, the send is dropped: `None`. The decision is
/// the machine's; this only keeps asking it.
async fn bounded_send<T>(
    send: impl Future<Output = T>,
    mut check: impl FnMut(u64) -> bool,
) -> Option<T> {
    tokio::pin!(send);
    loop {
        tokio::select! {
            biased;
            r = &mut send => return Some(r),
            () = tokio::time::sleep(SEND_CHECK) => {
                if check(mono_ns()) {
                    return None;
                }
            }
        }
    }
}

/// Pipelined-mode warnings: at most one line per this long.
const WARN_INTERVAL_NS: u64 = 5_000_000_000;

/// Drains rings into JetStream. Run with [`Publisher::run`].
pub struct Publisher {
    js: async_nats::jetstream::Context,
    rings: Vec<rtrb::Consumer<Received>>,
    cfg: PublisherConfig,
    stats: Arc<PublisherStats>,
    latency: LatencyRecorder,
    /// Set once the receive threads have stopped: drain and finish.
    input_closed: Arc<AtomicBool>,
    /// Notified by the receive threads after each batch they ring.
    wake: Arc<tokio::sync::Notify>,
    /// The disk spool: frames to drain, and where acks and unacknowledged
    /// frames are reported.
    spool: Option<SpoolLink>,
    /// Spooled frames acknowledged, not yet reported.
    spool_acked: Vec<SpoolRef>,
    /// Frames from the spool in doubt, to check against the stream.
    spool_doubt: Vec<crate::spool::Drained>,
    /// Frames from the spool checked, to publish.
    spool_ready: std::collections::VecDeque<Pending>,
}

impl Publisher {
    pub fn new(
        js: async_nats::jetstream::Context,
        rings: Vec<rtrb::Consumer<Received>>,
        cfg: PublisherConfig,
        latency: LatencyRecorder,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        assert!(cfg.acks_in_flight_max > 0 && cfg.batch_len_max > 0);
        Publisher {
            js,
            rings,
            cfg,
            stats: Arc::default(),
            latency,
            input_closed: Arc::default(),
            wake,
            spool: None,
            spool_acked: Vec::new(),
            spool_doubt: Vec::new(),
            spool_ready: std::collections::VecDeque::new(),
        }
    }

    /// Drain the disk spool (when the rings are empty) and hand it what
    /// is not acknowledged at the stop.
    pub fn with_spool(mut self, link: Option<SpoolLink>) -> Self {
        self.spool = link;
        self
    }

    /// A frame from the spool's drain, encoded: only while the input is
    /// open (at the stop, what is in the spool stays there).
    fn pop_spool(&mut self, cbor: &mut Vec<u8>, scratch: &mut String) -> Option<Pending> {
        if self.input_closed.load(Relaxed) {
            return None;
        }
        if let Some(p) = self.spool_ready.pop_front() {
            self.stats.from_spool.fetch_add(1, Relaxed);
            return Some(p);
        }
        loop {
            if self.spool_doubt.len() >= doubt::SPOOL_DOUBT_MAX {
                return None;
            }
            let d = self.spool.as_mut()?.drain.pop().ok()?;
            if d.in_doubt {
                // Checked against the stream first (resolve_spool_doubt).
                self.spool_doubt.push(d);
                continue;
            }
            self.stats.from_spool.fetch_add(1, Relaxed);
            let mut p = self.encode(&d.received, cbor, scratch);
            p.origin = Some(d.at);
            return Some(p);
        }
    }

    /// Note an acknowledged frame for the spool.
    fn note_acked(&mut self, p: &Pending) {
        if let Some(at) = p.origin {
            self.spool_acked.push(at);
        }
    }

    /// Tell the spool which of its frames were acknowledged.
    fn report_spool_acks(&mut self) {
        if self.spool_acked.is_empty() {
            return;
        }
        let refs = std::mem::take(&mut self.spool_acked);
        if let Some(link) = &self.spool {
            let _ = link.tx.send(ToSpool::Acked(refs));
        }
    }

    /// At the stop: every frame not acknowledged goes to the spool (live
    /// ones written, spooled ones left where they are), the rings too.
    /// Without a spool they stay counted as failed.
    fn hand_to_spool(&mut self, given_up: Vec<Queued<Pending>>) {
        self.report_spool_acks();
        let in_doubt = given_up.iter().filter(|q| q.attempts > 0).count() as u64;
        self.stats.given_up_in_doubt.fetch_add(in_doubt, Relaxed);
        let Some(link) = &self.spool else { return };
        let mut live = Vec::new();
        let mut returned = Vec::new();
        for q in given_up {
            match q.frame.origin {
                Some(at) => returned.push(at),
                None => live.push((q.frame.raw, q.attempts > 0)),
            }
        }
        for ring in &mut self.rings {
            while let Ok(r) = ring.pop() {
                live.push((r, false));
            }
        }
        self.stats.to_spool.fetch_add(live.len() as u64, Relaxed);
        self.stats
            .returned
            .fetch_add(returned.len() as u64, Relaxed);
        if !live.is_empty() || !returned.is_empty() {
            let _ = link.tx.send(ToSpool::Unacked { live, returned });
        }
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Set this after the receive threads have stopped; the publisher then
    /// empties the rings, waits for acks (retrying) up to the drain timeout,
    /// counts what is left as failed, and returns.
    pub fn input_closed(&self) -> Arc<AtomicBool> {
        self.input_closed.clone()
    }

    /// Frames waiting in the rings now.
    pub fn ring_frames(rings: &[rtrb::Consumer<Received>]) -> u64 {
        rings.iter().map(|r| r.slots() as u64).sum()
    }

    fn encode(&self, r: &Received, cbor: &mut Vec<u8>, scratch: &mut String) -> Pending {
        scratch.clear();
        message::write_subject(&self.cfg.subject_prefix, &r.frame, scratch);
        let subject = Subject::from(scratch.as_str());
        scratch.clear();
        message::write_msg_id(&r.frame, scratch);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", HeaderValue::from(scratch.as_str()));
        cbor.clear();
        message::encode_cbor(&r.frame, r.recv, cbor);
        Pending {
            subject,
            headers,
            // async-nats takes an owned Bytes per message.
            body: Bytes::copy_from_slice(cbor),
            recv_mono_ns: r.recv_mono_ns,
            raw: *r,
            origin: None,
        }
    }

    /// Run until the input is closed and everything taken is acked or the
    /// drain timeout has passed. Returns the final counts.
    pub async fn run(mut self) -> PublisherCounts {
        let mut adopted = Vec::new();
        if let Some(fc) = self.cfg.fast.clone() {
            self.stats.fast.store(true, Relaxed);
            match self.run_fast(&fc).await {
                driver::Outcome::Done(given_up) => {
                    self.hand_to_spool(given_up);
                    self.stats.in_flight.store(0, Relaxed);
                    self.latency.flush();
                    return self.stats.snapshot();
                }
                driver::Outcome::Fallback(left) => {
                    self.stats.fast.store(false, Relaxed);
                    adopted = left;
                }
            }
        }
        self.run_pipelined(adopted).await
    }

    /// The pipelined mode: the accounting is [`proto::pipelined::Pipeline`]'s;
    /// this loop owns the client, the ack futures, the rings and the clock.
    async fn run_pipelined(mut self, adopted: Vec<Queued<Pending>>) -> PublisherCounts {
        // What the fast mode counted before falling back (zero otherwise).
        let base = self.stats.snapshot();
        let backoff =
            proto::Backoff::new(self.cfg.retry_backoff_initial, self.cfg.retry_backoff_max);
        let mut m = Pipeline::new(
            self.cfg.acks_in_flight_max,
            backoff,
            self.cfg.drain_timeout,
            adopted,
        );
        let mut in_flight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        let mut cbor = Vec::with_capacity(message::BODY_LEN_MAX);
        let mut scratch = String::with_capacity(64);
        let mut warned: Option<u64> = None;
        let mut closed = false;
        let mut ring_index = 0usize;
        let client = self.js.client();
        let mut down: Option<u64> = None;
        loop {
            // Harvest acks that are ready.
            while let Some(Some((token, r))) = in_flight.next().now_or_never() {
                m.handle_ack(mono_ns(), token, ack_result(r));
            }
            self.resolve_spool_doubt(&mut cbor, &mut scratch).await;
            let now = mono_ns();
            // While the connection is down nothing is sent (the client would
            // only buffer it, to send after the duplicate window perhaps);
            // when it is back, frames in doubt are checked first.
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            if !connected {
                down.get_or_insert(now);
            } else if let Some(since) = down.take() {
                self.settle_after_outage(&mut m, now.saturating_sub(since))
                    .await;
            }
            // Retries whose backoff has passed go first: they are oldest.
            let mut progressed = connected && self.send_pipelined(&mut m, &mut in_flight).await;
            // New frames, round-robin over the rings, while there is room
            // for their acks (outstanding = in flight + waiting to retry).
            let mut visited = 0;
            while connected && visited < self.rings.len() && m.wants_frame() {
                let k = ring_index % self.rings.len();
                ring_index = ring_index.wrapping_add(1);
                visited += 1;
                let mut taken = 0;
                while taken < self.cfg.batch_len_max && m.wants_frame() {
                    let Ok(r) = self.rings[k].pop() else { break };
                    taken += 1;
                    m.push(self.encode(&r, &mut cbor, &mut scratch));
                    self.send_pipelined(&mut m, &mut in_flight).await;
                }
                progressed |= taken > 0;
            }
            // The spool's drain when the rings had nothing.
            if connected && !progressed {
                let mut taken = 0;
                while taken < self.cfg.batch_len_max && m.wants_frame() {
                    let Some(p) = self.pop_spool(&mut cbor, &mut scratch) else {
                        break;
                    };
                    taken += 1;
                    m.push(p);
                    self.send_pipelined(&mut m, &mut in_flight).await;
                }
                progressed |= taken > 0;
            }
            if !closed && self.input_closed.load(Relaxed) {
                m.close_input(now);
                closed = true;
            }
            m.handle_timeout(now, Self::ring_frames(&self.rings));
            let mut done = false;
            while let Some(e) = m.poll_event() {
                match e {
                    pipelined::Event::Retrying { attempts, reason } => {
                        // Rate-limited: one line per 5 s however many fail.
                        if warned.is_none_or(|t| now.saturating_sub(t) > WARN_INTERVAL_NS) {
                            tracing::warn!(error = %reason, attempts, "publish failed; retrying with the same Nats-Msg-Id");
                            warned = Some(now);
                        }
                    }
                    pipelined::Event::DrainTimedOut { failed } => {
                        tracing::error!(
                            frames = failed,
                            "drain timeout: frames not acknowledged by JetStream are counted as failed"
                        );
                    }
                    pipelined::Event::Done => done = true,
                }
            }
            let c = m.counts();
            let s = &self.stats;
            s.taken.store(base.taken + c.taken, Relaxed);
            s.published.store(base.published + c.published, Relaxed);
            s.acked.store(base.acked + c.acked, Relaxed);
            s.duplicate.store(base.duplicate + c.duplicate, Relaxed);
            s.retried.store(base.retried + c.retried, Relaxed);
            s.failed.store(base.failed + c.failed, Relaxed);
            s.in_flight.store(m.in_flight(), Relaxed);
            // Counted (above) before recorded: a `/metrics` scrape reads
            // the histograms first, then the counters, and so never shows
            // more latencies than acks.
            while let Some(a) = m.poll_acked() {
                self.latency
                    .record_publish_to_ack(a.at.saturating_sub(a.sent));
                self.latency
                    .record_receive_to_ack(a.at.saturating_sub(a.frame.recv_mono_ns));
                self.note_acked(&a.frame);
            }
            self.report_spool_acks();
            if done {
                let given_up = m.take_given_up();
                self.hand_to_spool(given_up);
                break;
            }
            if !progressed {
                // Idle: hand recorded latencies to the reporter if it asked.
                self.latency.flush();
                // Nothing to send now: wait for an ack, for the receive
                // threads to ring new frames, or a tick (due retries, the
                // input closing).
                let tick = tokio::time::sleep(IDLE_TICK);
                tokio::pin!(tick);
                let wake = self.wake.clone();
                tokio::select! {
                    biased;
                    Some((token, r)) = in_flight.next(), if !in_flight.is_empty() => {
                        m.handle_ack(mono_ns(), token, ack_result(r));
                    }
                    () = wake.notified() => {}
                    () = &mut tick => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
        self.stats.in_flight.store(0, Relaxed);
        self.latency.flush();
        self.stats.snapshot()
    }

    /// Publish every transmit the pipeline has now. Returns whether any.
    async fn send_pipelined(
        &mut self,
        m: &mut Pipeline<Pending>,
        in_flight: &mut FuturesUnordered<AckFuture>,
    ) -> bool {
        let mut sent = false;
        loop {
            // One clock read per publish, as its send time.
            let now = mono_ns();
            let Some(t) = m.poll_transmit(now) else {
                return sent;
            };
            sent = true;
            if t.first_attempt {
                self.latency
                    .record_receive_to_publish(now.saturating_sub(t.frame.recv_mono_ns));
            }
            let token = t.token;
            let send = self.js.publish_with_headers(
                t.frame.subject.clone(),
                t.frame.headers.clone(),
                t.frame.body.clone(),
            );
            // Moved into the check as unique borrows: a shared borrow of
            // the rings (not `Sync`) would make the future not `Send`.
            let rings = &mut self.rings;
            let machine = &mut *m;
            let input_closed = &self.input_closed;
            let r = bounded_send(send, move |now| {
                if input_closed.load(Relaxed) {
                    machine.close_input(now);
                }
                machine.handle_timeout(now, Self::ring_frames(rings));
                machine.is_done()
            })
            .await;
            let Some(r) = r else {
                // The drain deadline passed with the server not reading:
                // the machine has given the send up with the rest.
                return true;
            };
            match r {
                Ok(ack) => {
                    m.handle_send_result(now, Ok(()));
                    in_flight.push(Box::pin(async move { (token, ack.await) }));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "publish not sent");
                    m.handle_send_result(now, Err(e.to_string()));
                }
            }
        }
    }
}

/// An ack as the pipeline takes it: `Ok(duplicate)` or the error.
fn ack_result(r: Result<PublishAck, PublishError>) -> Result<bool, String> {
    r.map(|a| a.duplicate).map_err(|e| e.to_string())
}
