//! The reporter: once per interval it collects the latencies, keeps the
//! cumulative totals, and computes counter deltas into a [`Report`] that the
//! renderers turn into text.

use super::counters::{Gauges, IngestCounts};
use super::latency::{Latencies, LatencyHistograms, LatencyRecorder, LatencyView};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a report is taken: wall clock for timestamps, monotonic clock for
/// the interval length (so a wall-clock step does not distort rates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportTime {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// [`crate::clock::mono_ns`].
    pub mono_ns: u64,
}

impl ReportTime {
    /// Both clocks, now.
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ReportTime {
            unix_ms,
            mono_ns: crate::clock::mono_ns(),
        }
    }
}

/// One interval's report. It borrows the histograms from the [`Reporter`]
/// that made it (no copy of ~1.3 MB of counts per interval), so render and
/// publish it before the next [`Reporter::report`].
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    /// Start of the interval (the previous report, or the reporter's start).
    pub start_unix_ms: u64,
    /// End of the interval: when this report was taken.
    pub at_unix_ms: u64,
    /// Length of the interval by the monotonic clock, seconds.
    pub interval_s: f64,
    /// Totals since start.
    pub counters: IngestCounts,
    /// Gained during this interval.
    pub delta: IngestCounts,
    pub gauges: Gauges,
    /// Latencies recorded during this interval (the log line, JSON line and
    /// NATS snapshot show these).
    pub interval: LatencyView<'a>,
    /// Latencies since start (Prometheus histograms are cumulative).
    pub cumulative: LatencyView<'a>,
}

impl Report<'_> {
    /// `n` per second over this interval; 0 for an empty interval.
    pub fn rate_per_s(&self, n: u64) -> f64 {
        if self.interval_s > 0.0 {
            n as f64 / self.interval_s
        } else {
            0.0
        }
    }
}

/// Owns the [`Latencies`], the interval's and the cumulative histograms
/// and the previous counters. One per process; the reporter task calls
/// [`Reporter::report`] every interval, and a `/metrics` scrape
/// [`Reporter::collect`] in between (behind a mutex both share).
#[derive(Debug)]
pub struct Reporter {
    latencies: Latencies,
    /// Samples collected since the last report (by reports or scrapes).
    interval: LatencyHistograms,
    /// The last report borrowed `interval`: empty it before collecting.
    interval_closed: bool,
    cumulative: LatencyHistograms,
    previous: IngestCounts,
    previous_at: ReportTime,
    refresh_timeout: Duration,
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter {
    /// A reporter with its own [`Latencies`], whose first interval starts
    /// now; all histograms are allocated here.
    pub fn new() -> Self {
        Self::with_latencies(Latencies::new(), ReportTime::now())
    }

    /// A reporter over `latencies` (recorders may already exist) whose first
    /// interval starts at `start`.
    pub fn with_latencies(latencies: Latencies, start: ReportTime) -> Self {
        Reporter {
            latencies,
            interval: LatencyHistograms::new(),
            interval_closed: false,
            cumulative: LatencyHistograms::new(),
            previous: IngestCounts::default(),
            previous_at: start,
            refresh_timeout: super::latency::REFRESH_TIMEOUT_DEFAULT,
        }
    }

    /// Change how long a report waits for idle recorders
    /// ([`super::REFRESH_TIMEOUT_DEFAULT`] unless set).
    pub fn with_refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout;
        self
    }

    /// A recorder for one more publisher task.
    pub fn recorder(&self) -> LatencyRecorder {
        self.latencies.recorder()
    }

