//! Edge: per stream, a task that owns the durable pull consumer and the
//! clock and drives a [`Batcher`] (the pure core decides batches, acks,
//! retries and rewinds), and a writer task that owns the PostgreSQL session
//! and commits one batch at a time (`writer.rs`); plus the reporter.
//!
//! ```text
//! TSPI ──pull──> stream task (Batcher) ──Write──> writer ──> PostgreSQL
//!                  ^   │ Ack / Rewind              │
//!                  └───┼──── committed / failed ───┘
//! TSPI_OPS ─pull─> stream task ──> writer ──┘
//! ```
//!
//! Back-pressure: while the database is away the batcher retries the head
//! batch (backoff, reconnect), holds at most `batches_in_flight_max + 1`
//! closed batches and then stops reading, and the consumer's
//! `max_ack_pending` stops the server from delivering more. Nothing is
//! acked, nothing is dropped.

use super::consumer::open_consumer;
use super::db::WriteError;
use super::proto::{
    AckPlan, Action, Batch, Batcher, BatcherConfig, Delivery, Kind, Outcome, Written,
};
use super::reporting::{self, AbortOnDrop};
use super::{AckMode, AckSetting, ArchiveConfig};
use crate::config::{Config, ConfigError, Machine, Role};
use crate::jetstream::{
    Existing, STREAM_OPS, STREAM_TELEMETRY, ensure_stream_with, ops_stream, telemetry_required,
    telemetry_stream,
};
use crate::metrics::Exposition;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
    message::Acker,
};
use futures_util::StreamExt as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the archiver could not start (or a stream could not be reopened).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("archive.postgres / --postgres is not a valid connection string: {}", super::db::pg_text(.0))]
    Dsn(tokio_postgres::Error),
    #[error("connecting to NATS: {0}")]
    Nats(#[source] BoxError),
    #[error("creating or updating the {stream} stream: {source}")]
    CreateStream {
        stream: &'static str,
        #[source]
        source: BoxError,
    },
    #[error(
        "stream {stream} not found (start ingest, or let archive create it with stream.create = true): {source}"
    )]
    NoStream {
        stream: &'static str,
        #[source]
        source: BoxError,
    },
    #[error(
        "durable consumer {durable} on {stream} has ack policy {found:?}, but archive.ack = {want:?}: \
         an ack policy cannot change; set archive.ack back (or to \"auto\", which keeps it), or \
         remove the consumer (it then starts again from the beginning of the stream; rows already \
         archived are skipped)"
    )]
    AckPolicy {
        durable: String,
        stream: &'static str,
        found: AckPolicy,
        want: AckSetting,
    },
    #[error(transparent)]
    Tls(#[from] crate::pg::TlsError),
    #[error("the archiver's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{what} durable consumer {durable} on {stream}: {source}")]
    Consumer {
        what: &'static str,
        durable: String,
        stream: &'static str,
        #[source]
        source: BoxError,
    },
}

pub(super) use super::stats::now_unix_us;
pub use super::stats::{Account, CommitLatency, Stats, StreamProgress};
/// Subjects of `TSPI_OPS` that are archived: display and other commands,
/// tags, control and status heartbeats. Metrics snapshots
/// (`tspi.ops.metrics.>`) are not: they are the boxes' own reports.
pub use crate::contract::names::OPS_SUBJECTS_ARCHIVED as OPS_SUBJECTS;

/// The stream a batcher of this kind reads.
pub(super) fn stream_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Telemetry => STREAM_TELEMETRY,
        Kind::Ops => STREAM_OPS,
    }
}

/// What the writer hands back: the batch, its outcome, how long it took.
pub(super) type Done = (Arc<Batch>, Result<Written, WriteError>, Duration);

/// The batcher's configuration for a stream whose consumer acks with `ack`.
fn batcher_config(kind: Kind, cfg: &ArchiveConfig, ack: AckMode) -> BatcherConfig {
    BatcherConfig {
        kind,
        stream: stream_name(kind),
        ack,
        batch_len_max: cfg.batch_len_max,
        flush_interval: Duration::from_millis(cfg.flush_interval_ms),
        // One being written and `batches_in_flight_max` decoded ahead.
        batches_queued_max: cfg.batches_in_flight_max + 1,
        retry_backoff_initial: Duration::from_millis(cfg.retry_backoff_initial_ms),
        retry_backoff_max: Duration::from_millis(cfg.retry_backoff_max_ms),
    }
}

