//! Edge: per stream, a durable pull consumer, a decode task that builds
//! batches (size or time, whichever first) and a writer task that commits
//! them in order and acks each only after its commit; plus the reporter.
//!
//! ```text
//! TSPI ──pull──> decode ──(bounded: batches_in_flight_max)──> write+ack ──> PostgreSQL
//! TSPI_OPS ─pull─> decode ──(bounded)──> write+ack ──┘
//! ```
//!
//! The bounded channel is the back-pressure: while the database is away the
//! writer retries the same batch (backoff, reconnect), the decode task
//! blocks on the full channel, and the consumer's `max_ack_pending` stops
//! the server from delivering more. Nothing is acked, nothing is dropped.

use super::copy::CopyBuf;
use super::db::{Batch, Db, OpsRow, Origin, RejectRow};
use super::report::{self, Counters, Lag};
use super::rows::{self, OpsKind};
use super::{AckMode, ArchiveConfig};
use crate::config::Config;
use crate::jetstream::{STREAM_OPS, STREAM_TELEMETRY, ensure_stream, ops_stream, telemetry_stream};
use crate::metrics::{hostname, new_latency_histogram, serve_prometheus};
use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Subjects of `TSPI_OPS` that are archived: display and other commands,
/// tags, control and status heartbeats. Metrics snapshots
/// (`tspi.ops.metrics.>`) are not: they are the boxes' own reports.
pub const OPS_SUBJECTS: [&str; 4] = ["tspi.cmd.>", "tags.>", "tspi.ops.ctrl", "tspi.ops.status"];

/// Which stream a pipeline reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Ops,
}

impl Kind {
    fn stream(self) -> &'static str {
        match self {
            Kind::Telemetry => STREAM_TELEMETRY,
            Kind::Ops => STREAM_OPS,
        }
    }
}

/// Per-stream progress, for the lag.
#[derive(Debug, Default)]
pub struct StreamProgress {
    /// Messages taken from the consumer, and committed.
    pub taken: AtomicU64,
    pub committed: AtomicU64,
    /// Messages still in the stream for this consumer after the last one
    /// taken (the server's `num_pending` in its reply subject).
    pub pending: AtomicU64,
    /// Stream time (µs) of the last committed message; of the first taken
    /// until something committed.
    pub committed_unix_us: AtomicI64,
    pub first_taken_unix_us: AtomicI64,
}

impl StreamProgress {
    /// Lag at `now_unix_us`.
    pub fn lag(&self, now_unix_us: i64) -> Lag {
        let taken = self.taken.load(Relaxed);
        let committed = self.committed.load(Relaxed);
        let messages = self.pending.load(Relaxed) + taken.saturating_sub(committed);
        let since = if committed > 0 {
            self.committed_unix_us.load(Relaxed)
        } else {
            self.first_taken_unix_us.load(Relaxed)
        };
        let seconds = if messages > 0 && since > 0 {
            (now_unix_us - since).max(0) as f64 / 1e6
        } else {
            0.0
        };
        Lag { messages, seconds }
    }
}

/// Live counters, shared by the tasks, the reporter and callers (tests,
/// the bench) that watch progress.
#[derive(Debug)]
pub struct Stats {
    pub messages: AtomicU64,
    pub telemetry_rows: AtomicU64,
    pub telemetry_duplicate: AtomicU64,
    pub ops_rows: AtomicU64,
    pub ops_duplicate: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    pub acked: AtomicU64,
    pub db_errors: AtomicU64,
    pub partitions_created: AtomicU64,
    pub partitions_dropped: AtomicU64,
    /// Consumer rewinds after a missing delivery (ack policy all).
    pub rewinds: AtomicU64,
    pub telemetry: StreamProgress,
    pub ops: StreamProgress,
    /// Batch commit latency, ns, since the last report.
    pub commit: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            messages: AtomicU64::new(0),
            telemetry_rows: AtomicU64::new(0),
            telemetry_duplicate: AtomicU64::new(0),
            ops_rows: AtomicU64::new(0),
            ops_duplicate: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            db_errors: AtomicU64::new(0),
            partitions_created: AtomicU64::new(0),
            partitions_dropped: AtomicU64::new(0),
            rewinds: AtomicU64::new(0),
            telemetry: StreamProgress::default(),
            ops: StreamProgress::default(),
            commit: Mutex::new(new_latency_histogram()),
        }
    }
}

