//! `tspi ingest`: the receive threads, the publisher and the reporter,
//! wired together, with a drained stop and a final account.
//!
#![doc = include_str!("../docs/ingest.md")]

use crate::config::{Config, Machine, PublishMode, Role};
use crate::jetstream::{Existing, ensure_stream_with, telemetry_required, telemetry_stream};
use crate::message::RecvTime;
use crate::metrics::{self, Gauges, IngestCounts, Report, Reporter};
use crate::publish::{FastConfig, Publisher, PublisherConfig, PublisherCounts, PublisherStats};
use crate::receive::{ReceiveConfig, ReceiverCounts, Receivers};
use crate::spool::{Spool, SpoolCounts};
use anyhow::Context as _;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long the stop waits for the last metrics snapshot and the final
/// flush, each: the server may be the reason the drain timed out.
const FINAL_FLUSH_MAX: Duration = Duration::from_secs(1);
/// How long past the drain timeout the stop waits for the publisher task
/// before it abandons it (it ends at the drain deadline by itself; this is
/// the bound if it does not).
const PUBLISHER_GRACE: Duration = Duration::from_secs(3);

/// The final account of a run. After a drained stop:
/// `received + spool.recovered = rejected + filtered + ring_dropped +
/// acked + failed + spool.dropped + spool.held`
/// (without a spool its terms are zero).
///
/// `failed` counts the frames not published: those JetStream had not
/// acknowledged when the drain timeout (`publish.drain_timeout_s`) ended
/// the stop, whether still in the rings, waiting to be published again or
/// published without an answer. [`Account::failed_reason`] says so.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub backend: String,
    /// `fast` (fast-ingest batches) or `pipelined`: what ran at the end.
    pub publish_mode: String,
    /// Fast-ingest batches committed.
    pub batches: u64,
    pub counters: IngestCounts,
    /// Why `counters.failed` frames were not published (`None` when none
    /// failed).
    pub failed_reason: Option<String>,
    /// The disk spool's terms (all zero without one): frames found at
    /// start, written, drained (acknowledged, counted in `acked` too),
    /// dropped by the full policy, torn, and held at the stop.
    pub spool: SpoolAccount,
}

/// The spool's part of the [`Account`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolAccount {
    pub recovered: u64,
    pub spooled: u64,
    pub drained: u64,
    pub dropped: u64,
    pub torn: u64,
    pub held: u64,
}

impl SpoolAccount {
    fn from_counts(c: &SpoolCounts) -> Self {
        SpoolAccount {
            recovered: c.recovered,
            spooled: c.spooled,
            drained: c.drained,
            dropped: c.dropped,
            torn: c.torn,
            held: c.held,
        }
    }
}

impl Account {
    /// The invariant of a drained stop.
    pub fn balanced(&self) -> bool {
        let c = &self.counters;
        let s = &self.spool;
        c.received + s.recovered
            == c.rejected.iter().sum::<u64>()
                + c.filtered
                + c.ring_dropped
                + c.acked
                + c.failed
                + s.dropped
                + s.held
    }
}

/// What the caller wants to hear about while it runs.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Print each report as a JSON line on stdout.
    pub json: bool,
    /// Told the bound UDP addresses once receiving has started (tests bind
    /// port 0).
    pub ready: Option<tokio::sync::oneshot::Sender<Vec<std::net::SocketAddr>>>,
    /// Register ingest's `/metrics` part in this exposition instead of
    /// serving `metrics.addr` itself (`tspi run` serves every role on one
    /// endpoint: see [`metrics::Exposition`]).
    pub prometheus: Option<metrics::Exposition>,
}

/// Ingest running as a task of the current runtime (tests, the demo).
#[derive(Debug)]
pub struct Handle {
    /// The bound UDP addresses (port 0 resolved).
    pub addrs: Vec<std::net::SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Account>>,
}

