//! Matching arrivals to the schedule: each arrival's `Nats-Msg-Id` names a
//! sensor (a track) and an intended send time (a datagram of the schedule).
//! Latency is measured from the *intended* send time, never from when a
//! late sender got round to it, so a stalled sender shows up as latency
//! rather than hiding (no coordinated omission).

use crate::report::{Percentiles, Summary};
use crate::{Fleet, Schedule};
use hdrhistogram::Histogram;
use std::sync::Arc;
use tspi::codec::{FrameType, TICKS_PER_S};

/// The latency histogram (nanoseconds).
pub type LatencyHistogram = Histogram<u64>;

/// Latencies are recorded from 1 ns to this (longer ones saturate).
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// First arrival of datagram `index`, `latency_ns` after its intended time.
    New { index: u64, latency_ns: u64 },
    /// Datagram `index` arrived again.
    Duplicate { index: u64 },
    /// Not a datagram of this run (another sender, another run, bad id).
    Unknown,
}

/// Why a ledger cannot be kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("{0} datagrams are too many to account for one by one (limit 8e9: split the run)")]
    TooLarge(u64),
}

/// Parse `<sensor>:<day>:<seconds>.<4 digits>` (and any `:suffix` a replay
/// adds) into `(sensor_id, day, time_ticks)`.
pub fn parse_msg_id(id: &str) -> Option<(u16, u16, u32)> {
    let mut parts = id.splitn(4, ':');
    let sensor = parts.next()?.parse::<u16>().ok()?;
    let day = parts.next()?.parse::<u16>().ok()?;
    let (secs, frac) = parts.next()?.split_once('.')?;
    if frac.len() != 4 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = secs.parse::<u32>().ok()?;
    let ticks = secs
        .checked_mul(TICKS_PER_S)?
        .checked_add(frac.parse::<u32>().ok()?)?;
    Some((sensor, day, ticks))
}

/// One interval of the run (by intended send time) for plots against time.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimePoint {
    /// Start of the interval, seconds after the run's start.
    pub t_s: f64,
    pub latency: Percentiles,
}

/// The account of a run's arrivals.
#[derive(Debug)]
pub struct Ledger {
    fleet: Arc<Fleet>,
    schedule: Schedule,
    seen: Vec<u64>,
    received: u64,
    duplicated: u64,
    unknown: u64,
    latency: Histogram<u64>,
    interval_ns: u64,
    timeline: Vec<Histogram<u64>>,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, sigfig).expect("static bounds")
}