impl Stats {
    pub fn counters(&self) -> Counters {
        Counters {
            messages: self.messages.load(Relaxed),
            telemetry_rows: self.telemetry_rows.load(Relaxed),
            telemetry_duplicate: self.telemetry_duplicate.load(Relaxed),
            ops_rows: self.ops_rows.load(Relaxed),
            ops_duplicate: self.ops_duplicate.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            batches: self.batches.load(Relaxed),
            acked: self.acked.load(Relaxed),
            db_errors: self.db_errors.load(Relaxed),
            partitions_created: self.partitions_created.load(Relaxed),
            partitions_dropped: self.partitions_dropped.load(Relaxed),
            rewinds: self.rewinds.load(Relaxed),
        }
    }

    fn progress(&self, kind: Kind) -> &StreamProgress {
        match kind {
            Kind::Telemetry => &self.telemetry,
            Kind::Ops => &self.ops,
        }
    }
}

/// The account of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Account {
    pub counters: Counters,
    /// Batches still unacked when the drain timed out (redelivered later).
    pub abandoned_batches: u64,
}

/// What the decode task hands the writer.
enum Item {
    Batch(Pending),
    /// Answered once every earlier batch is committed (and acked or not).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// A batch on its way to the writer, with what acks it.
struct Pending {
    /// False for a batch that must be committed but not acked (ack policy
    /// all, after a delivery went missing: see [`Builder::add`]).
    ack: bool,
    batch: Batch,
    /// `AckMode::All`: the last message; `Explicit`: all of them.
    acks: Vec<jetstream::Message>,
    messages: u64,
    last_unix_us: i64,
}

fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Builds one batch from messages.
struct Builder {
    kind: Kind,
    ack: AckMode,
    copy: CopyBuf,
    days: Vec<i32>,
    ops: Vec<OpsRow>,
    rejects: Vec<RejectRow>,
    acks: Vec<jetstream::Message>,
    messages: u64,
    last_unix_us: i64,
    msg_id: String,
    /// `AckMode::All`: stream sequence of the message in `acks`.
    ack_seq: u64,
    redelivered: bool,
    /// Consumer sequence of the last delivery seen (0: none yet).
    last_cseq: u64,
    /// A delivery went missing in this batch (consumer sequence gap).
    gap: bool,
}

impl Builder {
    fn new(kind: Kind, cfg: &ArchiveConfig) -> Self {
        let rows = if kind == Kind::Telemetry {
            cfg.batch_len_max
        } else {
            0
        };
        Builder {
            kind,
            ack: cfg.ack,
            copy: CopyBuf::with_capacity(64 + rows * 320),
            days: Vec::new(),
            ops: Vec::new(),
            rejects: Vec::new(),
            acks: Vec::with_capacity(if cfg.ack == AckMode::Explicit {
                cfg.batch_len_max
            } else {
                1
            }),
            messages: 0,
            last_unix_us: 0,
            msg_id: String::with_capacity(32),
            ack_seq: 0,
            redelivered: false,
            last_cseq: 0,
            gap: false,
        }
    }

