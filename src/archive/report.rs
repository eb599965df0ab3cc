//! Pure: the archiver's counters, lag and batch-commit latency, rendered on
//! the same four channels as ingest's (see [`crate::metrics`]): a log line,
//! a JSON line (`--json`), Prometheus text (`--metrics-addr`) and an
//! HdrHistogram snapshot on `tspi.ops.metrics.archive.<host>`.

use crate::metrics::{
    HISTOGRAM_ENCODING, HISTOGRAM_UNIT, encode_hdr_snapshot, metrics_subject_for,
    write_counter_families, write_gauge_family, write_histogram_family,
};
use hdrhistogram::Histogram;

/// The `component` of the snapshot and the subject token.
pub const COMPONENT_ARCHIVE: &str = "archive";
/// Prometheus metric name prefix.
pub const PROMETHEUS_PREFIX_ARCHIVE: &str = "tspi_archive";

crate::counter_set! {
    /// The archiver's monotonic counters since start.
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    pub struct ArchiveCounts {
        /// Messages taken from the streams (redeliveries included).
        messages => "Messages taken from the streams",
        /// Rows added to `tspi_telemetry`.
        telemetry_rows => "Rows added to tspi_telemetry",
        /// Telemetry messages whose row was already there (redeliveries).
        telemetry_duplicate => "Telemetry messages already archived (redeliveries)",
        /// Rows added to the operator tables.
        ops_rows => "Rows added to the operator tables",
        /// Operator messages whose row was already there.
        ops_duplicate => "Operator messages already archived",
        /// Messages that did not decode, stored in `tspi_rejects` (each delivery).
        rejected => "Messages stored in tspi_rejects",
        /// Committed batches.
        batches => "Committed batches",
        /// Messages acknowledged after their batch committed.
        acked => "Messages acknowledged after commit",
        /// Failed attempts to write a batch (each is retried).
        db_errors => "Failed batch writes (retried)",
        /// Native partitions created.
        partitions_created => "Partitions created",
        /// Partitions or chunks dropped by retention.
        partitions_dropped => "Partitions dropped by retention",
        /// Consumer rewinds after a missing delivery (ack policy all).
        rewinds => "Consumer rewinds after a missing delivery",
        /// Per-minute aggregate rows appended by batches and since folded.
        minutes_folded => "Per-minute aggregate rows folded",
    }
    /// The same counts, counted live by the archiver's tasks.
    live pub struct ArchiveLive;
}

/// How far a consumer is behind its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lag {
    /// Messages in the stream not yet delivered to the consumer, plus those
    /// delivered and not yet committed.
    pub messages: u64,
    /// Age of the oldest uncommitted message: now minus the stream time of
    /// the last committed one while messages remain; 0 when caught up.
    pub seconds: f64,
}

/// One interval.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    pub start_unix_ms: u64,
    pub at_unix_ms: u64,
    pub interval_s: f64,
    pub counters: ArchiveCounts,
    pub delta: ArchiveCounts,
    pub telemetry_lag: Lag,
    pub ops_lag: Lag,
    /// Batch commit latency (ns) in this interval, and since start.
    pub commit: &'a Histogram<u64>,
    pub commit_cumulative: &'a Histogram<u64>,
}

impl Report<'_> {
    pub fn rate_per_s(&self, n: u64) -> f64 {
        if self.interval_s > 0.0 {
            n as f64 / self.interval_s
        } else {
            0.0
        }
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

/// One line for the log.
pub fn render_log_line(r: &Report<'_>) -> String {
    let d = &r.delta;
    format!(
        "archive: {:.0} rows/s ({} rows, {} duplicate, {} rejected, {} ops rows) in {} batches; \
         commit p50 {:.1} ms p99 {:.1} ms max {:.1} ms; lag {} msgs {:.1} s (ops {} msgs); \
         db errors {}",
        r.rate_per_s(d.telemetry_rows),
        d.telemetry_rows,
        d.telemetry_duplicate,
        d.rejected,
        d.ops_rows,
        d.batches,
        ms(r.commit, 0.5),
        ms(r.commit, 0.99),
        ms(r.commit, 1.0),
        r.telemetry_lag.messages,
        r.telemetry_lag.seconds,
        r.ops_lag.messages,
        d.db_errors,
    )
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50": ms(h, 0.5),
        "p90": ms(h, 0.9),
        "p99": ms(h, 0.99),
        "max": ms(h, 1.0),
    })
}