impl Handle {
    /// Start [`run`] and wait (up to `ready_within`) until it receives.
    pub async fn spawn(cfg: Config, ready_within: Duration) -> anyhow::Result<Handle> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            cfg,
            Hooks {
                json: false,
                ready: Some(ready_tx),
                prometheus: None,
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        match tokio::time::timeout(ready_within, ready_rx).await {
            Ok(Ok(addrs)) => Ok(Handle { addrs, stop, task }),
            // The sender was dropped: run returned early with its error.
            Ok(Err(_)) => Err(task
                .await?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("tspi ingest stopped before receiving"))),
            Err(_) => {
                task.abort();
                anyhow::bail!("tspi ingest did not start within {ready_within:?}")
            }
        }
    }

    /// Stop as SIGTERM does (drain, await acks) and return the account.
    pub async fn stop(self) -> anyhow::Result<Account> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Connect to NATS with every option of `[nats]` (kept here for callers of
/// its old path; the connection lives in [`crate::nats`]).
pub use crate::nats::connect;

/// The receive threads' settings from `[ingest]`.
pub fn receive_config(cfg: &Config) -> ReceiveConfig {
    cfg.ingest.receive_config()
}

/// The publisher's settings from `[publish]` and `[nats]` (validated
/// values: every conversion below is exact).
pub fn publisher_config(cfg: &Config) -> PublisherConfig {
    let p = &cfg.publish;
    PublisherConfig {
        subject_prefix: cfg.nats.subject_prefix.clone(),
        acks_in_flight_max: p.acks_in_flight_max,
        batch_len_max: p.batch_len_max,
        retry_backoff_initial: Duration::from_millis(p.retry_backoff_initial_ms),
        retry_backoff_max: Duration::from_millis(p.retry_backoff_max_ms),
        drain_timeout: Duration::from_secs(p.drain_timeout_s),
        fast: (p.mode == PublishMode::Fast).then(|| FastConfig {
            flow: p.fast_flow_max,
            ack_interval: Duration::from_micros(p.fast_ack_interval_us),
            outstanding: p.fast_acks_outstanding,
            batch_len_max: p.fast_batch_len_max,
            batch_age_max: Duration::from_millis(p.fast_batch_age_max_ms),
            idle_commit: Duration::from_millis(p.fast_commit_idle_ms),
            ack_timeout: Duration::from_millis(p.ack_timeout_ms),
            stream: crate::contract::names::STREAM_TELEMETRY.to_owned(),
        }),
    }
}

/// One report's counters from one receive snapshot and one publisher
/// snapshot.
fn counters(rc: &ReceiverCounts, p: &PublisherCounts, kernel_dropped: u64) -> IngestCounts {
    IngestCounts {
        received: rc.received,
        rejected: rc.rejected,
        filtered: rc.filtered,
        ring_dropped: rc.ring_dropped,
        published: p.published,
        // Frames from the spool the stream held already count as acked.
        acked: p.acked + p.resolved,
        duplicate: p.duplicate + p.resolved,
        retried: p.retried,
        // Handed to the spool at the stop, or left there: not lost.
        failed: p.failed.saturating_sub(p.to_spool + p.returned),
        kernel_dropped,
    }
}

/// The gauges of one receive snapshot and one publisher snapshot taken
/// after it.
fn gauges(rc: &ReceiverCounts, p: &PublisherCounts) -> Gauges {
    Gauges {
        ring_frames: rc
            .accepted
            .saturating_sub(p.taken.saturating_sub(p.from_spool)),
        acks_in_flight: p.in_flight,
    }
}

/// The reporter, whoever panicked while holding it (its histograms stay
/// usable).
fn lock(reporter: &Mutex<Reporter>) -> MutexGuard<'_, Reporter> {
    reporter.lock().unwrap_or_else(|e| e.into_inner())
}

/// The spool's part of a metrics snapshot.
fn spool_snapshot(spool: Option<&crate::spool::Spool>) -> Option<metrics::SpoolSnapshot> {
    spool.map(|s| spool_figures(&s.counts(), s.max_bytes()))
}

fn spool_figures(c: &crate::spool::SpoolCounts, max_bytes: u64) -> metrics::SpoolSnapshot {
    metrics::SpoolSnapshot {
        spooled: c.spooled,
        drained: c.drained,
        dropped: c.dropped,
        torn: c.torn,
        held: c.held,
        bytes: c.bytes,
        max_bytes,
        oldest_age_s: c.oldest_age_s(RecvTime::now()),
    }
}

/// Publish a [`metrics::snapshot_message`], bounded: with the server not
/// reading, an unbounded wait would keep the stop from being noticed.
async fn publish_snapshot(
    client: &async_nats::Client,
    (subject, body): (String, Vec<u8>),
    what: &str,
) {
    match tokio::time::timeout(FINAL_FLUSH_MAX, client.publish(subject, body.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "{what} not published"),
        Err(_) => tracing::warn!("{what} not published: NATS not reading"),
    }
}