    fn add(&mut self, m: jetstream::Message, progress: &StreamProgress) {
        let (seq, stream_unix_us, pending) = match m.info() {
            Ok(i) => {
                self.redelivered |= i.delivered > 1;
                // Every delivery, redeliveries too, takes the next consumer
                // sequence: a jump means a delivery never reached us (lost
                // in a reconnect). Under ack policy all, acking anything
                // later would also ack it, so the batch is not acked and
                // the decode loop rewinds the consumer.
                if self.ack == AckMode::All
                    && self.last_cseq != 0
                    && i.consumer_sequence != self.last_cseq + 1
                {
                    self.gap = true;
                }
                self.last_cseq = i.consumer_sequence;
                (
                    i.stream_sequence,
                    (i.published.unix_timestamp_nanos() / 1000) as i64,
                    i.pending,
                )
            }
            // Not a JetStream delivery (cannot happen on a pull consumer's
            // own inbox): archived with sequence 0 rather than dropped.
            Err(_) => {
                self.redelivered = true;
                (0, now_unix_us(), progress.pending.load(Relaxed))
            }
        };
        progress.pending.store(pending, Relaxed);
        if progress.first_taken_unix_us.load(Relaxed) == 0 {
            progress.first_taken_unix_us.store(stream_unix_us, Relaxed);
        }
        self.messages += 1;
        self.last_unix_us = stream_unix_us;
        let header_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned());
        let subject = m.subject.as_str();
        let origin = |msg_id: Option<String>| Origin {
            subject: subject.to_owned(),
            msg_id,
            stream_seq: seq,
            stream_unix_us,
        };
        let reject = |this: &mut Self, r: rows::Reject, msg_id| {
            this.rejects.push(RejectRow {
                stream: this.kind.stream(),
                origin: origin(msg_id),
                kind: r.label(),
                reason: r.to_string(),
                body: m.payload.clone(),
            });
        };
        match self.kind {
            Kind::Telemetry => match rows::decode_telemetry(&m.payload, Some(subject)) {
                Ok(row) => {
                    self.msg_id.clear();
                    match &header_id {
                        Some(id) => self.msg_id.push_str(id),
                        None => crate::message::write_msg_id(&row.frame, &mut self.msg_id),
                    }
                    self.copy.telemetry(&row, &self.msg_id, seq);
                    let day = row.day_index();
                    if !self.days.contains(&day) {
                        self.days.push(day);
                    }
                }
                Err(r) => reject(self, r, header_id),
            },
            Kind::Ops => match rows::ops_kind(subject) {
                OpsKind::Tag => match rows::decode_tag(&m.payload) {
                    Ok(t) => self
                        .ops
                        .push(OpsRow::Tag(t, origin(header_id), m.payload.clone())),
                    Err(r) => reject(self, r, header_id),
                },
                OpsKind::Command => match rows::decode_command(&m.payload) {
                    Ok(c) => {
                        self.ops
                            .push(OpsRow::Command(c, origin(header_id), m.payload.clone()))
                    }
                    Err(r) => reject(self, r, header_id),
                },
                OpsKind::Event => {
                    let json = rows::event_json(&m.payload);
                    self.ops
                        .push(OpsRow::Event(origin(header_id), m.payload.clone(), json));
                }
            },
        }
        match self.ack {
            // The highest stream sequence covers the batch (a redelivered
            // message late in a batch has a lower one).
            AckMode::All => {
                if seq >= self.ack_seq || self.acks.is_empty() {
                    self.ack_seq = seq;
                    self.acks.clear();
                    self.acks.push(m);
                }
            }
            AckMode::Explicit => self.acks.push(m),
        }
    }

    fn take(&mut self) -> Pending {
        let mut days = std::mem::take(&mut self.days);
        days.sort_unstable();
        let copy_rows = self.copy.rows();
        let copy = if copy_rows > 0 {
            bytes::Bytes::from(self.copy.finish())
        } else {
            bytes::Bytes::new()
        };
        self.copy.clear();
        let p = Pending {
            batch: Batch {
                copy,
                copy_rows,
                days,
                redelivered: std::mem::take(&mut self.redelivered),
                ops: std::mem::take(&mut self.ops),
                rejects: std::mem::take(&mut self.rejects),
            },
            ack: !std::mem::take(&mut self.gap),
            acks: std::mem::take(&mut self.acks),
            messages: self.messages,
            last_unix_us: self.last_unix_us,
        };
        self.messages = 0;
        self.ack_seq = 0;
        p
    }
}