/// One JSON object (no newline) for `--json`.
pub fn render_json_line(r: &Report<'_>) -> String {
    serde_json::json!({
        "component": COMPONENT_ARCHIVE,
        "start_unix_ms": r.start_unix_ms,
        "at_unix_ms": r.at_unix_ms,
        "interval_s": r.interval_s,
        "rows_per_s": r.rate_per_s(r.delta.telemetry_rows),
        "counters": r.counters,
        "delta": r.delta,
        "lag": {"telemetry": r.telemetry_lag, "ops": r.ops_lag},
        "batch_commit_ms": latency_json(r.commit),
    })
    .to_string()
}

/// Prometheus text exposition: counters `tspi_archive_<name>_total`, lag
/// gauges by stream, and the cumulative commit histogram in seconds.
pub fn render_prometheus(r: &Report<'_>) -> String {
    render_prometheus_at(&r.counters, r.telemetry_lag, r.ops_lag, r.commit_cumulative)
}

/// [`render_prometheus`] from its parts: what a scrape renders from the
/// live counters.
pub fn render_prometheus_at(
    counters: &ArchiveCounts,
    telemetry_lag: Lag,
    ops_lag: Lag,
    commit_cumulative: &Histogram<u64>,
) -> String {
    let p = PROMETHEUS_PREFIX_ARCHIVE;
    let mut s = String::with_capacity(4096);
    write_counter_families(&mut s, p, counters);
    write_gauge_family(
        &mut s,
        &format!("{p}_lag_messages"),
        "Messages not yet archived",
        &[
            ("{stream=\"TSPI\"}", telemetry_lag.messages),
            ("{stream=\"TSPI_OPS\"}", ops_lag.messages),
        ],
    );
    write_gauge_family(
        &mut s,
        &format!("{p}_lag_seconds"),
        "Age of the oldest message not yet archived",
        &[
            ("{stream=\"TSPI\"}", telemetry_lag.seconds),
            ("{stream=\"TSPI_OPS\"}", ops_lag.seconds),
        ],
    );
    write_histogram_family(
        &mut s,
        &format!("{p}_batch_commit_seconds"),
        "Time to write and commit one batch",
        commit_cumulative,
    );
    s
}

