//! The open-loop send schedule, and the generator that walks it.
//!
//! Datagram `i` belongs to track `k = i mod N` and is that track's `j = i
//! div N`-th update; it is due `i / (N R)` seconds after the start (integer
//! nanoseconds, exact), so the fleet's aggregate rate `N R` is smooth and
//! each track updates every `1/R` s. Its `day`/`time_ticks` name that
//! intended time (UTC), so any consumer can compute latency from it.

use crate::Fleet;
use std::sync::Arc;
use tspi::codec::{DATAGRAM_LEN, Frame, FrameType, TICKS_PER_S};
use tspi::message::utc_day_ticks;

const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_DAY: u64 = 86_400_000_000_000;
const NS_PER_TICK: u64 = 100_000;

/// Why a schedule cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("rate {0} Hz per track: choose 0.001..=1000 Hz")]
    Rate(f64),
    #[error("duration {0} s: choose a positive, finite duration")]
    Duration(f64),
    #[error("{tracks} tracks x {rate_hz} Hz x {duration_s} s is no datagram at all")]
    Empty {
        tracks: u32,
        rate_hz: f64,
        duration_s: f64,
    },
}

/// When every datagram of a run is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    /// Intended send time of datagram 0 (UTC, ns since the epoch).
    pub start_unix_ns: u64,
    pub tracks: u32,
    /// Updates per track per second, in millihertz (exact arithmetic).
    pub rate_mhz: u64,
    /// Datagrams in the run: `tracks × updates per track`.
    pub total: u64,
}

impl Schedule {
    /// `rate_hz` per track (rounded to the millihertz) for `duration_s`:
    /// `floor(rate × duration)` updates per track.
    pub fn new(
        start_unix_ns: u64,
        tracks: u32,
        rate_hz: f64,
        duration_s: f64,
    ) -> Result<Schedule, ScheduleError> {
        if !(rate_hz.is_finite() && (0.001..=crate::RATE_HZ_MAX).contains(&rate_hz)) {
            return Err(ScheduleError::Rate(rate_hz));
        }
        if !(duration_s.is_finite() && duration_s > 0.0) {
            return Err(ScheduleError::Duration(duration_s));
        }
        let rate_mhz = (rate_hz * 1000.0).round() as u64;
        let per_track = (rate_mhz as f64 * duration_s / 1000.0 + 1e-9).floor() as u64;
        let total = per_track * u64::from(tracks);
        if total == 0 {
            return Err(ScheduleError::Empty {
                tracks,
                rate_hz,
                duration_s,
            });
        }
        Ok(Schedule {
            start_unix_ns,
            tracks,
            rate_mhz,
            total,
        })
    }

    /// Aggregate datagrams per second.
    pub fn rate_per_s(&self) -> f64 {
        self.rate_mhz as f64 * f64::from(self.tracks) / 1000.0
    }

    /// Per-track rate in hertz.
    pub fn rate_hz(&self) -> f64 {
        self.rate_mhz as f64 / 1000.0
    }

    /// Seconds from the first datagram's due time to the end of the run.
    pub fn duration_s(&self) -> f64 {
        self.total as f64 / self.rate_per_s()
    }

    /// Nanoseconds after the start at which datagram `i` is due.
    #[inline]
    pub fn offset_ns(&self, i: u64) -> u64 {
        (u128::from(i) * NS_PER_S * 1000 / (u128::from(self.tracks) * u128::from(self.rate_mhz)))
            as u64
    }

    /// Intended send time of datagram `i` (UTC ns).
    #[inline]
    pub fn intended_unix_ns(&self, i: u64) -> u64 {
        self.start_unix_ns + self.offset_ns(i)
    }

    /// Datagrams due by `offset_ns` after the start (those with
    /// `offset_ns(i) <= offset_ns`), capped at the total.
    pub fn due_by(&self, offset_ns: u64) -> u64 {
        let n = u128::from(offset_ns) * u128::from(self.tracks) * u128::from(self.rate_mhz)
            / (NS_PER_S * 1000);
        (n as u64).saturating_add(1).min(self.total)
    }