/// Read the consumer, build batches, hand them on. Returns when `stop` is
/// set (after handing on the partial batch) or the writer is gone.
async fn decode_loop(
    kind: Kind,
    js: jetstream::Context,
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
    cfg: ArchiveConfig,
    tx: mpsc::Sender<Item>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let progress = stats.progress(kind);
    let flush = Duration::from_millis(cfg.flush_interval_ms);
    let mut b = Builder::new(kind, &cfg);
    b.last_cseq = consumer.cached_info().delivered.consumer_sequence;
    let mut backoff = Duration::from_millis(cfg.retry_backoff_initial_ms);
    'reopen: loop {
        if *stop.borrow() {
            return;
        }
        let mut msgs = match consumer
            .stream()
            .max_messages_per_batch(cfg.batch_len_max.min(10_000))
            .messages()
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(stream = kind.stream(), error = %e, "pull consumer: retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_millis(cfg.retry_backoff_max_ms));
                continue 'reopen;
            }
        };
        loop {
            // Wait for the first message of a batch (or stop).
            let first = tokio::select! {
                m = msgs.next() => m,
                _ = stop.wait_for(|s| *s) => return,
            };
            match first {
                Some(Ok(m)) => b.add(m, progress),
                Some(Err(e)) => {
                    tracing::debug!(stream = kind.stream(), error = %e, "pull consumer");
                    continue;
                }
                None => continue 'reopen,
            }
            backoff = Duration::from_millis(cfg.retry_backoff_initial_ms);
            let deadline = tokio::time::sleep(flush);
            let mut deadline = std::pin::pin!(deadline);
            let mut stopping = false;
            let mut reopen = false;
            while (b.messages as usize) < cfg.batch_len_max && !b.gap {
                tokio::select! {
                    biased;
                    m = msgs.next() => match m {
                        Some(Ok(m)) => b.add(m, progress),
                        Some(Err(e)) => tracing::debug!(stream = kind.stream(), error = %e, "pull consumer"),
                        None => { reopen = true; break; }
                    },
                    () = &mut deadline => break,
                    _ = stop.wait_for(|s| *s) => { stopping = true; break; }
                }
            }
            let gap = b.gap;
            let p = b.take();
            stats.messages.fetch_add(p.messages, Relaxed);
            progress.taken.fetch_add(p.messages, Relaxed);
            if tx.send(Item::Batch(p)).await.is_err() || stopping {
                return;
            }
            if gap {
                // Stop reading, let the writer commit everything handed on
                // (acking what came before the gap), then re-read from the
                // ack floor: the missing delivery comes back at once, and
                // what was committed after the floor is skipped.
                drop(msgs);
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                if tx.send(Item::Barrier(done_tx)).await.is_err() || done_rx.await.is_err() {
                    return;
                }
                loop {
                    match open_consumer(&js, kind, &cfg, true).await {
                        Ok(c) => {
                            consumer = c;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(stream = kind.stream(), error = %format!("{e:#}"), "rewind failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(backoff) => {}
                                _ = stop.wait_for(|s| *s) => return,
                            }
                            backoff =
                                (backoff * 2).min(Duration::from_millis(cfg.retry_backoff_max_ms));
                        }
                    }
                }
                b.last_cseq = consumer.cached_info().delivered.consumer_sequence;
                stats.rewinds.fetch_add(1, Relaxed);
                continue 'reopen;
            }
            if reopen {
                continue 'reopen;
            }
        }
    }
}

