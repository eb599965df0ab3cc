//! The three ingest latencies as HdrHistograms, recorded per publisher task
//! and merged by the reporter.
//!
//! Each publisher task owns a [`LatencyRecorder`]; recording is a plain
//! histogram add into the recorder's own histogram (no lock, no allocation).
//! The reporter's [`Latencies::refresh`] asks every recorder to hand its
//! samples over; a recorder does so on its next record (or
//! [`LatencyRecorder::flush`]). The refresh waits for that at most
//! [`REFRESH_TIMEOUT_DEFAULT`]: a recorder that stays idle past it keeps its
//! samples until its next record or flush, so they land in a later interval.
//! Nothing is lost; a dropped recorder hands its samples over as it goes.

use hdrhistogram::Histogram;
use hdrhistogram::sync::{Recorder, SyncHistogram};
use std::time::{Duration, Instant};

/// Lowest latency told apart from zero, in nanoseconds.
pub const LATENCY_NS_MIN: u64 = 1;
/// Highest latency recorded, in nanoseconds (larger values are recorded as
/// this): 60 s.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept: values are exact to 0.1 %.
pub const LATENCY_SIGFIG: u8 = 3;
/// How long [`Latencies::refresh`] waits for recorders, all three histograms
/// together. A busy publisher records every few microseconds, so only an idle
/// one makes the refresh wait this long.
pub const REFRESH_TIMEOUT_DEFAULT: Duration = Duration::from_millis(50);

/// An empty histogram with the latency range and precision above: 1 ns to
/// 60 s at 3 significant digits, about 220 KiB of counts.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_NS_MIN, LATENCY_NS_MAX, LATENCY_SIGFIG)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5")
}

/// Which latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Latency {
    /// Datagram received (kernel timestamp or read) to the publish call.
    ReceiveToPublish,
    /// Publish call to JetStream ack.
    PublishToAck,
    /// Datagram received to JetStream ack: what the range sees.
    ReceiveToAck,
}

impl Latency {
    /// Every latency, in report order.
    pub const ALL: [Latency; 3] = [
        Latency::ReceiveToPublish,
        Latency::PublishToAck,
        Latency::ReceiveToAck,
    ];

    /// Field and metric name: `receive_to_publish`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Latency::ReceiveToPublish => "receive_to_publish",
            Latency::PublishToAck => "publish_to_ack",
            Latency::ReceiveToAck => "receive_to_ack",
        }
    }

    /// One line for Prometheus `# HELP`.
    pub const fn help(self) -> &'static str {
        match self {
            Latency::ReceiveToPublish => {
                "Time from datagram receipt to the JetStream publish call."
            }
            Latency::PublishToAck => "Time from the JetStream publish call to its ack.",
            Latency::ReceiveToAck => "Time from datagram receipt to the JetStream ack.",
        }
    }
}

/// The three latency histograms, borrowed: what a [`super::Report`] carries.
#[derive(Clone, Copy, Debug)]
pub struct LatencyView<'a> {
    pub receive_to_publish: &'a Histogram<u64>,
    pub publish_to_ack: &'a Histogram<u64>,
    pub receive_to_ack: &'a Histogram<u64>,
}

impl<'a> LatencyView<'a> {
    /// The histogram of one latency.
    pub fn get(&self, which: Latency) -> &'a Histogram<u64> {
        match which {
            Latency::ReceiveToPublish => self.receive_to_publish,
            Latency::PublishToAck => self.publish_to_ack,
            Latency::ReceiveToAck => self.receive_to_ack,
        }
    }
}

/// The three latency histograms, owned (the reporter's cumulative totals;
/// also handy for building a report in tests or tools).
#[derive(Clone, Debug)]
pub struct LatencyHistograms {
    pub receive_to_publish: Histogram<u64>,
    pub publish_to_ack: Histogram<u64>,
    pub receive_to_ack: Histogram<u64>,
}

impl Default for LatencyHistograms {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistograms {
    /// Three empty histograms from [`new_latency_histogram`].
    pub fn new() -> Self {
        LatencyHistograms {
            receive_to_publish: new_latency_histogram(),
            publish_to_ack: new_latency_histogram(),
            receive_to_ack: new_latency_histogram(),
        }
    }

    /// The histogram of one latency.
    pub fn get_mut(&mut self, which: Latency) -> &mut Histogram<u64> {
        match which {
            Latency::ReceiveToPublish => &mut self.receive_to_publish,
            Latency::PublishToAck => &mut self.publish_to_ack,
            Latency::ReceiveToAck => &mut self.receive_to_ack,
        }
    }

    /// Borrow all three.
    pub fn view(&self) -> LatencyView<'_> {
        LatencyView {
            receive_to_publish: &self.receive_to_publish,
            publish_to_ack: &self.publish_to_ack,
            receive_to_ack: &self.receive_to_ack,
        }
    }

