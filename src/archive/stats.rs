//! The archiver's live state, shared by its tasks, the reporter and
//! callers that watch progress (tests, the bench): counters, each stream's
//! progress (for the lag), the commit latency, whether PostgreSQL is
//! reachable, and the account of a run.

use super::proto::Kind;
use super::report::{self, ArchiveCounts, Lag};
use crate::metrics::new_latency_histogram;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Messages whose acks were handed to the connection.
    pub acked: AtomicU64,
    /// What the consumer owes as of the last poll of its info (every
    /// [`LAG_POLL_INTERVAL`](crate::archive::LAG_POLL_INTERVAL)): the server's count of messages not yet
    /// acknowledged (`num_pending + num_ack_pending`) plus the messages
    /// acked before the request (which the server had seen: acks and the
    /// request share the connection, in order). Minus what is committed
    /// now, it is the lag. [`Self::server_known`] once polled.
    pub owed: AtomicU64,
    pub server_known: AtomicBool,
}

impl StreamProgress {
    /// Lag at `now_unix_us`: messages not yet archived, from the server's
    /// count for the consumer (see [`Self::owed`]; messages that arrived
    /// since the last poll, at most [`LAG_POLL_INTERVAL`](crate::archive::LAG_POLL_INTERVAL) ago, are not in
    /// it yet) less what was committed since.
    /// Until the server answered, an estimate from the deliveries: the
    /// pending count in the last one's reply subject, which goes stale as
    /// soon as the archive stops pulling (a PostgreSQL outage), plus what
    /// was taken and not committed.
    pub fn lag(&self, now_unix_us: i64) -> Lag {
        let taken = self.taken.load(Relaxed);
        let committed = self.committed.load(Relaxed);
        let messages = if self.server_known.load(Relaxed) {
            self.owed.load(Relaxed).saturating_sub(committed)
        } else {
            self.pending.load(Relaxed) + taken.saturating_sub(committed)
        };
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
/// the bench) that watch progress: the [`ArchiveCounts`] counted live
/// ([`report::ArchiveLive`], reached through `Deref`: `stats.acked`), each
/// stream's progress and the commit latency.
#[derive(Debug)]
pub struct Stats {
    pub counts: report::ArchiveLive,
    pub telemetry: StreamProgress,
    pub ops: StreamProgress,
    /// Batch commit latency, ns.
    pub commit: Mutex<CommitLatency>,
    /// The last error of a writer that has not reached PostgreSQL since
    /// (a failed connect, a transient write error); `None` once a batch
    /// commits. A stop says at once what it waits for.
    pub db_down: Mutex<Option<String>>,
}

/// Batch commit latency, ns: since the last report, and since start.
#[derive(Debug)]
pub struct CommitLatency {
    pub interval: Histogram<u64>,
    pub cumulative: Histogram<u64>,
}

impl CommitLatency {
    pub(super) fn record(&mut self, ns: u64) {
        self.interval.saturating_record(ns);
        self.cumulative.saturating_record(ns);
    }
}

impl std::ops::Deref for Stats {
    type Target = report::ArchiveLive;
    fn deref(&self) -> &report::ArchiveLive {
        &self.counts
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counts: report::ArchiveLive::default(),
            telemetry: StreamProgress::default(),
            ops: StreamProgress::default(),
            commit: Mutex::new(CommitLatency {
                interval: new_latency_histogram(),
                cumulative: new_latency_histogram(),
            }),
            db_down: Mutex::new(None),
        }
    }
}

impl Stats {
    pub fn counters(&self) -> ArchiveCounts {
        self.counts.load()
    }

    /// Note that PostgreSQL could not be reached (`Some(error)`) or that a
    /// batch committed (`None`).
    pub(super) fn set_db_down(&self, error: Option<String>) {
        if let Ok(mut d) = self.db_down.lock() {
            *d = error;
        }
    }

    /// The error that keeps PostgreSQL unreachable, if it is.
    pub fn db_down(&self) -> Option<String> {
        self.db_down.lock().ok().and_then(|d| d.clone())
    }

    /// Messages taken from the consumers and not yet committed.
    pub fn uncommitted(&self) -> u64 {
        [&self.telemetry, &self.ops]
            .iter()
            .map(|p| {
                p.taken
                    .load(Relaxed)
                    .saturating_sub(p.committed.load(Relaxed))
            })
            .sum()
    }

    pub(super) fn progress(&self, kind: Kind) -> &StreamProgress {
        match kind {
            Kind::Telemetry => &self.telemetry,
            Kind::Ops => &self.ops,
        }
    }
}

/// The account of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Account {
    pub counters: ArchiveCounts,
    /// Batches still unacked when the drain timed out (redelivered later).
    pub abandoned_batches: u64,
}

pub(super) fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