/// Commit batches in order, ack each after its commit. Retries a batch
/// until it commits. With `maintain`, also keeps the partitions.
async fn write_loop(
    kind: Kind,
    dsn: String,
    cfg: ArchiveConfig,
    mut rx: mpsc::Receiver<Item>,
    stats: Arc<Stats>,
    maintain: bool,
) {
    let progress = stats.progress(kind);
    let mut db: Option<Db> = None;
    let mut upkeep = tokio::time::interval(Duration::from_secs(cfg.maintenance_interval_s));
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p {
                Some(Item::Batch(p)) => p,
                Some(Item::Barrier(done)) => {
                    let _ = done.send(());
                    continue;
                }
                None => return,
            },
            _ = upkeep.tick(), if maintain => {
                if let Some(d) = connected(&mut db, &dsn, &cfg, &stats).await {
                    match d.maintain(now_unix_us(), cfg.partition_premake_days, cfg.retention_days).await {
                        Ok((created, dropped)) => {
                            stats.partitions_created.fetch_add(created.max(0) as u64, Relaxed);
                            stats.partitions_dropped.fetch_add(dropped.len() as u64, Relaxed);
                            if !dropped.is_empty() {
                                tracing::info!(?dropped, retention_days = cfg.retention_days, "retention dropped partitions");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "partition upkeep failed; next time");
                            db = None;
                        }
                    }
                }
                continue;
            }
        };
        let mut backoff = Duration::from_millis(cfg.retry_backoff_initial_ms);
        let (written, took) = loop {
            if let Some(d) = connected(&mut db, &dsn, &cfg, &stats).await {
                let t0 = Instant::now();
                match d.write(&p.batch).await {
                    Ok(w) => break (w, t0.elapsed()),
                    Err(e) => {
                        stats.db_errors.fetch_add(1, Relaxed);
                        tracing::warn!(
                            stream = kind.stream(),
                            error = %format!("{e:#}"),
                            retry_in_ms = backoff.as_millis() as u64,
                            "batch not written; not acked, retrying"
                        );
                        db = None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(cfg.retry_backoff_max_ms));
        };
        // Committed: now, and only now, ack.
        for m in p.acks.iter().filter(|_| p.ack) {
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "ack failed; the batch will be redelivered and skipped");
            }
        }
        let b = &p.batch;
        stats.telemetry_rows.fetch_add(written.telemetry, Relaxed);
        stats.telemetry_duplicate.fetch_add(
            (b.copy_rows as u64).saturating_sub(written.telemetry),
            Relaxed,
        );
        stats.ops_rows.fetch_add(written.ops, Relaxed);
        stats
            .ops_duplicate
            .fetch_add((b.ops.len() as u64).saturating_sub(written.ops), Relaxed);
        stats.rejected.fetch_add(b.rejects.len() as u64, Relaxed);
        stats.batches.fetch_add(1, Relaxed);
        if p.ack {
            stats.acked.fetch_add(p.messages, Relaxed);
        }
        progress.committed.fetch_add(p.messages, Relaxed);
        progress.committed_unix_us.store(p.last_unix_us, Relaxed);
        if let Ok(mut h) = stats.commit.lock() {
            h.saturating_record(took.as_nanos() as u64);
        }
    }
}

/// The session, connecting (once) if there is none; None if that failed
/// (counted and logged; the caller backs off).
async fn connected<'a>(
    db: &'a mut Option<Db>,
    dsn: &str,
    cfg: &ArchiveConfig,
    stats: &Stats,
) -> Option<&'a mut Db> {
    if db.is_none() {
        match Db::connect(dsn, cfg).await {
            Ok(d) => {
                tracing::info!("postgres connected, schema up to date");
                *db = Some(d);
            }
            Err(e) => {
                stats.db_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "postgres unavailable; retrying");
                return None;
            }
        }
    }
    db.as_mut()
}

