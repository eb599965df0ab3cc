//! Edge: the writer task. It owns the PostgreSQL session, commits one
//! batch at a time in the order given and reports each outcome; between
//! batches it keeps the partitions (premake, retention) and, on its first
//! session, sets the compression policy. A failed connect is a transient
//! failure of the batch: the stream task's batcher retries it.

use super::ArchiveConfig;
use super::db::{Db, WriteError};
use super::driver::{Done, Stats, now_unix_us};
use super::proto::Batch;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Commit batches one at a time, in the order given; report each outcome.
/// Reconnects as needed; a failed connect is a transient failure of the
/// batch. With `maintain`, also keeps the partitions between batches.
pub(super) async fn write_loop(
    dsn: String,
    cfg: ArchiveConfig,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    done: mpsc::Sender<Done>,
    stats: Arc<Stats>,
    maintain: bool,
) {
    let mut db: Option<Db> = None;
    // The compression policy is set once, on the first session.
    let mut compression_set = !maintain;
    let mut upkeep = tokio::time::interval(Duration::from_secs(cfg.maintenance_interval_s));
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => b,
                None => return,
            },
            _ = upkeep.tick(), if maintain => {
                if let Ok(d) = connected(&mut db, &dsn, &cfg, &stats).await {
                    match d.maintain(now_unix_us(), cfg.partition_premake_days, cfg.retention_days).await {
                        Ok((created, dropped)) => {
                            stats.partitions_created.fetch_add(created.max(0) as u64, Relaxed);
                            stats.partitions_dropped.fetch_add(dropped.len() as u64, Relaxed);
                            if !dropped.is_empty() {
                                tracing::info!(?dropped, retention_days = cfg.retention_days, "retention dropped partitions");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %super::db::pg_text(&e), "partition upkeep failed; next time");
                            db = None;
                        }
                    }
                }
                continue;
            }
        };
        if !compression_set && let Ok(d) = connected(&mut db, &dsn, &cfg, &stats).await {
            compression_set = true;
            match d.compression(cfg.compress_after_days).await {
                Ok(super::db::Compression::Off) => {}
                Ok(super::db::Compression::Policy { after_days }) => {
                    tracing::info!(after_days, "TimescaleDB compression policy set");
                }
                Ok(super::db::Compression::Unavailable(why)) => tracing::warn!(
                    compress_after_days = cfg.compress_after_days,
                    "archive.compress_after_days not applied: {why}"
                ),
                Err(e) => tracing::warn!(
                    error = %super::db::pg_text(&e),
                    "setting the compression policy failed; not retried"
                ),
            }
        }
        let t0 = Instant::now();
        let result = match connected(&mut db, &dsn, &cfg, &stats).await {
            Ok(d) => d.write(&batch).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => stats.set_db_down(None),
            Err(e) if e.failure().retry == super::proto::Retry::Transient => {
                // The session may be broken: start a fresh one next time.
                db = None;
                stats.set_db_down(Some(e.to_string()));
            }
            Err(_) => {}
        }
        if done.send((batch, result, t0.elapsed())).await.is_err() {
            return;
        }
    }
}

/// The session, connecting (once) if there is none. A failed connect is
/// logged and returned as a (transient) write error.
async fn connected<'a>(
    db: &'a mut Option<Db>,
    dsn: &str,
    cfg: &ArchiveConfig,
    stats: &Stats,
) -> Result<&'a mut Db, WriteError> {
    if db.is_none() {
        match Db::connect(dsn, cfg).await {
            Ok(d) => {
                tracing::info!("postgres connected, schema up to date");
                *db = Some(d);
            }
            Err(e) => {
                stats.db_errors.fetch_add(1, Relaxed);
                stats.set_db_down(Some(e.to_string()));
                tracing::warn!(error = %e, "postgres unavailable; retrying");
                return Err(WriteError::Connect(e));
            }
        }
    }
    Ok(db.as_mut().unwrap_or_else(|| unreachable!()))
}

/// Every `fold_interval_ms`, fold the per-minute aggregate's appended rows
/// into one row per minute and sensor (migration 5), on a session of its
/// own so that the fold runs beside the batches' commits, not between
/// them. Errors are logged and the session dropped; the next tick retries.
/// Nothing depends on when a fold runs: the aggregate's view sums both
/// tables.
pub(super) async fn fold_loop(dsn: String, cfg: ArchiveConfig, stats: Arc<Stats>) {
    let mut db: Option<Db> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.fold_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if db.is_none() {
            match Db::connect(&dsn, &cfg).await {
                Ok(d) => db = Some(d),
                // The writer reports the database's state; retry quietly.
                Err(e) => {
                    tracing::debug!(error = %e, "aggregate fold: postgres unavailable");
                    continue;
                }
            }
        }
        let Some(d) = &db else { continue };
        match d.fold_minutes().await {
            Ok(n) => {
                stats.minutes_folded.fetch_add(n.max(0) as u64, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %super::db::pg_text(&e), "folding the per-minute aggregate failed; next time");
                db = None;
            }
        }
    }
}