    /// [`Reporter::report_at`] now. Blocks up to the refresh timeout (see
    /// [`Latencies::refresh`]); from async code:
    /// `tokio::task::block_in_place(|| reporter.report(c, g))`.
    pub fn report(&mut self, counters: IngestCounts, gauges: Gauges) -> Report<'_> {
        self.report_at(ReportTime::now(), counters, gauges)
    }

    /// Collect what the recorders recorded since the last collection into
    /// the interval's and the cumulative histograms, and return the
    /// cumulative ones (what a `/metrics` scrape shows). Blocks up to the
    /// refresh timeout, as [`Reporter::report`] does.
    ///
    /// Read counters *after* this, and have recorders record a sample after
    /// counting it (the publisher does): then no histogram's count exceeds
    /// its counter in one scrape.
    pub fn collect(&mut self) -> LatencyView<'_> {
        if self.interval_closed {
            self.interval.reset();
            self.interval_closed = false;
        }
        self.latencies.reset();
        self.latencies.refresh_timeout(self.refresh_timeout);
        self.interval.add(self.latencies.view());
        self.cumulative.add(self.latencies.view());
        self.cumulative.view()
    }

    /// Close the interval at `now`: collect what the recorders recorded
    /// since the last collection, and compute the counter deltas.
    ///
    /// The interval histograms are emptied at the next collection rather
    /// than here so the returned report can borrow them; the effect is the
    /// same.
    pub fn report_at(
        &mut self,
        now: ReportTime,
        counters: IngestCounts,
        gauges: Gauges,
    ) -> Report<'_> {
        self.collect();
        self.interval_closed = true;

        let delta = counters.delta_since(&self.previous);
        let interval_s = now.mono_ns.saturating_sub(self.previous_at.mono_ns) as f64 / 1e9;
        let start_unix_ms = self.previous_at.unix_ms;
        self.previous = counters;
        self.previous_at = now;

        Report {
            start_unix_ms,
            at_unix_ms: now.unix_ms,
            interval_s,
            counters,
            delta,
            gauges,
            interval: self.interval.view(),
            cumulative: self.cumulative.view(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> ReportTime {
        ReportTime {
            unix_ms: 1_700_000_000_000 + s * 1000,
            mono_ns: s * 1_000_000_000,
        }
    }

    #[test]
    fn deltas_intervals_and_cumulative_histograms() {
        let mut reporter = Reporter::with_latencies(Latencies::new(), at(0))
            .with_refresh_timeout(Duration::from_secs(5));

        let mut rec = reporter.recorder();
        for _ in 0..10 {
            rec.record_receive_to_ack(1_000_000);
        }
        rec.flush(); // nothing asked yet: a no-op
        let c1 = IngestCounts {
            received: 100,
            acked: 90,
            ..IngestCounts::default()
        };
        // The recorder is alive and idle: hand over by dropping it.
        drop(rec);
        let r1 = reporter.report_at(
            at(10),
            c1,
            Gauges {
                ring_frames: 3,
                acks_in_flight: 4,
            },
        );
        assert_eq!(r1.start_unix_ms, at(0).unix_ms);
        assert_eq!(r1.at_unix_ms, at(10).unix_ms);
        assert_eq!(r1.interval_s, 10.0);
        assert_eq!(r1.delta, c1);
        assert_eq!(r1.counters, c1);
        assert_eq!(r1.gauges.ring_frames, 3);
        assert_eq!(r1.rate_per_s(r1.delta.received), 10.0);
        assert_eq!(r1.interval.receive_to_ack.len(), 10);
        assert_eq!(r1.cumulative.receive_to_ack.len(), 10);

        let mut rec = reporter.recorder();
        for _ in 0..5 {
            rec.record_receive_to_ack(2_000_000);
        }
        drop(rec);
        let mut c2 = c1;
        c2.received = 150;
        c2.acked = 140;
        c2.rejected[1] = 2;
        let r2 = reporter.report_at(at(15), c2, Gauges::default());
        assert_eq!(r2.start_unix_ms, at(10).unix_ms);
        assert_eq!(r2.interval_s, 5.0);
        assert_eq!(
            r2.delta,
            IngestCounts {
                received: 50,
                acked: 50,
                rejected: [0, 2, 0, 0, 0, 0],
                ..IngestCounts::default()
            }
        );
        assert_eq!(r2.counters, c2);
        // The interval histogram was reset; the cumulative one kept both.
        assert_eq!(r2.interval.receive_to_ack.len(), 5);
        assert_eq!(r2.cumulative.receive_to_ack.len(), 15);

        // An empty interval.
        let r3 = reporter.report_at(at(15), c2, Gauges::default());
        assert_eq!(r3.delta, IngestCounts::default());
        assert_eq!(r3.interval_s, 0.0);
        assert_eq!(r3.rate_per_s(r3.delta.received), 0.0);
        assert_eq!(r3.interval.receive_to_ack.len(), 0);
        assert_eq!(r3.cumulative.receive_to_ack.len(), 15);
    }

    #[test]
    fn a_scrape_between_reports_keeps_the_interval_whole() {
        let mut reporter = Reporter::with_latencies(Latencies::new(), at(0));
        let mut rec = reporter.recorder();
        rec.record_receive_to_ack(1_000);
        drop(rec);
        assert_eq!(reporter.collect().receive_to_ack.len(), 1, "scraped");
        let mut rec = reporter.recorder();
        rec.record_receive_to_ack(2_000);
        drop(rec);
        let r = reporter.report_at(at(10), IngestCounts::default(), Gauges::default());
        assert_eq!(
            r.interval.receive_to_ack.len(),
            2,
            "the scrape's sample too"
        );
        assert_eq!(r.cumulative.receive_to_ack.len(), 2, "counted once");
        assert_eq!(reporter.collect().receive_to_ack.len(), 2);
        let r = reporter.report_at(at(20), IngestCounts::default(), Gauges::default());
        assert_eq!(r.interval.receive_to_ack.len(), 0, "a new interval");
    }

    #[test]
    fn one_closure_renders_successive_reports() {
        let mut reporter = Reporter::with_latencies(Latencies::new(), at(0));
        let mut lines = Vec::new();
        let mut emit = |r: &Report<'_>| lines.push(crate::metrics::render_log_line(r));
        for s in 1..=3 {
            let c = IngestCounts {
                received: s * 10,
                ..IngestCounts::default()
            };
            let r = reporter.report_at(at(s), c, Gauges::default());
            emit(&r);
        }
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("ingest: 10 msg/s in"), "{}", lines[2]);
    }
}
