//! The open-loop pacer the benches' senders run on (`bench/ingest.rs`).
//! Tooling: the appliance's own replay pacing is `tspi::replay::pacer`.

use std::time::{Duration, Instant};

/// Open-loop schedule: datagram `i` is due at `start + i / rate`. The pacer
/// never slows down to hide that the sender fell behind: it reports the lag.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start: Instant,
    rate_per_s: f64,
    total: u64,
}

impl Pacer {
    pub fn new(start: Instant, rate_per_s: f64, total: u64) -> Self {
        assert!(rate_per_s > 0.0);
        Pacer {
            start,
            rate_per_s,
            total,
        }
    }

    /// Datagrams due by `now` (capped at the total).
    pub fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        ((elapsed * self.rate_per_s) as u64 + 1).min(self.total)
    }

    /// When datagram `i` is due.
    pub fn due_at(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate_per_s)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_schedule() {
        let t0 = Instant::now();
        let p = Pacer::new(t0, 1000.0, 5000);
        assert_eq!(p.due(t0), 1);
        assert_eq!(p.due(t0 + Duration::from_millis(10)), 11);
        assert_eq!(p.due(t0 + Duration::from_secs(100)), 5000);
        assert_eq!(p.due_at(1000), t0 + Duration::from_secs(1));
    }
}