/// Create (or update) the durable pull consumer. Under ack policy all it
/// is rewound to its ack floor when it has unacked deliveries (at start:
/// a predecessor's), or always with `rewind` (a delivery went missing).
async fn open_consumer(
    js: &jetstream::Context,
    kind: Kind,
    cfg: &ArchiveConfig,
    rewind: bool,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js
        .get_stream(kind.stream())
        .await
        .with_context(|| format!("stream {} not found (start ingest, or let archive create it with stream.create = true)", kind.stream()))?;
    let durable = match kind {
        Kind::Telemetry => cfg.durable.clone(),
        Kind::Ops => cfg.ops_durable.clone(),
    };
    let ack_policy = match cfg.ack {
        AckMode::All => AckPolicy::All,
        AckMode::Explicit => AckPolicy::Explicit,
    };
    let mut config = pull::Config {
        durable_name: Some(durable.clone()),
        description: Some("tspi archive".into()),
        ack_policy,
        ack_wait: Duration::from_secs(cfg.ack_wait_s),
        max_ack_pending: cfg.max_ack_pending(),
        filter_subjects: match kind {
            Kind::Telemetry => Vec::new(),
            Kind::Ops => OPS_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        },
        ..Default::default()
    };
    if let Ok(info) = stream.consumer_info(&durable).await {
        anyhow::ensure!(
            info.config.ack_policy == ack_policy,
            "durable consumer {durable} on {} has ack policy {:?}, but archive.ack = {:?}: an ack \
             policy cannot change; set archive.ack back, or remove the consumer (it then starts \
             again from the beginning of the stream; rows already archived are skipped)",
            kind.stream(),
            info.config.ack_policy,
            cfg.ack
        );
        // Keep where it was told to start (updates may not change it).
        config.deliver_policy = info.config.deliver_policy;
        if cfg.ack == AckMode::All && (rewind || info.num_ack_pending > 0) {
            // Messages delivered to a predecessor and never acked. Under
            // ack policy all, our first ack would cover them before they
            // are redelivered: rewind to the ack floor instead. What the
            // predecessor committed after the floor is skipped by the
            // unique keys.
            let start = info.ack_floor.stream_sequence + 1;
            tracing::warn!(
                consumer = %durable,
                unacked = info.num_ack_pending,
                start_sequence = start,
                "ack policy all: rewinding the consumer to its ack floor"
            );
            stream
                .delete_consumer(&durable)
                .await
                .with_context(|| format!("removing consumer {durable} to rewind it"))?;
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: start,
            };
        }
    }
    stream.create_consumer(config).await.with_context(|| {
        format!(
            "creating or updating durable consumer {durable} on {}",
            kind.stream()
        )
    })
}