/// Subject and body of the interval's snapshot: like ingest's
/// ([`crate::metrics::Snapshot`]) with `component` `archive` and one
/// histogram, `batch_commit`.
pub fn snapshot_message(r: &Report<'_>, host: &str) -> (String, Vec<u8>) {
    let body = serde_json::json!({
        "host": host,
        "component": COMPONENT_ARCHIVE,
        "start_unix_ms": r.start_unix_ms,
        "end_unix_ms": r.at_unix_ms,
        "histogram_encoding": HISTOGRAM_ENCODING,
        "histogram_unit": HISTOGRAM_UNIT,
        "histograms": {"batch_commit": encode_hdr_snapshot(r.commit)},
        "counters": r.counters,
        "delta": r.delta,
        "lag": {"telemetry": r.telemetry_lag, "ops": r.ops_lag},
    });
    (
        metrics_subject_for(COMPONENT_ARCHIVE, host),
        body.to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{decode_hdr_snapshot, new_latency_histogram};

    fn report<'a>(h: &'a Histogram<u64>, c: &'a Histogram<u64>) -> Report<'a> {
        let counters = ArchiveCounts {
            messages: 1000,
            telemetry_rows: 990,
            telemetry_duplicate: 5,
            rejected: 2,
            batches: 4,
            ..ArchiveCounts::default()
        };
        Report {
            start_unix_ms: 1_000,
            at_unix_ms: 11_000,
            interval_s: 10.0,
            counters,
            delta: counters.delta_since(&ArchiveCounts::default()),
            telemetry_lag: Lag {
                messages: 7,
                seconds: 1.5,
            },
            ops_lag: Lag::default(),
            commit: h,
            commit_cumulative: c,
        }
    }

    #[test]
    fn renderings_carry_the_numbers() {
        let mut h = new_latency_histogram();
        for ms in [10u64, 20, 30, 400] {
            h.record(ms * 1_000_000).unwrap();
        }
        let r = report(&h, &h);
        let line = render_log_line(&r);
        assert!(
            line.starts_with("archive: 99 rows/s (990 rows, 5 duplicate, 2 rejected"),
            "{line}"
        );
        assert!(line.contains("lag 7 msgs 1.5 s"), "{line}");
        let j: serde_json::Value = serde_json::from_str(&render_json_line(&r)).unwrap();
        assert_eq!(j["counters"]["telemetry_rows"], 990);
        assert_eq!(j["rows_per_s"], 99.0);
        assert_eq!(j["batch_commit_ms"]["count"], 4);
        assert_eq!(j["lag"]["telemetry"]["messages"], 7);
        let prom = render_prometheus(&r);
        assert!(
            prom.contains("tspi_archive_telemetry_rows_total 990\n"),
            "{prom}"
        );
        assert!(prom.contains("tspi_archive_lag_messages{stream=\"TSPI\"} 7\n"));
        assert!(
            prom.contains("tspi_archive_batch_commit_seconds_bucket{le=\"0.025\"} 2\n"),
            "{prom}"
        );
        assert!(prom.contains("tspi_archive_batch_commit_seconds_bucket{le=\"0.5\"} 4\n"));
        assert!(prom.contains("tspi_archive_batch_commit_seconds_count 4\n"));
        let (subject, body) = snapshot_message(&r, "rx.01");
        assert_eq!(subject, "tspi.ops.metrics.archive.rx_01");
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["component"], "archive");
        let back = decode_hdr_snapshot(j["histograms"]["batch_commit"].as_str().unwrap()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(j["counters"]["rejected"], 2);
    }

    #[test]
    fn prometheus_text_exact() {
        let h = new_latency_histogram();
        let prom = render_prometheus(&report(&h, &h));
        let counters: String = [
            ("messages", 1000, "Messages taken from the streams"),
            ("telemetry_rows", 990, "Rows added to tspi_telemetry"),
            (
                "telemetry_duplicate",
                5,
                "Telemetry messages already archived (redeliveries)",
            ),
            ("ops_rows", 0, "Rows added to the operator tables"),
            ("ops_duplicate", 0, "Operator messages already archived"),
            ("rejected", 2, "Messages stored in tspi_rejects"),
            ("batches", 4, "Committed batches"),
            ("acked", 0, "Messages acknowledged after commit"),
            ("db_errors", 0, "Failed batch writes (retried)"),
            ("partitions_created", 0, "Partitions created"),
            ("partitions_dropped", 0, "Partitions dropped by retention"),
            ("rewinds", 0, "Consumer rewinds after a missing delivery"),
            ("minutes_folded", 0, "Per-minute aggregate rows folded"),
        ]
        .iter()
        .map(|(n, v, help)| {
            format!(
                "# HELP tspi_archive_{n}_total {help}\n# TYPE tspi_archive_{n}_total counter\n\
                 tspi_archive_{n}_total {v}\n"
            )
        })
        .collect();
        let lag = "# HELP tspi_archive_lag_messages Messages not yet archived\n\
                   # TYPE tspi_archive_lag_messages gauge\n\
                   tspi_archive_lag_messages{stream=\"TSPI\"} 7\n\
                   tspi_archive_lag_messages{stream=\"TSPI_OPS\"} 0\n\
                   # HELP tspi_archive_lag_seconds Age of the oldest message not yet archived\n\
                   # TYPE tspi_archive_lag_seconds gauge\n\
                   tspi_archive_lag_seconds{stream=\"TSPI\"} 1.5\n\
                   tspi_archive_lag_seconds{stream=\"TSPI_OPS\"} 0\n\
                   # HELP tspi_archive_batch_commit_seconds Time to write and commit one batch\n\
                   # TYPE tspi_archive_batch_commit_seconds histogram\n";
        assert!(prom.starts_with(&(counters + lag)), "{prom}");
        assert!(prom.ends_with(
            "tspi_archive_batch_commit_seconds_bucket{le=\"+Inf\"} 0\n\
             tspi_archive_batch_commit_seconds_sum 0\n\
             tspi_archive_batch_commit_seconds_count 0\n"
        ));
    }

    #[test]
    fn json_and_prometheus_name_the_same_counters() {
        let c = ArchiveCounts::default();
        let v = serde_json::to_value(c).unwrap();
        let mut json: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut declared: Vec<&str> = c.fields().iter().map(|f| f.name).collect();
        json.sort_unstable();
        declared.sort_unstable();
        assert_eq!(json, declared);
    }

    #[test]
    fn deltas_saturate() {
        let a = ArchiveCounts {
            messages: 5,
            ..ArchiveCounts::default()
        };
        let b = ArchiveCounts {
            messages: 7,
            acked: 3,
            ..ArchiveCounts::default()
        };
        assert_eq!(b.delta_since(&a).messages, 2);
        assert_eq!(a.delta_since(&b), ArchiveCounts::default());
    }
}
