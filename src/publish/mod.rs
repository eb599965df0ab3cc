//! JetStream publisher: drains the receive rings, encodes the contract
//! message and publishes it with its `Nats-Msg-Id`, either in fast-ingest
//! batches ([`batch`], nats-server 2.14+, the default) or one JetStream
//! publish per message with many acks in flight (pipelined).
//!
//! Every frame taken from a ring is owned by the publisher until JetStream
//! acknowledges it: a failed or timed-out publish is retried with the same
//! id (so a retry can never store a second copy inside the duplicate
//! window) after a doubling backoff. While publishes wait, no more frames
//! are taken from the rings, so an outage backs up into the rings (which
//! the receive threads never block on) and memory here stays bounded by
//! `acks_in_flight_max`.

mod batch;
pub mod config;
pub mod fast;

pub use batch::{FastConfig, server_supports_fast_batches};
pub use config::{PublishConfig, PublishMode};

use crate::message;
use crate::metrics::LatencyRecorder;
use crate::receive::Received;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

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
    attempts: u32,
}

type AckFuture =
    Pin<Box<dyn Future<Output = (Pending, u64, Result<PublishAck, PublishError>)> + Send>>;

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
    /// Fast mode: a committed batch whose stream sequence the server did
    /// not say (`before`, `count`), to settle by asking the stream.
    unsettled: Option<(u64, u64)>,
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
            unsettled: None,
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
            attempts: 0,
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        (self.cfg.retry_backoff_initial * factor).min(self.cfg.retry_backoff_max)
    }

    /// Publish one pending frame; on a failure to even send, hand it back.
    async fn send(&mut self, mut p: Pending) -> Result<AckFuture, Pending> {
        p.attempts += 1;
        let sent_ns = crate::clock::mono_ns();
        match self
            .js
            .publish_with_headers(p.subject.clone(), p.headers.clone(), p.body.clone())
            .await
        {
            Ok(ack) => {
                self.stats.published.fetch_add(1, Relaxed);
                if p.attempts == 1 {
                    self.latency
                        .record_receive_to_publish(sent_ns.saturating_sub(p.recv_mono_ns));
                }
                Ok(Box::pin(async move {
                    let r = ack.await;
                    (p, sent_ns, r)
                }))
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish not sent");
                Err(p)
            }
        }
    }

    fn on_ack(
        &mut self,
        (p, sent_ns, r): (Pending, u64, Result<PublishAck, PublishError>),
        retries: &mut VecDeque<(Instant, Pending)>,
        warned: &mut Option<Instant>,
    ) {
        match r {
            Ok(ack) => {
                let now = crate::clock::mono_ns();
                self.stats.acked.fetch_add(1, Relaxed);
                if ack.duplicate {
                    self.stats.duplicate.fetch_add(1, Relaxed);
                }
                self.latency
                    .record_publish_to_ack(now.saturating_sub(sent_ns));
                self.latency
                    .record_receive_to_ack(now.saturating_sub(p.recv_mono_ns));
            }
            Err(e) => {
                // Rate-limited: one line per 5 s however many fail.
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, attempts = p.attempts, "publish failed; retrying with the same Nats-Msg-Id");
                    *warned = Some(Instant::now());
                }
                self.requeue(p, retries);
            }
        }
    }

    fn requeue(&self, p: Pending, retries: &mut VecDeque<(Instant, Pending)>) {
        self.stats.retried.fetch_add(1, Relaxed);
        let due = Instant::now() + self.backoff(p.attempts);
        retries.push_back((due, p));
    }

    /// Run until the input is closed and everything taken is acked or the
    /// drain timeout has passed. Returns the final counts.
    pub async fn run(mut self) -> PublisherCounts {
        let mut retries = VecDeque::new();
        if let Some(fc) = self.cfg.fast.clone() {
            self.stats.fast.store(true, Relaxed);
            match self.run_fast(&fc).await {
                batch::Outcome::Done => {
                    self.stats.in_flight.store(0, Relaxed);
                    self.latency.flush();
                    return self.stats.snapshot();
                }
                batch::Outcome::Fallback(left) => {
                    self.stats.fast.store(false, Relaxed);
                    retries = left;
                }
            }
        }
        self.run_pipelined(retries).await
    }

    async fn run_pipelined(mut self, mut retries: VecDeque<(Instant, Pending)>) -> PublisherCounts {
        let mut in_flight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        let mut cbor = Vec::with_capacity(message::BODY_LEN_MAX);
        let mut scratch = String::with_capacity(64);
        let mut warned: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        let max = self.cfg.acks_in_flight_max;
        let mut ring_index = 0usize;
        loop {
            // Harvest acks that are ready.
            while let Some(Some(r)) = futures_util::FutureExt::now_or_never(in_flight.next()) {
                self.on_ack(r, &mut retries, &mut warned);
            }
            let mut progressed = false;
            // Retries whose backoff has passed go first: they are oldest.
            let now = Instant::now();
            let mut i = 0;
            while i < retries.len() && in_flight.len() < max {
                if retries[i].0 <= now {
                    let (_, p) = retries.remove(i).expect("index in range");
                    match self.send(p).await {
                        Ok(f) => in_flight.push(f),
                        Err(p) => self.requeue(p, &mut retries),
                    }
                    progressed = true;
                } else {
                    i += 1;
                }
            }
            // New frames, round-robin over the rings, while there is room
            // for their acks (outstanding = in flight + waiting to retry).
            let mut visited = 0;
            while visited < self.rings.len() && in_flight.len() + retries.len() < max {
                let k = ring_index % self.rings.len();
                ring_index = ring_index.wrapping_add(1);
                visited += 1;
                let room = (max - in_flight.len() - retries.len()).min(self.cfg.batch_len_max);
                let mut taken = 0;
                while taken < room {
                    let Ok(r) = self.rings[k].pop() else { break };
                    taken += 1;
                    let p = self.encode(&r, &mut cbor, &mut scratch);
                    match self.send(p).await {
                        Ok(f) => in_flight.push(f),
                        Err(p) => self.requeue(p, &mut retries),
                    }
                }
                if taken > 0 {
                    self.stats.taken.fetch_add(taken as u64, Relaxed);
                    progressed = true;
                }
            }
            self.stats.in_flight.store(in_flight.len() as u64, Relaxed);

            if self.input_closed.load(Relaxed) {
                let rings_empty = self.rings.iter().all(|r| r.is_empty());
                if rings_empty && in_flight.is_empty() && retries.is_empty() {
                    break;
                }
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
                if Instant::now() >= deadline {
                    let left =
                        in_flight.len() + retries.len() + Self::ring_frames(&self.rings) as usize;
                    tracing::error!(
                        frames = left,
                        "drain timeout: frames not acknowledged by JetStream are counted as failed"
                    );
                    self.stats.failed.fetch_add(left as u64, Relaxed);
                    // Frames still in the rings were never taken: count them
                    // as taken so taken = acked + failed holds.
                    self.stats
                        .taken
                        .fetch_add(Self::ring_frames(&self.rings), Relaxed);
                    break;
                }
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
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => {
                        self.on_ack(r, &mut retries, &mut warned);
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
}