/// Run until `stop` resolves, then drain: the decode tasks hand on their
/// partial batches, the writers commit and ack what they hold (up to
/// `archive.drain_timeout_s`), then the NATS client is flushed.
pub async fn run(
    cfg: Config,
    dsn: String,
    stats: Arc<Stats>,
    json: bool,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Account> {
    let a = cfg.archive.clone();
    a.validate()?;
    anyhow::ensure!(
        cfg.metrics.interval_s > 0,
        "metrics.interval_s must be at least 1"
    );
    dsn.parse::<tokio_postgres::Config>().map_err(|e| {
        anyhow::anyhow!("archive.postgres / --postgres is not a valid connection string: {e}")
    })?;
    let client = crate::ingest::connect(&cfg.nats).await?;
    let js = jetstream::new(client.clone());
    if cfg.stream.create {
        let settings = cfg.stream.telemetry_settings();
        ensure_stream(
            &js,
            telemetry_stream(&cfg.nats.subject_prefix, &settings),
            Duration::from_secs(30),
        )
        .await
        .context("creating or updating the TSPI stream")?;
        if a.ops {
            ensure_stream(&js, ops_stream(&settings), Duration::from_secs(30))
                .await
                .context("creating or updating the TSPI_OPS stream")?;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Told when the writers are done, so the last report counts everything.
    let (report_done_tx, report_done_rx) = watch::channel(false);
    let mut kinds = vec![Kind::Telemetry];
    if a.ops {
        kinds.push(Kind::Ops);
    }
    let mut decoders = Vec::new();
    let mut writers = Vec::new();
    for kind in kinds {
        let c = open_consumer(&js, kind, &a, false).await?;
        let (tx, rx) = mpsc::channel(a.batches_in_flight_max);
        decoders.push(tokio::spawn(decode_loop(
            kind,
            js.clone(),
            c,
            a.clone(),
            tx,
            stop_rx.clone(),
            stats.clone(),
        )));
        writers.push(tokio::spawn(write_loop(
            kind,
            dsn.clone(),
            a.clone(),
            rx,
            stats.clone(),
            kind == Kind::Telemetry,
        )));
    }
    tracing::info!(
        durable = %a.durable,
        batch_len_max = a.batch_len_max,
        flush_interval_ms = a.flush_interval_ms,
        ack = ?a.ack,
        "archiving"
    );
    let reporter = tokio::spawn(report_loop(
        cfg.clone(),
        client.clone(),
        stats.clone(),
        json,
        report_done_rx,
    ));

    stop.await;
    tracing::info!("stopping: draining batches in flight");
    let _ = stop_tx.send(true);
    for d in decoders {
        let _ = d.await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.drain_timeout_s);
    let mut abandoned = 0;
    for mut w in writers {
        match tokio::time::timeout_at(deadline, &mut w).await {
            Ok(_) => {}
            Err(_) => {
                w.abort();
                abandoned += 1;
                tracing::warn!(
                    "drain timed out: batches left unacked (redelivered and skipped later)"
                );
            }
        }
    }
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "flushing the last acks failed; those batches will be redelivered and skipped");
    }
    // The reporter emits a last report and returns: nothing it prints can
    // come after the caller's final account.
    let _ = report_done_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    Ok(Account {
        counters: stats.counters(),
        abandoned_batches: abandoned,
    })
}

async fn report_loop(
    cfg: Config,
    client: async_nats::Client,
    stats: Arc<Stats>,
    json: bool,
    mut done: watch::Receiver<bool>,
) {
    let m = &cfg.metrics;
    let (prom_tx, prom_rx) = watch::channel(String::new());
    if let Some(addr) = m.addr {
        match serve_prometheus(addr, prom_rx).await {
            Ok((bound, _task)) => tracing::info!(%bound, "prometheus /metrics"),
            Err(e) => tracing::error!(%addr, error = %e, "cannot serve /metrics"),
        }
    }
    let host = hostname();
    let mut cumulative = new_latency_histogram();
    let mut previous = Counters::default();
    let mut previous_unix_ms = (now_unix_us() / 1000) as u64;
    let mut previous_mono = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(m.interval_s));
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = done.wait_for(|d| *d) => true,
        };
        let interval = match stats.commit.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, new_latency_histogram()),
            Err(_) => new_latency_histogram(),
        };
        let _ = cumulative.add(&interval);
        let counters = stats.counters();
        let now_us = now_unix_us();
        let r = report::Report {
            start_unix_ms: previous_unix_ms,
            at_unix_ms: (now_us / 1000) as u64,
            interval_s: previous_mono.elapsed().as_secs_f64(),
            counters,
            delta: counters.delta_since(&previous),
            telemetry_lag: stats.telemetry.lag(now_us),
            ops_lag: stats.ops.lag(now_us),
            commit: &interval,
            commit_cumulative: &cumulative,
        };
        tracing::info!("{}", report::render_log_line(&r));
        if json {
            println!("{}", report::render_json_line(&r));
        }
        prom_tx.send_replace(report::render_prometheus(&r));
        if m.nats_snapshot {
            let (subject, body) = report::snapshot_message(&r, &host);
            if let Err(e) = client.publish(subject, body.into()).await {
                tracing::warn!(error = %e, "metrics snapshot not published");
            }
        }
        if last {
            return;
        }
        previous = counters;
        previous_unix_ms = r.at_unix_ms;
        previous_mono = Instant::now();
    }
}

/// The archiver running as a task of the current runtime (tests, bench).
#[derive(Debug)]
pub struct Handle {
    pub stats: Arc<Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Account>>,
}

impl Handle {
    pub fn spawn(cfg: Config, dsn: String) -> Handle {
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(cfg, dsn, stats.clone(), false, async move {
            let _ = stop_rx.await;
        }));
        Handle { stats, stop, task }
    }

    /// True once `run` has returned (an error at start, for instance).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stop as SIGTERM does and return the account.
    pub async fn stop(self) -> anyhow::Result<Account> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
