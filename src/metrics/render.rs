//! The operator's log line and JSON line: pure functions of a [`Report`].
//!
//! Both show the last interval: rates and counts from [`Report::delta`],
//! latencies from [`Report::interval`]. The JSON line also carries the
//! cumulative counters.

use super::counter_set::counts_fragment;
use super::counters::{Gauges, IngestCounts};
use super::latency::{Latency, LatencyView};
use super::report::Report;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

/// The interval's losses the log line shows, in this order (a count by
/// reason shows its total).
const LOG_LINE_COUNTS: [&str; 5] = [
    "rejected",
    "filtered",
    "ring_dropped",
    "kernel_dropped",
    "failed",
];

/// The quantiles every latency summary shows, with their name suffix.
const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// One human-readable line for `tracing::info!`, e.g.
///
/// ```text
/// ingest: 19850 msg/s in, 19848 acked/s | recv→ack p50 0.41 ms p99 1.9 ms p99.9 3.2 ms max 7.1 ms | rejected 2 filtered 0 ring_dropped 0 kernel_dropped 0 failed 0 | ring_frames 12 acks_in_flight 40
/// ```
///
/// Rates and counts are for the interval; `ring_frames` and
/// `acks_in_flight` are levels when the report was taken. Latencies have two
/// significant digits; an interval without acks shows `recv→ack none`.
pub fn render_log_line(r: &Report<'_>) -> String {
    let d = &r.delta;
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "ingest: {:.0} msg/s in, {:.0} acked/s | recv→ack",
        r.rate_per_s(d.received).round(),
        r.rate_per_s(d.acked).round()
    );
    let h = r.interval.receive_to_ack;
    if h.is_empty() {
        s.push_str(" none");
    } else {
        for (q, name) in QUANTILES {
            let _ = write!(s, " {name} {} ms", ms_2_digits(h.value_at_quantile(q)));
        }
        let _ = write!(s, " max {} ms", ms_2_digits(h.max()));
    }
    let _ = write!(
        s,
        " | {} | ring_frames {} acks_in_flight {}",
        counts_fragment(d, &LOG_LINE_COUNTS, " "),
        r.gauges.ring_frames,
        r.gauges.acks_in_flight,
    );
    s
}

/// Nanoseconds as milliseconds with two significant digits (three from
/// 10 ms up, without decimals): 410 111 → `0.41`, 1 903 615 → `1.9`.
fn ms_2_digits(ns: u64) -> String {
    if ns == 0 {
        return "0".to_owned();
    }
    let ms = ns as f64 / 1e6;
    let decimals = (1 - ms.log10().floor() as i32).max(0) as usize;
    format!("{ms:.decimals$}")
}

/// One line of JSON (no newline inside or at the end) for `--json`. Field
/// names are stable; units are in the names. Shape:
///
/// ```text
/// {"component":"ingest","start_unix_ms":..,"at_unix_ms":..,"interval_s":10.0,
///  "received_per_s":..,"published_per_s":..,"acked_per_s":..,
///  "delta":{<IngestCounts>},"counters":{<IngestCounts>},"gauges":{"ring_frames":..,"acks_in_flight":..},
///  "latency":{"receive_to_publish":{"count":..,"latency_us_p50":..,"latency_us_p99":..,
///             "latency_us_p999":..,"latency_us_max":..},"publish_to_ack":{..},"receive_to_ack":{..}}}
/// ```
///
/// `delta` and `latency` cover the interval, `counters` the time since
/// start. Rates are rounded to 0.001/s; latencies are microseconds exact to
/// the nanosecond, `null` when the interval recorded none.
pub fn render_json_line(r: &Report<'_>) -> String {
    let line = JsonLine {
        component: "ingest",
        start_unix_ms: r.start_unix_ms,
        at_unix_ms: r.at_unix_ms,
        interval_s: r.interval_s,
        received_per_s: round3(r.rate_per_s(r.delta.received)),
        published_per_s: round3(r.rate_per_s(r.delta.published)),
        acked_per_s: round3(r.rate_per_s(r.delta.acked)),
        delta: &r.delta,
        counters: &r.counters,
        gauges: &r.gauges,
        latency: JsonLatencies::from(r.interval),
    };
    serde_json::to_string(&line).expect("plain structs of numbers and strings always serialise")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Serialize)]