    /// Empty all three.
    pub fn reset(&mut self) {
        self.receive_to_publish.reset();
        self.publish_to_ack.reset();
        self.receive_to_ack.reset();
    }

    /// Add every count of `other` (same range and precision: cannot fail).
    pub fn add(&mut self, other: LatencyView<'_>) {
        for which in Latency::ALL {
            self.get_mut(which)
                .add(other.get(which))
                .expect("latency histograms share one range, and recording saturates into it");
        }
    }
}

/// The three latencies, merged from every publisher's [`LatencyRecorder`].
///
/// Between refreshes the histograms hold whatever the recorders have handed
/// over; [`Latencies::reset`] empties them for the next interval.
#[derive(Debug)]
pub struct Latencies {
    receive_to_publish: SyncHistogram<u64>,
    publish_to_ack: SyncHistogram<u64>,
    receive_to_ack: SyncHistogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Three empty histograms, allocated now (before the first datagram).
    pub fn new() -> Self {
        Latencies {
            receive_to_publish: new_latency_histogram().into_sync(),
            publish_to_ack: new_latency_histogram().into_sync(),
            receive_to_ack: new_latency_histogram().into_sync(),
        }
    }

    /// A recorder for one publisher task or thread. Allocates its three local
    /// histograms now.
    pub fn recorder(&self) -> LatencyRecorder {
        LatencyRecorder {
            receive_to_publish: self.receive_to_publish.recorder(),
            publish_to_ack: self.publish_to_ack.recorder(),
            receive_to_ack: self.receive_to_ack.recorder(),
            empty: Histogram::new_with_bounds(1, 2, 1)
                .expect("constant bounds are valid: 1 <= low, high >= 2 * low"),
        }
    }

    /// Collect what the recorders have recorded, waiting at most
    /// [`REFRESH_TIMEOUT_DEFAULT`] for idle ones. Blocks the calling thread:
    /// from async code, wrap it in `tokio::task::block_in_place` or run the
    /// reporter on its own thread.
    pub fn refresh(&mut self) {
        self.refresh_timeout(REFRESH_TIMEOUT_DEFAULT);
    }

    /// [`Latencies::refresh`] with a chosen bound on the wait (all three
    /// histograms together).
    ///
    /// A first pass asks the recorders of all three histograms at once
    /// without waiting; the second waits, up to the deadline, for each in
    /// turn. So an idle histogram (say no acks came back) that uses up the
    /// wait does not keep the samples of a busy one out of this interval:
    /// those answered the first pass and are collected by the second.
    pub fn refresh_timeout(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for h in self.all_mut() {
            h.refresh_timeout(Duration::ZERO);
        }
        for h in self.all_mut() {
            h.refresh_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    fn all_mut(&mut self) -> [&mut SyncHistogram<u64>; 3] {
        [
            &mut self.receive_to_publish,
            &mut self.publish_to_ack,
            &mut self.receive_to_ack,
        ]
    }

    /// Empty the merged histograms (start a new interval). Samples still held
    /// by recorders are kept and arrive at the next refresh.
    pub fn reset(&mut self) {
        for h in self.all_mut() {
            h.reset();
        }
    }

    /// Borrow the merged histograms as of the last refresh.
    pub fn view(&self) -> LatencyView<'_> {
        LatencyView {
            receive_to_publish: &self.receive_to_publish,
            publish_to_ack: &self.publish_to_ack,
            receive_to_ack: &self.receive_to_ack,
        }
    }
}

/// One publisher's write handle on the three latencies. Values are in
/// nanoseconds; above 60 s they are recorded as 60 s. Recording never fails,
/// allocates or logs.
#[derive(Debug)]
pub struct LatencyRecorder {
    receive_to_publish: Recorder<u64>,
    publish_to_ack: Recorder<u64>,
    receive_to_ack: Recorder<u64>,
    /// Added to trigger a hand-over without recording anything.
    empty: Histogram<u64>,
}

// A recorder moves to its publisher thread or task.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<LatencyRecorder>();
};

impl LatencyRecorder {
    /// Datagram received → publish call.
    #[inline]
    pub fn record_receive_to_publish(&mut self, ns: u64) {
        self.receive_to_publish.saturating_record(ns);
    }

    /// Publish call → ack.
    #[inline]
    pub fn record_publish_to_ack(&mut self, ns: u64) {
        self.publish_to_ack.saturating_record(ns);
    }

    /// Datagram received → ack.
    #[inline]
    pub fn record_receive_to_ack(&mut self, ns: u64) {
        self.receive_to_ack.saturating_record(ns);
    }