/// Run ingest until `shutdown` resolves, then stop receiving, drain, and
/// return the account.
pub async fn run(
    cfg: Config,
    hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Account> {
    // Everything, the machine's cores included, before the first request
    // to the server: a bad value must not reach the shared TSPI stream.
    cfg.validate_for(&[Role::Ingest], &Machine::current())?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let client = connect(&cfg.nats).await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(cfg.publish.ack_timeout_ms))
        .max_ack_inflight(cfg.publish.acks_in_flight_max + 64)
        .build(client.clone());
    let mut pc = publisher_config(&cfg);
    if cfg.stream.create {
        let settings = cfg.stream.telemetry_settings();
        let info = ensure_stream_with(
            &js,
            telemetry_stream(&cfg.nats.subject_prefix, &settings),
            &Existing {
                update: settings.update,
                required: Some(telemetry_required(&cfg.nats.subject_prefix)),
            },
            Duration::from_secs(30),
        )
        .await
        .context("the TSPI stream")?;
        tracing::info!(
            stream = %info.config.name,
            replicas = info.config.num_replicas,
            duplicate_window_s = info.config.duplicate_window.as_secs(),
            "stream ready"
        );
        // A stream left as someone made it may refuse fast batches: publish
        // pipelined from the start rather than have the first batch refused.
        if pc.fast.is_some() && !info.config.allow_batch_publish {
            tracing::warn!(
                stream = %info.config.name,
                "the stream does not allow batched publishing (allow_batched = false): \
                 publishing pipelined (stream.update = true or --update-stream allows it)"
            );
            pc.fast = None;
        }
    }

    let wake = Arc::new(tokio::sync::Notify::new());
    let mut rc = receive_config(&cfg);
    rc.wake = Some(wake.clone());
    if cfg.spool.dir.is_some() {
        rc.spill_capacity = Some(cfg.spool.spill_capacity);
    }
    let mut receivers = Receivers::start(&rc).context("starting the receive threads")?;
    let (spool, spool_link) = if cfg.spool.dir.is_some() {
        let (spool, link) = Spool::start(&cfg.spool, receivers.take_spills())
            .context("opening the disk spool (spool.dir)")?;
        (Some(Arc::new(spool)), Some(link))
    } else {
        (None, None)
    };
    tracing::info!(
        backend = %receivers.backend(),
        workers = cfg.ingest.workers,
        listen = ?receivers.local_addrs(),
        "receiving"
    );
    // Shared with the `/metrics` scrape, which collects the latencies
    // between reports.
    let reporter = Arc::new(Mutex::new(Reporter::new()));
    let recorder = lock(&reporter).recorder();
    let publisher =
        Publisher::new(js, receivers.take_consumers(), pc, recorder, wake).with_spool(spool_link);
    let pstats: Arc<PublisherStats> = publisher.stats();
    let input_closed = publisher.input_closed();
    let publishing = tokio::spawn(publisher.run());

    let scrape = {
        let (reporter, pstats, probe) = (reporter.clone(), pstats.clone(), receivers.probe());
        move || {
            let mut reporter = lock(&reporter);
            // Histograms first, counters after: the publisher counts an
            // ack before it records its latency, so no histogram's count
            // exceeds `acked_total` in one scrape.
            let cumulative = reporter.collect();
            let p = pstats.snapshot();
            let rc = probe.counts();
            let c = counters(&rc, &p, probe.kernel_drops());
            metrics::render_prometheus_at(&c, &gauges(&rc, &p), cumulative)
        }
    };
    let spool_scrape = spool.clone().map(|spool| {
        move || {
            crate::spool::metrics::render_prometheus(
                &spool.counts(),
                spool.max_bytes(),
                RecvTime::now(),
            )
        }
    });
    match (hooks.prometheus, cfg.metrics.addr) {
        (Some(shared), _) => {
            shared.register(scrape);
            if let Some(f) = spool_scrape {
                shared.register(f);
            }
        }
        (None, Some(addr)) => {
            // Serving its own endpoint, ingest also shows the process's
            // NATS counters (`tspi run` registers them once for every role).
            let exposition = metrics::Exposition::new();
            exposition.register(scrape);
            if let Some(f) = spool_scrape {
                exposition.register(f);
            }
            exposition.register(crate::nats::render_prometheus);
            let (bound, _task) = metrics::serve_exposition(addr, exposition)
                .await
                .with_context(|| format!("serving /metrics on {addr}"))?;
            tracing::info!(%bound, "prometheus /metrics");
        }
        (None, None) => {}
    }
    // Ready once receiving and serving `/metrics`.
    if let Some(ready) = hooks.ready {
        let _ = ready.send(receivers.local_addrs());
    }
    let host = metrics::hostname();
    let emit = |report: &Report<'_>| {
        tracing::info!("{}", metrics::render_log_line(report));
        if hooks.json {
            println!("{}", metrics::render_json_line(report));
        }
    };

    let mut tick = tokio::time::interval(Duration::from_secs(cfg.metrics.interval_s));
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let p = pstats.snapshot();
                let rc = receivers.counts();
                let c = counters(&rc, &p, receivers.kernel_drops());
                // The histogram refresh may wait up to 50 ms for an idle
                // recorder: keep it off the async workers' hot loop.
                let snapshot = tokio::task::block_in_place(|| {
                    let mut reporter = lock(&reporter);
                    let report = reporter.report(c, gauges(&rc, &p));
                    emit(&report);
                    metrics::snapshot_message_with(&report, &host, spool_snapshot(spool.as_deref()))
                });
                if cfg.metrics.nats_snapshot {
                    publish_snapshot(&client, snapshot, "metrics snapshot").await;
                }
                if let Some(spool) = &spool {
                    log_spool(&spool.counts());
                }
            }
        }
    }

    tracing::info!("stopping: receive threads first, then draining the rings");
    let backend = receivers.backend();
    let kernel_dropped = receivers.kernel_drops();
    let rx_final = receivers.stop();
    input_closed.store(true, Relaxed);
    // The publisher ends by the drain deadline by itself (its machine
    // decides, and every send it waits on is bounded by that deadline);
    // this bound is for a wait nobody foresaw, so the stop always ends.
    let drain_timeout = Duration::from_secs(cfg.publish.drain_timeout_s);
    let mut publishing = publishing;
    let p = match tokio::time::timeout(drain_timeout + PUBLISHER_GRACE, &mut publishing).await {
        Ok(p) => p.context("publisher task")?,
        Err(_) => {
            publishing.abort();
            let mut p = pstats.snapshot();
            let accounted = p.acked + p.failed;
            let unanswered = rx_final.accepted.saturating_sub(accounted);
            tracing::error!(
                frames = unanswered,
                "the publisher did not end by the drain deadline: abandoned, its unacknowledged frames counted as failed"
            );
            p.failed += unanswered;
            p
        }
    };
    // After the publisher: it has reported its last acks and handed the
    // spool what it could not publish.
    let spool_max = spool.as_ref().map(|s| s.max_bytes());
    let spool_final = spool.map(|s| s.stop());
    if let Some(c) = &spool_final {
        log_spool(c);
    }
    let final_spool = spool_final
        .as_ref()
        .zip(spool_max)
        .map(|(c, max_bytes)| spool_figures(c, max_bytes));
    let counters = counters(&rx_final, &p, kernel_dropped);
    let snapshot = tokio::task::block_in_place(|| {
        let mut reporter = lock(&reporter);
        let report = reporter.report(counters, Gauges::default());
        emit(&report);
        metrics::snapshot_message_with(&report, &host, final_spool)
    });
    // The last interval goes to operator tools too, so merged histograms
    // cover the whole run.
    if cfg.metrics.nats_snapshot {
        publish_snapshot(&client, snapshot, "final metrics snapshot").await;
    }
    match tokio::time::timeout(FINAL_FLUSH_MAX, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final flush"),
        Err(_) => tracing::warn!("final flush: NATS not reading"),
    }
    let failed_reason = (counters.failed > 0).then(|| {
        format!(
            "not acknowledged by JetStream within publish.drain_timeout_s = {} after the stop \
             ({} of them published without an answer: the stream may hold those; \
             a [spool] keeps them and the next run looks them up)",
            cfg.publish.drain_timeout_s,
            p.given_up_in_doubt.min(counters.failed)
        )
    });
    Ok(Account {
        backend: backend.name().into(),
        publish_mode: if p.fast { "fast" } else { "pipelined" }.into(),
        batches: p.batches,
        counters,
        failed_reason,
        spool: spool_final
            .as_ref()
            .map(SpoolAccount::from_counts)
            .unwrap_or_default(),
    })
}

/// One line about the spool (each report, and at the stop).
fn log_spool(c: &SpoolCounts) {
    tracing::info!(
        held = c.held,
        bytes = c.bytes,
        oldest_age_s = c.oldest_age_s(RecvTime::now()),
        spooled = c.spooled,
        drained = c.drained,
        dropped = c.dropped,
        torn = c.torn,
        recovered = c.recovered,
        "spool"
    );
}