impl Ledger {
    /// A ledger for `schedule` of `fleet`, with a latency summary per
    /// `interval_ns` of intended send time (for plots against time).
    pub fn new(
        fleet: Arc<Fleet>,
        schedule: Schedule,
        interval_ns: u64,
    ) -> Result<Self, LedgerError> {
        assert!(interval_ns > 0);
        if schedule.total > 8_000_000_000 {
            return Err(LedgerError::TooLarge(schedule.total));
        }
        Ok(Ledger {
            fleet,
            schedule,
            seen: vec![0; schedule.total.div_ceil(64) as usize],
            received: 0,
            duplicated: 0,
            unknown: 0,
            latency: histogram(3),
            interval_ns,
            timeline: Vec::new(),
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Record an arrival by its `Nats-Msg-Id` (and the type its subject
    /// names, when known) at `arrival_unix_ns`.
    pub fn record_id(
        &mut self,
        frame_type: Option<FrameType>,
        msg_id: &str,
        arrival_unix_ns: u64,
    ) -> Outcome {
        match parse_msg_id(msg_id) {
            Some((sensor, day, ticks)) => {
                self.record(frame_type, sensor, day, ticks, arrival_unix_ns)
            }
            None => {
                self.unknown += 1;
                Outcome::Unknown
            }
        }
    }

    /// Record an arrival of `sensor_id` stamped `day`/`time_ticks`.
    pub fn record(
        &mut self,
        frame_type: Option<FrameType>,
        sensor_id: u16,
        day: u16,
        time_ticks: u32,
        arrival_unix_ns: u64,
    ) -> Outcome {
        let index = self.fleet.track_of(sensor_id).and_then(|k| {
            if frame_type.is_some_and(|t| t != self.fleet.frame_type(k)) {
                return None;
            }
            self.schedule.locate(k, day, time_ticks)
        });
        let Some(index) = index else {
            self.unknown += 1;
            return Outcome::Unknown;
        };
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Outcome::Duplicate { index };
        }
        self.seen[word] |= bit;
        self.received += 1;
        let offset = self.schedule.offset_ns(index);
        let intended = self.schedule.start_unix_ns + offset;
        let latency_ns = arrival_unix_ns
            .saturating_sub(intended)
            .clamp(1, LATENCY_NS_MAX);
        self.latency.saturating_record(latency_ns);
        let slot = (offset / self.interval_ns) as usize;
        if self.timeline.len() <= slot {
            self.timeline.resize_with(slot + 1, || histogram(2));
        }
        self.timeline[slot].saturating_record(latency_ns);
        Outcome::New { index, latency_ns }
    }

    /// Distinct datagrams received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether datagram `index` has arrived.
    pub fn has(&self, index: u64) -> bool {
        index < self.schedule.total && self.seen[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// The account, given how many datagrams the sender sent (the first
    /// `sent` of the schedule).
    pub fn summary(&self, sent: u64) -> Summary {
        let received_of_sent = if sent >= self.schedule.total {
            self.received
        } else {
            let full = (sent / 64) as usize;
            let mut n: u64 = self.seen[..full]
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum();
            if !sent.is_multiple_of(64) {
                n += u64::from((self.seen[full] & ((1u64 << (sent % 64)) - 1)).count_ones());
            }
            n
        };
        Summary {
            offered_rate_per_s: self.schedule.rate_per_s(),
            tracks: self.schedule.tracks,
            rate_hz: self.schedule.rate_hz(),
            scheduled: self.schedule.total,
            sent,
            received: self.received,
            lost: sent - received_of_sent,
            duplicated: self.duplicated,
            unknown: self.unknown,
            latency: Percentiles::of(&self.latency),
        }
    }

    /// Latency percentiles per interval of intended send time.
    pub fn timeline(&self) -> Vec<TimePoint> {
        self.timeline
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| TimePoint {
                t_s: (i as u64 * self.interval_ns) as f64 / 1e9,
                latency: Percentiles::of(h),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FleetConfig, Style};
    use tspi::message::write_msg_id;

    #[test]
    fn msg_ids_parse() {
        assert_eq!(parse_msg_id("501:123:1.5340"), Some((501, 123, 15_340)));
        assert_eq!(
            parse_msg_id("65535:366:86399.9999"),
            Some((65_535, 366, 863_999_999))
        );
        assert_eq!(parse_msg_id("7:1:0.0001:replay:abc"), Some((7, 1, 1)));
        for bad in [
            "",
            "1:2",
            "1:2:3",
            "1:2:3.12",
            "1:2:3.12345",
            "x:2:3.0000",
            "70000:1:0.0000",
            "1:2:3.00a0",
        ] {
            assert_eq!(parse_msg_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_datagram_is_matched_once_and_latency_is_from_the_intended_time() {
        let fleet = Fleet::new(FleetConfig::new(Style::Airshow, 12, 3)).unwrap();
        let schedule = Schedule::new(1_700_000_000_000_000_000, 12, 20.0, 1.0).unwrap();
        let mut ledger = Ledger::new(fleet.clone(), schedule, 100_000_000).unwrap();
        let g = crate::Generator::new(fleet, schedule);
        let mut id = String::new();
        for (i, (t, d)) in (0u64..).zip(g) {
            let f = tspi::codec::parse(&d).unwrap();
            id.clear();
            write_msg_id(&f, &mut id);
            // Every 10th datagram is lost; the rest arrive 2 ms late.
            if i % 10 != 3 {
                let o = ledger.record_id(Some(f.frame_type()), &id, t + 2_000_000);
                assert_eq!(
                    o,
                    Outcome::New {
                        index: i,
                        latency_ns: 2_000_000
                    }
                );
            }
            if i == 5 {
                assert_eq!(
                    ledger.record_id(None, &id, t + 9),
                    Outcome::Duplicate { index: 5 }
                );
            }
        }
        assert_eq!(ledger.record_id(None, "9999:1:0.0000", 0), Outcome::Unknown);
        assert_eq!(ledger.record_id(None, "garbage", 0), Outcome::Unknown);
        let s = ledger.summary(240);
        assert_eq!(
            (s.sent, s.received, s.lost, s.duplicated, s.unknown),
            (240, 216, 24, 1, 2)
        );
        assert!((s.latency.p99_ms - 2.0).abs() < 0.01, "{s:?}");
        // The sender stopped after 100: lost counts only what was sent.
        assert_eq!(ledger.summary(100).lost, 10);
        assert_eq!(ledger.timeline().len(), 10);
    }
}