/// A delivery as the batcher's plain data: (what it acks with, the rest).
fn take_delivery(
    b: &mut Batcher<Acker>,
    now: Duration,
    m: jetstream::Message,
    progress: &StreamProgress,
) -> bool {
    let (stream_seq, consumer_seq, delivered, stream_unix_us) = match m.info() {
        Ok(i) => {
            progress.pending.store(i.pending, Relaxed);
            (
                i.stream_sequence,
                i.consumer_sequence,
                u64::try_from(i.delivered).unwrap_or(1),
                (i.published.unix_timestamp_nanos() / 1000) as i64,
            )
        }
        // Not a JetStream delivery (cannot happen on a pull consumer's own
        // inbox): archived with sequence 0 rather than dropped.
        Err(_) => (0, 0, 2, now_unix_us()),
    };
    if progress.first_taken_unix_us.load(Relaxed) == 0 {
        progress.first_taken_unix_us.store(stream_unix_us, Relaxed);
    }
    let (msg, acker) = m.split();
    let async_nats::Message {
        subject,
        payload,
        headers,
        ..
    } = msg;
    let msg_id = headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str());
    b.handle_delivery(
        now,
        Delivery {
            token: acker,
            stream_seq,
            consumer_seq,
            delivered,
            stream_unix_us,
            subject: subject.as_str(),
            msg_id,
            payload,
        },
    )
}

