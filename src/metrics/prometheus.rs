//! Prometheus text exposition (format 0.0.4) of a [`Report`]: pure.
//!
//! Counters are `tspi_ingest_<name>_total` (rejections carry a `reason`
//! label), gauges `tspi_ingest_<name>`, and each latency a histogram
//! `tspi_ingest_<latency>_seconds` with the fixed bounds of
//! [`BUCKET_BOUNDS`], built from the cumulative HdrHistogram.

use super::counter_set::{write_counter_families, write_gauge_family, write_histogram_family};
use super::counters::{Gauges, IngestCounts};
use super::latency::{LATENCY_NS_MAX, Latency, LatencyView};
use super::report::Report;
use hdrhistogram::Histogram;

/// Metric name prefix.
pub const PROMETHEUS_PREFIX: &str = "tspi_ingest";
/// `Content-Type` of the exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram bucket upper bounds: nanoseconds, and the `le` label (seconds)
/// written out by hand so it never depends on float formatting. 50 µs to
/// 10 s in 1-2.5-5 steps; the `+Inf` bucket follows.
pub const BUCKET_BOUNDS: [(u64, &str); 17] = [
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

const _: () = {
    let mut i = 1;
    while i < BUCKET_BOUNDS.len() {
        assert!(
            BUCKET_BOUNDS[i - 1].0 < BUCKET_BOUNDS[i].0,
            "bounds must increase"
        );
        i += 1;
    }
    assert!(BUCKET_BOUNDS[BUCKET_BOUNDS.len() - 1].0 < LATENCY_NS_MAX);
};

/// The whole exposition: `# HELP` and `# TYPE` before each family, one
/// sample per line, a final newline. Counters and histograms are
/// cumulative since start; gauges are levels at the report.
pub fn render_prometheus(r: &Report<'_>) -> String {
    render_prometheus_at(&r.counters, &r.gauges, r.cumulative)
}

/// [`render_prometheus`] from its parts: what a scrape renders from the
/// live counters and [`super::Reporter::collect`]'s histograms.
pub fn render_prometheus_at(
    counters: &IngestCounts,
    gauges: &Gauges,
    cumulative: LatencyView<'_>,
) -> String {
    let mut s = String::with_capacity(8 * 1024);
    let p = PROMETHEUS_PREFIX;
    write_counter_families(&mut s, p, counters);
    write_gauge_family(
        &mut s,
        &format!("{p}_ring_frames"),
        "Frames waiting in the receive rings.",
        &[("", gauges.ring_frames)],
    );
    write_gauge_family(
        &mut s,
        &format!("{p}_acks_in_flight"),
        "JetStream publishes awaiting their ack.",
        &[("", gauges.acks_in_flight)],
    );
    for which in Latency::ALL {
        let name = format!("{p}_{}_seconds", which.name());
        write_histogram_family(&mut s, &name, which.help(), cumulative.get(which));
    }
    s
}

/// Cumulative bucket counts, one per [`BUCKET_BOUNDS`] entry, and the sum
/// in nanoseconds. An HdrHistogram bucket (at most 0.1 % wide) falls under a
/// bound if its lowest value does, so a value exactly on a bound counts in
/// it, and one up to 0.1 % above may too; the sum takes each bucket at its
/// median.
pub fn bucket_counts(h: &Histogram<u64>) -> ([u64; BUCKET_BOUNDS.len()], u128) {
    let mut per_bucket = [0u64; BUCKET_BOUNDS.len()];
    let mut sum_ns: u128 = 0;
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let count = v.count_at_value();
        sum_ns += u128::from(h.median_equivalent(value)) * u128::from(count);
        let lowest = h.lowest_equivalent(value);
        let i = BUCKET_BOUNDS.partition_point(|&(bound, _)| bound < lowest);
        if let Some(b) = per_bucket.get_mut(i) {
            *b += count;
        }
    }
    let mut running = 0u64;
    for b in &mut per_bucket {
        running += *b;
        *b = running;
    }
    (per_bucket, sum_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RejectReason;
    use crate::metrics::render::tests::{fixture, fixture_histograms};
    use std::collections::BTreeMap;

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reading of the text format: every line is blank, a comment,
    /// or `name{labels} value`.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'));
        let mut out = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (_, kind) = rest.split_once(' ').expect("TYPE name kind");
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels close");
                    let labels = body
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label k=v");
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (k.to_owned(), v.expect("quoted label value").to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            assert!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "metric name {name:?}"
            );
            out.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        out
    }

    #[test]
    fn exposition_parses_and_histograms_are_consistent() {
        let (i, c) = fixture_histograms();
        let text = render_prometheus(&fixture(&i, &c));
        let samples = parse(&text);

        let one = |name: &str| {
            let v: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
            assert_eq!(v.len(), 1, "{name}");
            v[0].value
        };
        assert_eq!(one("tspi_ingest_received_total"), 1_000_123.0);
        assert_eq!(one("tspi_ingest_acked_total"), 999_990.0);
        assert_eq!(one("tspi_ingest_kernel_dropped_total"), 0.0);
        assert_eq!(one("tspi_ingest_ring_frames"), 12.0);
        assert_eq!(one("tspi_ingest_acks_in_flight"), 40.0);
        let rejected: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "tspi_ingest_rejected_total")
            .collect();
        assert_eq!(rejected.len(), RejectReason::ALL.len());
        for (s, reason) in rejected.iter().zip(RejectReason::ALL) {
            assert_eq!(s.labels["reason"], reason.label());
        }
        assert_eq!(rejected[3].value, 1.0);

        for which in Latency::ALL {
            let name = format!("tspi_ingest_{}_seconds", which.name());
            let buckets: Vec<_> = samples
                .iter()
                .filter(|s| s.name == format!("{name}_bucket"))
                .collect();
            assert_eq!(buckets.len(), BUCKET_BOUNDS.len() + 1);
            for w in buckets.windows(2) {
                assert!(w[0].value <= w[1].value, "{name} buckets monotonic");
            }
            let last = buckets.last().unwrap();
            assert_eq!(last.labels["le"], "+Inf");
            let count = one(&format!("{name}_count"));
            assert_eq!(last.value, count);
            assert_eq!(count, c.view().get(which).len() as f64);
            let sum = one(&format!("{name}_sum"));
            assert!(sum > 0.0);
            // le values parse and increase.
            let les: Vec<f64> = buckets[..BUCKET_BOUNDS.len()]
                .iter()
                .map(|b| b.labels["le"].parse().unwrap())
                .collect();
            for (le, (ns, _)) in les.iter().zip(BUCKET_BOUNDS) {
                assert!((le * 1e9 - ns as f64).abs() < 1e-3);
            }
        }
        // Every family has HELP and TYPE.
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helps, types);
        assert_eq!(helps, 9 + 1 + 2 + 3);
    }

    #[test]
    fn exact_histogram_text() {
        let (i, c) = fixture_histograms();
        let text = render_prometheus(&fixture(&i, &c));
        let start = text
            .find("# HELP tspi_ingest_receive_to_ack_seconds")
            .unwrap();
        assert_eq!(
            &text[start..],
            "# HELP tspi_ingest_receive_to_ack_seconds Time from datagram receipt to the JetStream ack.\n\
             # TYPE tspi_ingest_receive_to_ack_seconds histogram\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.00005\"} 0\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.0001\"} 0\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.00025\"} 0\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.0005\"} 980\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.001\"} 980\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.0025\"} 990\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.005\"} 999\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.01\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.025\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.05\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.1\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.25\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"0.5\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"1\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"2.5\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"5\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"10\"} 1000\n\
             tspi_ingest_receive_to_ack_seconds_bucket{le=\"+Inf\"} 1001\n\
             tspi_ingest_receive_to_ack_seconds_sum 20.463326464\n\
             tspi_ingest_receive_to_ack_seconds_count 1001\n"
        );
    }

    #[test]
    fn bucket_edges() {
        let mut h = crate::metrics::new_latency_histogram();
        h.saturating_record(49_000); // <= 50 us
        h.saturating_record(100_000); // exactly on a bound: in it
        h.saturating_record(11_000_000_000); // above 10 s: only +Inf
        let (b, sum_ns) = bucket_counts(&h);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 2);
        assert_eq!(b[BUCKET_BOUNDS.len() - 1], 2);
        let exact = 49_000u128 + 100_000 + 11_000_000_000;
        assert!(sum_ns.abs_diff(exact) * 1000 <= exact);
    }
}