struct JsonLine<'a> {
    component: &'static str,
    start_unix_ms: u64,
    at_unix_ms: u64,
    interval_s: f64,
    received_per_s: f64,
    published_per_s: f64,
    acked_per_s: f64,
    delta: &'a IngestCounts,
    counters: &'a IngestCounts,
    gauges: &'a Gauges,
    latency: JsonLatencies,
}

#[derive(Serialize)]
struct JsonLatencies {
    receive_to_publish: JsonLatency,
    publish_to_ack: JsonLatency,
    receive_to_ack: JsonLatency,
}

impl From<LatencyView<'_>> for JsonLatencies {
    fn from(v: LatencyView<'_>) -> Self {
        JsonLatencies {
            receive_to_publish: JsonLatency::from(v.get(Latency::ReceiveToPublish)),
            publish_to_ack: JsonLatency::from(v.get(Latency::PublishToAck)),
            receive_to_ack: JsonLatency::from(v.get(Latency::ReceiveToAck)),
        }
    }
}

#[derive(Serialize)]
struct JsonLatency {
    count: u64,
    latency_us_p50: Option<f64>,
    latency_us_p99: Option<f64>,
    latency_us_p999: Option<f64>,
    latency_us_max: Option<f64>,
}

impl From<&Histogram<u64>> for JsonLatency {
    fn from(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (!h.is_empty()).then(|| ns as f64 / 1000.0);
        JsonLatency {
            count: h.len(),
            latency_us_p50: us(h.value_at_quantile(0.5)),
            latency_us_p99: us(h.value_at_quantile(0.99)),
            latency_us_p999: us(h.value_at_quantile(0.999)),
            latency_us_max: us(h.max()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::latency::LatencyHistograms;

    /// A small fixed report: 10 s interval, 1 000 acks from 0.4 to 7.1 ms.
    pub(crate) fn fixture_histograms() -> (LatencyHistograms, LatencyHistograms) {
        let mut interval = LatencyHistograms::new();
        for i in 0..1000u64 {
            // 980 from 0.40 to 0.42 ms, 10 at 1.9 ms, 9 at 3.2 ms, 1 at 7.1 ms.
            let ns = match i {
                0..980 => 400_000 + i * 20,
                980..990 => 1_900_000,
                990..999 => 3_200_000,
                _ => 7_100_000,
            };
            interval.receive_to_ack.saturating_record(ns);
            interval.publish_to_ack.saturating_record(ns - 40_000);
            interval.receive_to_publish.saturating_record(40_000);
        }
        let mut cumulative = interval.clone();
        cumulative.receive_to_ack.saturating_record(20_000_000_000);
        (interval, cumulative)
    }

    pub(crate) fn fixture<'a>(
        interval: &'a LatencyHistograms,
        cumulative: &'a LatencyHistograms,
    ) -> Report<'a> {
        let counters = IngestCounts {
            received: 1_000_123,
            rejected: [1, 0, 0, 1, 0, 0],
            filtered: 0,
            ring_dropped: 0,
            published: 1_000_000,
            acked: 999_990,
            duplicate: 3,
            retried: 4,
            failed: 0,
            kernel_dropped: 0,
        };
        let delta = IngestCounts {
            received: 198_502,
            rejected: [1, 0, 0, 1, 0, 0],
            published: 198_490,
            acked: 198_485,
            ..IngestCounts::default()
        };
        Report {
            start_unix_ms: 1_700_000_000_000,
            at_unix_ms: 1_700_000_010_000,
            interval_s: 10.0,
            counters,
            delta,
            gauges: Gauges {
                ring_frames: 12,
                acks_in_flight: 40,
            },
            interval: interval.view(),
            cumulative: cumulative.view(),
        }
    }

    #[test]
    fn log_line_exact() {
        let (i, c) = fixture_histograms();
        assert_eq!(
            render_log_line(&fixture(&i, &c)),
            "ingest: 19850 msg/s in, 19849 acked/s | recv→ack p50 0.41 ms p99 1.9 ms p99.9 3.2 ms \
             max 7.1 ms | rejected 2 filtered 0 ring_dropped 0 kernel_dropped 0 failed 0 | \
             ring_frames 12 acks_in_flight 40"
        );
    }

    #[test]
    fn log_line_without_samples() {
        let empty = LatencyHistograms::new();
        let mut r = fixture(&empty, &empty);
        r.interval_s = 0.0;
        assert_eq!(
            render_log_line(&r),
            "ingest: 0 msg/s in, 0 acked/s | recv→ack none | rejected 2 filtered 0 ring_dropped 0 \
             kernel_dropped 0 failed 0 | ring_frames 12 acks_in_flight 40"
        );
    }

    #[test]
    fn two_significant_digits() {
        assert_eq!(ms_2_digits(0), "0");
        assert_eq!(ms_2_digits(4_000), "0.0040");
        assert_eq!(ms_2_digits(410_111), "0.41");
        assert_eq!(ms_2_digits(1_903_615), "1.9");
        assert_eq!(ms_2_digits(12_345_678), "12");
        assert_eq!(ms_2_digits(60_000_000_000), "60000");
    }

    #[test]
    fn json_line_exact() {
        let (i, c) = fixture_histograms();
        let line = render_json_line(&fixture(&i, &c));
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            concat!(
                r#"{"component":"ingest","start_unix_ms":1700000000000,"at_unix_ms":1700000010000,"#,
                r#""interval_s":10.0,"received_per_s":19850.2,"published_per_s":19849.0,"acked_per_s":19848.5,"#,
                r#""delta":{"received":198502,"rejected":{"length":1,"type":0,"version":0,"day":1,"time":0,"source":0},"#,
                r#""filtered":0,"ring_dropped":0,"published":198490,"acked":198485,"duplicate":0,"retried":0,"#,
                r#""failed":0,"kernel_dropped":0},"#,
                r#""counters":{"received":1000123,"rejected":{"length":1,"type":0,"version":0,"day":1,"time":0,"source":0},"#,
                r#""filtered":0,"ring_dropped":0,"published":1000000,"acked":999990,"duplicate":3,"retried":4,"#,
                r#""failed":0,"kernel_dropped":0},"#,
                r#""gauges":{"ring_frames":12,"acks_in_flight":40},"#,
                r#""latency":{"receive_to_publish":{"count":1000,"latency_us_p50":40.031,"latency_us_p99":40.031,"latency_us_p999":40.031,"latency_us_max":40.031},"#,
                r#""publish_to_ack":{"count":1000,"latency_us_p50":370.175,"latency_us_p99":1860.607,"latency_us_p999":3160.063,"latency_us_max":7061.503},"#,
                r#""receive_to_ack":{"count":1000,"latency_us_p50":410.111,"latency_us_p99":1900.543,"latency_us_p999":3201.023,"latency_us_max":7102.463}}}"#,
            )
        );
        // Parses, and an empty interval gives nulls with the same field names.
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["latency"]["receive_to_ack"]["count"], 1000);
        let empty = LatencyHistograms::new();
        let v: serde_json::Value =
            serde_json::from_str(&render_json_line(&fixture(&empty, &empty))).unwrap();
        assert_eq!(v["latency"]["receive_to_ack"]["count"], 0);
        assert!(v["latency"]["receive_to_ack"]["latency_us_p99"].is_null());
    }
}