/// Work for a stream's ack task.
enum AckJob {
    Plan(AckPlan<Acker>),
    /// Answered once every earlier plan is sent.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Send ack plans in order. A task of its own, as the acks were sent by
/// the old writer task: an explicit-ack batch is thousands of small
/// publishes, and the stream task meanwhile decodes the next batch.
async fn ack_loop(mut rx: mpsc::Receiver<AckJob>, stats: Arc<Stats>, kind: Kind) {
    while let Some(job) = rx.recv().await {
        match job {
            AckJob::Plan(plan) => {
                for a in plan.tokens {
                    if let Err(e) = a.ack().await {
                        tracing::warn!(error = %e, "ack failed; the message will be redelivered and skipped");
                    }
                }
                // After the acks are handed to the connection: a consumer
                // info request sent later reaches the server after them.
                stats.acked.fetch_add(plan.messages, Relaxed);
                stats.progress(kind).acked.fetch_add(plan.messages, Relaxed);
            }
            AckJob::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Count a committed batch.
fn account_commit(stats: &Stats, progress: &StreamProgress, b: &Batch, w: Written, took: Duration) {
    stats.telemetry_rows.fetch_add(w.telemetry, Relaxed);
    stats
        .telemetry_duplicate
        .fetch_add((b.copy_rows as u64).saturating_sub(w.telemetry), Relaxed);
    stats.ops_rows.fetch_add(w.ops, Relaxed);
    stats
        .ops_duplicate
        .fetch_add((b.ops.len() as u64).saturating_sub(w.ops), Relaxed);
    stats.rejected.fetch_add(b.rejects.len() as u64, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    progress.committed.fetch_add(b.messages, Relaxed);
    progress
        .committed_unix_us
        .store(b.last_stream_unix_us, Relaxed);
    // Counted (above) before recorded: a scrape locks the histograms
    // first, then reads the counters, and so never shows more commits than
    // batches.
    if let Ok(mut h) = stats.commit.lock() {
        h.record(took.as_nanos() as u64);
    }
}

/// One stream: [`stream_loop`] and its ack task; returns once both are
/// done (every batch taken committed and its acks sent).
#[allow(clippy::too_many_arguments)]
async fn stream_task(
    kind: Kind,
    js: jetstream::Context,
    (consumer, ack): (jetstream::consumer::Consumer<pull::Config>, AckMode),
    cfg: ArchiveConfig,
    write_tx: mpsc::Sender<Arc<Batch>>,
    done_rx: mpsc::Receiver<Done>,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let (ack_tx, ack_rx) = mpsc::channel(cfg.batches_in_flight_max + 2);
    let acks = tokio::spawn(ack_loop(ack_rx, stats.clone(), kind));
    stream_loop(
        kind,
        js,
        (consumer, ack),
        cfg,
        write_tx,
        done_rx,
        ack_tx,
        stop,
        stats,
    )
    .await;
    let _ = acks.await;
}

/// Read the consumer into the batcher, carry out its actions, feed it the
/// writer's outcomes and the clock. Returns once stopped and drained, or if
/// the writer is gone.
#[allow(clippy::too_many_arguments)]
async fn stream_loop(
    kind: Kind,
    js: jetstream::Context,
    (mut consumer, ack): (jetstream::consumer::Consumer<pull::Config>, AckMode),
    cfg: ArchiveConfig,
    write_tx: mpsc::Sender<Arc<Batch>>,
    mut done_rx: mpsc::Receiver<Done>,
    ack_tx: mpsc::Sender<AckJob>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let stream = stream_name(kind);
    let progress = stats.progress(kind);
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed();
    let mut b: Batcher<Acker> = Batcher::new(
        batcher_config(kind, &cfg, ack),
        consumer.cached_info().delivered.consumer_sequence,
    );
    let backoffs = crate::backoff::Backoff::new(
        Duration::from_millis(cfg.retry_backoff_initial_ms),
        Duration::from_millis(cfg.retry_backoff_max_ms),
    );
    let mut backoff = backoffs.initial();
    let mut msgs = None;
    let mut reopen_at = origin;
    let mut stopping = false;
    // Rewinds in the current minute: (its start, count).
    let mut rewind_window = (Duration::ZERO, 0u32);
    // One timer for the batcher's deadline, moved only when the deadline
    // does: a fresh `sleep_until` per delivery registers a timer entry for
    // every message (the loop turns once per delivery).
    let timer = tokio::time::sleep_until(origin);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        while let Some(action) = b.poll() {
            match action {
                Action::Write(batch) => {
                    if write_tx.send(batch).await.is_err() {
                        return;
                    }
                }
                Action::Ack(plan) => {
                    if ack_tx.send(AckJob::Plan(plan)).await.is_err() {
                        return;
                    }
                }
                Action::Rewind => {
                    // Everything taken is committed. Re-read from the ack
                    // floor (once the acks before it are out): the missing
                    // delivery comes back, and what was committed after the
                    // floor is skipped.
                    msgs = None;
                    let (done, acks_sent) = tokio::sync::oneshot::channel();
                    if ack_tx.send(AckJob::Barrier(done)).await.is_err() || acks_sent.await.is_err()
                    {
                        return;
                    }
                    loop {
                        match open_consumer(&js, kind, &cfg, ack.into(), true).await {
                            Ok((c, _)) => {
                                consumer = c;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(stream, error = %e, "rewind failed; retrying");
                                tokio::select! {
                                    () = tokio::time::sleep(backoff) => {}
                                    _ = stop.wait_for(|s| *s) => return,
                                }
                                backoff = backoffs.next(backoff);
                            }
                        }
                    }
                    b.handle_rewound(consumer.cached_info().delivered.consumer_sequence);
                    stats.rewinds.fetch_add(1, Relaxed);
                    // A lost delivery is rare (a reconnect); rewinds one
                    // after another mean another client takes deliveries.
                    let t = now();
                    if t.saturating_sub(rewind_window.0) > Duration::from_secs(60) {
                        rewind_window = (t, 0);
                    }
                    rewind_window.1 += 1;
                    if rewind_window.1 == 3 {
                        tracing::error!(
                            stream,
                            "three consumer rewinds within a minute under ack policy all: another \
                             client is taking this durable's deliveries (several archivers sharing \
                             it?). Nothing is lost, but each rewind re-reads from the ack floor; \
                             archivers that share a durable need archive.ack = \"explicit\" (the \
                             consumer must be removed to change its policy)"
                        );
                    }
                }
            }
        }
        if stopping && b.is_idle() {
            return;
        }
        let reading = !stopping && b.wants_deliveries();
        if reading && msgs.is_none() && tokio::time::Instant::now() >= reopen_at {
            match consumer
                .stream()
                .max_messages_per_batch(cfg.batch_len_max.min(10_000))
                .messages()
                .await
            {
                Ok(s) => msgs = Some(s),
                Err(e) => {
                    tracing::warn!(stream, error = %e, "pull consumer: retrying");
                    reopen_at = tokio::time::Instant::now() + backoff;
                    backoff = backoffs.next(backoff);
                }
            }
        }
        let deadline = b.poll_timeout().map(|d| origin + d);
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            done = done_rx.recv() => {
                let Some((batch, result, took)) = done else { return };
                match result {
                    Ok(w) => {
                        account_commit(&stats, progress, &batch, w, took);
                        b.handle_committed(now());
                    }
                    Err(e) => {
                        stats.db_errors.fetch_add(1, Relaxed);
                        let failure = e.failure();
                        match b.handle_failed(now(), failure) {
                            Outcome::RetryAt(at) => tracing::warn!(
                                stream,
                                error = %e,
                                retry_in_ms = at.saturating_sub(now()).as_millis() as u64,
                                "batch not written; not acked, retrying"
                            ),
                            Outcome::Split { messages } => tracing::warn!(
                                stream,
                                error = %e,
                                messages,
                                "batch refused for good; writing its halves to find the refused rows"
                            ),
                            Outcome::Refused { stream_seq } => tracing::warn!(
                                stream,
                                stream_seq,
                                error = %e,
                                "message refused by the database; archived in tspi_rejects"
                            ),
                        }
                    }
                }
            }
            m = async {
                match msgs.as_mut() {
                    Some(m) => m.next().await,
                    None => std::future::pending().await,
                }
            }, if reading => match m {
                Some(Ok(m)) => {
                    if take_delivery(&mut b, now(), m, progress) {
                        stats.messages.fetch_add(1, Relaxed);
                        progress.taken.fetch_add(1, Relaxed);
                    }
                    backoff = backoffs.initial();
                }
                Some(Err(e)) => tracing::debug!(stream, error = %e, "pull consumer"),
                None => msgs = None,
            },
            () = &mut timer, if armed.is_some() => {
                armed = None;
                b.handle_timeout(now());
            }
            () = tokio::time::sleep_until(reopen_at), if reading && msgs.is_none() => {}
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                msgs = None;
                b.handle_stop();
            }
        }
    }
}

/// Run until `stop` resolves, then drain: each stream task stops reading,
/// writes its partial batch and commits and acks what it holds (up to
/// `archive.drain_timeout_s`), then the NATS client is flushed.
pub async fn run(
    cfg: Config,
    dsn: String,
    stats: Arc<Stats>,
    json: bool,
    stop: impl Future<Output = ()>,
) -> Result<Account, ArchiveError> {
    run_reporting(cfg, dsn, stats, json, None, stop).await
}

/// [`run`], registering the archive's `/metrics` part in `prometheus`
/// instead of serving `metrics.addr` itself when it is given (`tspi run`
/// serves every role on one endpoint: see [`Exposition`]).
pub async fn run_reporting(
    cfg: Config,
    dsn: String,
    stats: Arc<Stats>,
    json: bool,
    prometheus: Option<Exposition>,
    stop: impl Future<Output = ()>,
) -> Result<Account, ArchiveError> {
    let a = cfg.archive.clone();
    // Everything before the first request to a server (this may update the
    // shared TSPI stream below).
    cfg.validate_for(&[Role::Archive], &Machine::current())?;
    dsn.parse::<tokio_postgres::Config>()
        .map_err(ArchiveError::Dsn)?;
    // A CA file that cannot be read is an error now, not a retry loop.
    crate::pg::Tls::from_setting(a.ca_file.as_deref())?;
    let client = crate::nats::connect(&cfg.nats)
        .await
        .map_err(|e| ArchiveError::Nats(e.into()))?;
    let js = jetstream::new(client.clone());
    if cfg.stream.create {
        let settings = cfg.stream.telemetry_settings();
        ensure_stream_with(
            &js,
            telemetry_stream(&cfg.nats.subject_prefix, &settings),
            &Existing {
                update: settings.update,
                required: Some(telemetry_required(&cfg.nats.subject_prefix)),
            },
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| ArchiveError::CreateStream {
            stream: STREAM_TELEMETRY,
            source: e.into(),
        })?;
        if a.ops {
            ensure_stream_with(
                &js,
                ops_stream(&settings),
                &Existing::update(settings.update),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| ArchiveError::CreateStream {
                stream: STREAM_OPS,
                source: e.into(),
            })?;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Told when the writers are done, so the last report counts everything.
    let (report_done_tx, report_done_rx) = watch::channel(false);
    let mut kinds = vec![Kind::Telemetry];
    if a.ops {
        kinds.push(Kind::Ops);
    }
    let mut streams = Vec::new();
    let mut writers = Vec::new();
    for kind in kinds {
        let c = open_consumer(&js, kind, &a, a.ack, false).await?;
        tracing::info!(stream = stream_name(kind), ack = ?c.1, "durable consumer opened");
        // One batch at a time each way: the batcher keeps the order.
        let (write_tx, write_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = mpsc::channel(1);
        streams.push(tokio::spawn(stream_task(
            kind,
            js.clone(),
            c,
            a.clone(),
            write_tx,
            done_rx,
            stop_rx.clone(),
            stats.clone(),
        )));
        writers.push(tokio::spawn(super::writer::write_loop(
            dsn.clone(),
            a.clone(),
            write_rx,
            done_tx,
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
    let mut durables = vec![(Kind::Telemetry, a.durable.clone())];
    if a.ops {
        durables.push((Kind::Ops, a.durable_ops.clone()));
    }
    // Ends with this function, however it returns. What a fold has not
    // reached when it ends is folded by the next archiver (the aggregate's
    // view sums both tables meanwhile).
    let _fold = AbortOnDrop(tokio::spawn(super::writer::fold_loop(
        dsn.clone(),
        a.clone(),
        stats.clone(),
    )));
    let _lag_poll = AbortOnDrop(tokio::spawn(reporting::lag_poll_loop(
        js.clone(),
        durables,
        stats.clone(),
    )));
    let reporter = tokio::spawn(reporting::report_loop(
        cfg.clone(),
        client.clone(),
        stats.clone(),
        json,
        prometheus,
        report_done_rx,
    ));

    stop.await;
    match stats.db_down() {
        // Say at once what the drain waits for, and what happens if it
        // waits in vain: nothing is lost, nothing is acked uncommitted.
        Some(error) => tracing::warn!(
            uncommitted = stats.uncommitted(),
            drain_timeout_s = a.drain_timeout_s,
            last_error = %error,
            "stopping while PostgreSQL cannot be reached: waiting up to {} s for it to commit the \
             {} messages taken; what is not committed by then stays unacknowledged and JetStream \
             redelivers it to the next archiver",
            a.drain_timeout_s,
            stats.uncommitted()
        ),
        None => tracing::info!(
            uncommitted = stats.uncommitted(),
            "stopping: draining batches in flight"
        ),
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.drain_timeout_s);
    let mut abandoned = 0;
    for mut s in streams {
        if tokio::time::timeout_at(deadline, &mut s).await.is_err() {
            s.abort();
            abandoned += 1;
            tracing::warn!(
                drain_timeout_s = a.drain_timeout_s,
                "drain timed out: batches left unacknowledged; JetStream redelivers them to the \
                 next archiver (rows already committed are skipped)"
            );
        }
    }
    // The stream tasks are done (or aborted): their writers see the
    // channel close and end (an abandoned one may be mid-transaction).
    for mut w in writers {
        if tokio::time::timeout(Duration::from_secs(1), &mut w)
            .await
            .is_err()
        {
            w.abort();
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

/// The archiver running as a task of the current runtime (tests, bench).
#[derive(Debug)]
pub struct Handle {
    pub stats: Arc<Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Account, ArchiveError>>,
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
    pub async fn stop(self) -> Result<Account, ArchiveError> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