    /// The datagram of track `track` stamped `day`/`time_ticks`, if this
    /// schedule has one: the inverse of the stamping, for matching arrivals.
    pub fn locate(&self, track: u32, day: u16, time_ticks: u32) -> Option<u64> {
        if track >= self.tracks || time_ticks >= tspi::codec::TIME_TICKS_END {
            return None;
        }
        let midnight0 = self.start_unix_ns - self.start_unix_ns % NS_PER_DAY;
        let span_days = (self.offset_ns(self.total.saturating_sub(1)) / NS_PER_DAY) + 1;
        // The run covers a few days at most: find which one `day` names.
        let tick_ns = (0..=span_days)
            .map(|d| midnight0 + d * NS_PER_DAY)
            .find(|&m| utc_day_ticks(m).0 == day)?
            + u64::from(time_ticks) * NS_PER_TICK;
        let n = u128::from(self.tracks);
        let r = u128::from(self.rate_mhz);
        // First index due at or after the tick starts.
        let i_lo = if tick_ns <= self.start_unix_ns {
            0
        } else {
            (u128::from(tick_ns - self.start_unix_ns) * n * r).div_ceil(NS_PER_S * 1000)
        };
        let k = u128::from(track);
        let j = if i_lo <= k { 0 } else { (i_lo - k).div_ceil(n) };
        let i = u64::try_from(j * n + k).ok()?;
        let t = self.intended_unix_ns(i);
        (i < self.total && t >= tick_ns && t < tick_ns + NS_PER_TICK).then_some(i)
    }
}

/// Walks a schedule, yielding `(intended_send_unix_ns, datagram)` in order.
/// Allocates nothing per datagram.
#[derive(Clone, Debug)]
pub struct Generator {
    fleet: Arc<Fleet>,
    schedule: Schedule,
    next: u64,
    /// The UTC day the last datagram fell in: `[start, end)` ns and its number.
    day_start_ns: u64,
    day_end_ns: u64,
    day: u16,
    /// Values that did not fit the datagram and saturated (zero for every
    /// fleet [`Fleet::new`] accepts; reported, never silent).
    pub out_of_range: u64,
}

