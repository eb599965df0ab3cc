//! Edge: the archive's reports (log line, JSON line, NATS snapshot every
//! interval; `/metrics` rendered at each scrape from the live counters)
//! and the lag poll that keeps each consumer's lag the server's count.

use super::driver::{Stats, now_unix_us, stream_name};
use super::proto::Kind;
use super::report::{self, ArchiveCounts};
use crate::config::Config;
use crate::metrics::{Exposition, hostname, new_latency_histogram, serve_exposition};
use async_nats::jetstream;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A task aborted when this is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the archive asks the server how many messages each consumer
/// has not acknowledged (its lag).
pub const LAG_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Every [`LAG_POLL_INTERVAL`], each consumer's info from the server into
/// its [`StreamProgress`]: the lag operators see is the server's count, not
/// an estimate from the last delivery (which stops moving when the archive
/// stops pulling, in a PostgreSQL outage). A failed poll leaves the last
/// value; the next one retries.
pub(super) async fn lag_poll_loop(
    js: jetstream::Context,
    durables: Vec<(Kind, String)>,
    stats: Arc<Stats>,
) {
    let mut tick = tokio::time::interval(LAG_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streams: Vec<Option<jetstream::stream::Stream>> = vec![None; durables.len()];
    loop {
        tick.tick().await;
        for ((kind, durable), stream) in durables.iter().zip(streams.iter_mut()) {
            let progress = stats.progress(*kind);
            let acked = progress.acked.load(Relaxed);
            let ask = async {
                if stream.is_none() {
                    *stream = Some(js.get_stream(stream_name(*kind)).await.ok()?);
                }
                stream.as_ref()?.consumer_info(durable).await.ok()
            };
            let Ok(Some(info)) = tokio::time::timeout(LAG_POLL_INTERVAL * 2, ask).await else {
                continue;
            };
            let unacked = info.num_pending + info.num_ack_pending as u64;
            progress.owed.store(unacked + acked, Relaxed);
            progress.server_known.store(true, Relaxed);
        }
    }
}

/// The archive's Prometheus text now, from the live counters.
fn render_live(stats: &Stats) -> String {
    // Histograms first, counters after: a batch is counted before its
    // commit time is recorded, so no count exceeds its counter.
    let commit = stats.commit.lock().unwrap_or_else(|e| e.into_inner());
    let counters = stats.counters();
    let now_us = now_unix_us();
    report::render_prometheus_at(
        &counters,
        stats.telemetry.lag(now_us),
        stats.ops.lag(now_us),
        &commit.cumulative,
    )
}

pub(super) async fn report_loop(
    cfg: Config,
    client: async_nats::Client,
    stats: Arc<Stats>,
    json: bool,
    prometheus: Option<Exposition>,
    mut done: watch::Receiver<bool>,
) {
    let m = &cfg.metrics;
    let live = {
        let stats = stats.clone();
        move || render_live(&stats)
    };
    match (prometheus, m.addr) {
        (Some(shared), _) => shared.register(live),
        (None, Some(addr)) => {
            // Serving its own endpoint, the archive also shows the
            // process's NATS counters (`tspi run` registers them once for
            // every role).
            let exposition = Exposition::new();
            exposition.register(live);
            exposition.register(crate::nats::render_prometheus);
            match serve_exposition(addr, exposition).await {
                Ok((bound, _task)) => tracing::info!(%bound, "prometheus /metrics"),
                Err(e) => tracing::error!(%addr, error = %e, "cannot serve /metrics"),
            }
        }
        (None, None) => {}
    }
    let host = hostname();
    let mut previous = ArchiveCounts::default();
    let mut previous_unix_ms = (now_unix_us() / 1000) as u64;
    let mut previous_mono = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(m.interval_s));
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = done.wait_for(|d| *d) => true,
        };
        let (interval, cumulative) = {
            let mut h = stats.commit.lock().unwrap_or_else(|e| e.into_inner());
            let interval = std::mem::replace(&mut h.interval, new_latency_histogram());
            (interval, h.cumulative.clone())
        };
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