    /// Record into the histogram of `which`.
    #[inline]
    pub fn record(&mut self, which: Latency, ns: u64) {
        match which {
            Latency::ReceiveToPublish => self.record_receive_to_publish(ns),
            Latency::PublishToAck => self.record_publish_to_ack(ns),
            Latency::ReceiveToAck => self.record_receive_to_ack(ns),
        }
    }

    /// Hand the samples recorded so far to the reporter if it has asked since
    /// the last hand-over; otherwise a no-op. Cheap (an atomic load): a
    /// publisher calls it on its idle path (e.g. each time its ring poll comes
    /// back empty) so that a refresh never waits for it and its samples are
    /// reported in the interval they belong to.
    #[inline]
    pub fn flush(&mut self) {
        for r in [
            &mut self.receive_to_publish,
            &mut self.publish_to_ack,
            &mut self.receive_to_ack,
        ] {
            r.add(&self.empty)
                .expect("adding an empty histogram cannot fail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn recorders_on_two_threads_merge() {
        let mut lat = Latencies::new();
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let mut rec = lat.recorder();
                thread::spawn(move || {
                    for i in 0..1000u64 {
                        rec.record_receive_to_publish(1_000 + i + t * 1_000_000);
                        rec.record_publish_to_ack(500_000);
                        rec.record_receive_to_ack(600_000 + i);
                    }
                    // Dropping the recorder hands its samples over.
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        lat.refresh();
        let v = lat.view();
        assert_eq!(v.receive_to_publish.len(), 2000);
        assert_eq!(v.publish_to_ack.len(), 2000);
        assert_eq!(v.receive_to_ack.len(), 2000);
        assert_eq!(v.receive_to_publish.count_between(0, 10_000), 1000);
        assert_eq!(
            v.receive_to_publish.count_between(1_000_000, 2_000_000),
            1000
        );
    }

    #[test]
    fn live_recorders_hand_over_on_their_next_record() {
        let mut lat = Latencies::new();
        let (to_reporter, from_worker) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut rec = lat.recorder();
        let worker = thread::spawn(move || {
            for _ in 0..100 {
                rec.record_receive_to_ack(1_000);
            }
            to_reporter.send(()).unwrap();
            // Stay alive and busy until the reporter has refreshed once.
            while wait.try_recv().is_err() {
                rec.record_receive_to_ack(2_000);
                thread::yield_now();
            }
            rec
        });
        from_worker.recv().unwrap();
        // The other two histograms' recorders are idle and use up the wait;
        // the busy one is collected all the same.
        let t0 = Instant::now();
        lat.refresh_timeout(Duration::from_millis(300));
        assert!(t0.elapsed() >= Duration::from_millis(300));
        go.send(()).unwrap();
        let rec = worker.join().unwrap();
        // The busy recorder answered the refresh: at least its first 100.
        assert!(lat.view().receive_to_ack.len() >= 100);
        drop(rec);
        let before = lat.view().receive_to_ack.len();
        lat.refresh();
        assert!(lat.view().receive_to_ack.len() >= before);
    }

    #[test]
    fn idle_recorder_delays_refresh_only_by_the_timeout_and_loses_nothing() {
        let mut lat = Latencies::new();
        let mut rec = lat.recorder();
        rec.record_publish_to_ack(7_000);
        let t0 = Instant::now();
        lat.refresh_timeout(Duration::from_millis(20));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // The idle recorder has not handed over yet.
        assert_eq!(lat.view().publish_to_ack.len(), 0);
        lat.reset();
        // Its next flush hands over the pending sample.
        rec.flush();
        lat.refresh_timeout(Duration::from_millis(20));
        assert_eq!(lat.view().publish_to_ack.len(), 1);
        assert_eq!(lat.view().publish_to_ack.count_between(6_990, 7_010), 1);
    }

    #[test]
    fn recording_saturates_into_range() {
        let mut lat = Latencies::new();
        let mut rec = lat.recorder();
        rec.record(Latency::ReceiveToAck, 0);
        rec.record(Latency::ReceiveToAck, u64::MAX);
        drop(rec);
        lat.refresh();
        let h = lat.view().receive_to_ack;
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_NS_MAX);
        assert!(h.max() <= LATENCY_NS_MAX + LATENCY_NS_MAX / 1000);
        assert_eq!(h.min(), 0);
    }

    #[test]
    fn owned_histograms_add_views() {
        let mut a = LatencyHistograms::new();
        let mut b = LatencyHistograms::new();
        a.receive_to_ack.saturating_record(5);
        b.receive_to_ack.saturating_record(6);
        b.publish_to_ack.saturating_record(7);
        a.add(b.view());
        assert_eq!(a.receive_to_ack.len(), 2);
        assert_eq!(a.publish_to_ack.len(), 1);
        assert_eq!(a.receive_to_publish.len(), 0);
        for which in Latency::ALL {
            assert!(!which.name().is_empty() && !which.help().is_empty());
        }
    }
}