impl Generator {
    /// # Panics
    /// If the schedule's track count is not the fleet's (a programming error).
    pub fn new(fleet: Arc<Fleet>, schedule: Schedule) -> Self {
        assert_eq!(
            fleet.tracks(),
            schedule.tracks,
            "schedule made for another fleet"
        );
        Generator {
            fleet,
            schedule,
            next: 0,
            day_start_ns: 0,
            day_end_ns: 0,
            day: 0,
            out_of_range: 0,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Index of the next datagram.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Continue from datagram `i`.
    pub fn seek(&mut self, i: u64) {
        self.next = i.min(self.schedule.total);
    }

    /// Datagrams not yet yielded.
    pub fn remaining(&self) -> u64 {
        self.schedule.total - self.next
    }

    /// The frame of datagram `i`.
    #[inline]
    pub fn frame(&mut self, i: u64) -> Frame {
        let s = &self.schedule;
        let off = s.offset_ns(i);
        let t_ns = s.start_unix_ns + off;
        if !(self.day_start_ns..self.day_end_ns).contains(&t_ns) {
            let (day, _) = utc_day_ticks(t_ns);
            self.day = day;
            self.day_start_ns = t_ns - t_ns % NS_PER_DAY;
            self.day_end_ns = self.day_start_ns + NS_PER_DAY;
        }
        let ticks = ((t_ns - self.day_start_ns) / NS_PER_TICK) as u32;
        debug_assert!(ticks < 86_400 * TICKS_PER_S);
        let k = (i % u64::from(s.tracks)) as u32;
        let t_s = off as f64 / 1e9;
        self.fleet
            .frame(k, t_s, self.day, ticks, &mut self.out_of_range)
    }

    /// The next datagram into `out`; returns its intended send time.
    #[inline]
    pub fn next_into(&mut self, out: &mut [u8; DATAGRAM_LEN]) -> Option<u64> {
        if self.next >= self.schedule.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        *out = self.frame(i).encode();
        Some(self.schedule.intended_unix_ns(i))
    }

    /// Fill `out` with the next datagrams due by `until_unix_ns` (at most
    /// `out.len()`); returns how many.
    #[inline]
    pub fn fill_due(&mut self, until_unix_ns: u64, out: &mut [[u8; DATAGRAM_LEN]]) -> usize {
        let due = if until_unix_ns < self.schedule.start_unix_ns {
            0
        } else {
            self.schedule
                .due_by(until_unix_ns - self.schedule.start_unix_ns)
        };
        let n = (due.saturating_sub(self.next) as usize).min(out.len());
        for slot in &mut out[..n] {
            let i = self.next;
            self.next += 1;
            *slot = self.frame(i).encode();
        }
        n
    }

    /// Type of datagram `i` (for subjects).
    pub fn frame_type_of(&self, i: u64) -> FrameType {
        self.fleet
            .frame_type((i % u64::from(self.schedule.tracks)) as u32)
    }
}

impl Iterator for Generator {
    type Item = (u64, [u8; DATAGRAM_LEN]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let mut d = [0u8; DATAGRAM_LEN];
        self.next_into(&mut d).map(|t| (t, d))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining() as usize;
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_uniform_and_exact() {
        let s = Schedule::new(1_700_000_000_000_000_000, 100, 10.0, 2.0).unwrap();
        assert_eq!(s.total, 2_000);
        assert_eq!(s.offset_ns(0), 0);
        assert_eq!(s.offset_ns(1), 1_000_000); // 1000 datagrams/s
        assert_eq!(s.offset_ns(100), 100_000_000); // track 0's second update
        assert_eq!(s.due_by(0), 1);
        assert_eq!(s.due_by(999_999), 1);
        assert_eq!(s.due_by(1_000_000), 2);
        assert_eq!(s.due_by(u64::MAX / 4), 2_000);
        assert!((s.rate_per_s() - 1000.0).abs() < 1e-9);
        // Fractional rates, exact to the millihertz.
        let s = Schedule::new(0, 3, 0.5, 10.0).unwrap();
        assert_eq!(s.total, 15);
        assert_eq!(s.offset_ns(3), 2_000_000_000);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(matches!(
            Schedule::new(0, 1, 0.0, 1.0),
            Err(ScheduleError::Rate(_))
        ));
        assert!(matches!(
            Schedule::new(0, 1, 2000.0, 1.0),
            Err(ScheduleError::Rate(_))
        ));
        assert!(matches!(
            Schedule::new(0, 1, 10.0, -1.0),
            Err(ScheduleError::Duration(_))
        ));
        assert!(matches!(
            Schedule::new(0, 1, 1.0, 0.5),
            Err(ScheduleError::Empty { .. })
        ));
    }

    #[test]
    fn locate_inverts_the_stamping_across_midnight() {
        // Start 2 s before New Year's midnight UTC (2024-01-01T00:00:00Z is
        // 1704067200 s): the run stamps day 365, then day 1.
        let start = 1_704_067_198_000_000_000u64;
        for (tracks, rate) in [(7u32, 50.0), (1000, 10.0), (3, 1000.0)] {
            let s = Schedule::new(start, tracks, rate, 4.0).unwrap();
            for i in (0..s.total).step_by(7).chain([s.total - 1]) {
                let t = s.intended_unix_ns(i);
                let (day, ticks) = utc_day_ticks(t);
                let k = (i % u64::from(tracks)) as u32;
                assert_eq!(s.locate(k, day, ticks), Some(i), "i {i} tracks {tracks}");
                // Another track at the same stamp is some other datagram or none.
                assert_ne!(s.locate((k + 1) % tracks, day, ticks), Some(i));
            }
            let (day, ticks) = utc_day_ticks(start - 10_000_000_000);
            assert_eq!(s.locate(0, day, ticks), None, "before the run");
            assert_eq!(s.locate(tracks, 1, 0), None, "no such track");
        }
    }
}
