//! The operator's report of a measured run: a table, JSON, and HdrHistogram's
//! standard percentile-distribution text (`.hgrm`, plottable with the
//! HdrHistogram plotter).

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// Percentiles of a histogram of nanoseconds (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e6,
        }
    }

    /// The named percentiles, in plotting order.
    pub fn series(&self) -> [(&'static str, f64); 6] {
        [
            ("p50", self.p50_ms),
            ("p90", self.p90_ms),
            ("p99", self.p99_ms),
            ("p99.9", self.p99_9_ms),
            ("p99.99", self.p99_99_ms),
            ("max", self.max_ms),
        ]
    }
}

/// The account of a measured run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Offered datagrams per second (tracks × rate).
    pub offered_rate_per_s: f64,
    pub tracks: u32,
    pub rate_hz: f64,
    /// Datagrams the schedule holds.
    pub scheduled: u64,
    /// Datagrams handed to the output (the first `sent` of the schedule).
    pub sent: u64,
    /// Distinct datagrams that arrived.
    pub received: u64,
    /// Sent and never arrived.
    pub lost: u64,
    /// Arrivals of a datagram that had already arrived.
    pub duplicated: u64,
    /// Arrivals that are no datagram of this run.
    pub unknown: u64,
    /// End-to-end latency from each datagram's intended send time.
    pub latency: Percentiles,
}

impl Summary {
    /// The plain-text table for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "offered   {:.0} datagrams/s ({} tracks x {} Hz), {} scheduled",
            self.offered_rate_per_s, self.tracks, self.rate_hz, self.scheduled
        );
        let _ = writeln!(
            s,
            "sent {}  received {}  lost {}  duplicated {}  unknown {}",
            self.sent, self.received, self.lost, self.duplicated, self.unknown
        );
        let _ = writeln!(
            s,
            "latency from intended send time (ms, n={}):",
            self.latency.count
        );
        let _ = writeln!(
            s,
            "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.p99_99_ms, l.max_ms, l.mean_ms
        );
        s
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data")
    }
}

/// HdrHistogram's percentile distribution (`outputPercentileDistribution`
/// with 5 ticks per half distance), values divided by `unit_ns` (1e6: ms).
pub fn hgrm(h: &Histogram<u64>, unit_ns: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / unit_ns;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean(), h.stdev())
    };
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        mean / unit_ns,
        sd / unit_ns
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / unit_ns,
        h.len()
    );
    // Sub-buckets: the power of two at or above 2 × 10^sigfig.
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 10 ms
        }
        h
    }

    #[test]
    fn percentiles_and_table() {
        let p = Percentiles::of(&sample());
        assert_eq!(p.count, 10_000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
        assert_eq!(
            Percentiles::of(&Histogram::new(3).unwrap()),
            Percentiles::default()
        );
        let s = Summary {
            offered_rate_per_s: 1000.0,
            tracks: 100,
            rate_hz: 10.0,
            scheduled: 10,
            sent: 10,
            received: 9,
            lost: 1,
            duplicated: 0,
            unknown: 0,
            latency: p,
        };
        let t = s.table();
        assert!(t.contains("lost 1"), "{t}");
        assert!(t.contains("p99.99"), "{t}");
        let back: Summary = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn hgrm_has_the_standard_shape() {
        let text = hgrm(&sample(), 1e6);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<&str> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(rows.len() > 20, "{text}");
        // Percentile and count columns only grow; the last row is 100%.
        let mut last = (0.0, 0u64);
        for r in &rows {
            let cols: Vec<&str> = r.split_whitespace().collect();
            let (q, n): (f64, u64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
            assert!(q >= last.0 && n >= last.1, "{r}");
            last = (q, n);
        }
        assert_eq!(last, (1.0, 10_000));
        assert!(
            text.contains("#[Max     =       10.002, Total count    =        10000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }
}
