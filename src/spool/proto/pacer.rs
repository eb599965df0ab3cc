//! The drain's pace: a token bucket, time passed in.
//!
//! `rate_per_s` tokens accrue per second (exactly: the remainder of each
//! refill is carried), up to `burst`; a frame handed to the publisher from
//! the spool costs one. Rate 0 means unpaced.

/// A token bucket.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate_per_s: u64,
    burst: u64,
    tokens: u64,
    /// Nanoseconds × rate not yet worth a whole token.
    carry: u128,
    last_ns: Option<u64>,
}

impl Pacer {
    /// `burst`: the most tokens saved up (at least 1).
    pub fn new(rate_per_s: u64, burst: u64) -> Self {
        Pacer {
            rate_per_s,
            burst: burst.max(1),
            tokens: 0,
            carry: 0,
            last_ns: None,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        let Some(last) = self.last_ns else {
            // The first look starts with a full bucket.
            self.last_ns = Some(now_ns);
            self.tokens = self.burst;
            return;
        };
        let elapsed = now_ns.saturating_sub(last);
        self.last_ns = Some(now_ns.max(last));
        let units = self.carry + u128::from(elapsed) * u128::from(self.rate_per_s);
        let whole = units / 1_000_000_000;
        self.carry = units % 1_000_000_000;
        let tokens = u128::from(self.tokens) + whole;
        if tokens >= u128::from(self.burst) {
            self.tokens = self.burst;
            self.carry = 0;
        } else {
            self.tokens = tokens as u64;
        }
    }

    /// Take up to `want` tokens at `now_ns`; returns how many were taken.
    pub fn take(&mut self, now_ns: u64, want: u64) -> u64 {
        if self.rate_per_s == 0 {
            return want;
        }
        self.refill(now_ns);
        let got = want.min(self.tokens);
        self.tokens -= got;
        got
    }

    /// Nanoseconds from `now_ns` until a token is due (0: one is there now;
    /// `None`: unpaced).
    pub fn wait_ns(&self, now_ns: u64) -> Option<u64> {
        if self.rate_per_s == 0 {
            return None;
        }
        if self.tokens > 0 || self.last_ns.is_none() {
            return Some(0);
        }
        let need = 1_000_000_000u128.saturating_sub(self.carry);
        let ns = need.div_ceil(u128::from(self.rate_per_s));
        let since = u128::from(now_ns.saturating_sub(self.last_ns.unwrap_or(now_ns)));
        Some(ns.saturating_sub(since).min(u128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unpaced_gives_everything() {
        let mut p = Pacer::new(0, 1);
        assert_eq!(p.take(0, 1_000_000), 1_000_000);
        assert_eq!(p.wait_ns(0), None);
    }

    #[test]
    fn starts_full_then_refills_at_the_rate() {
        let mut p = Pacer::new(1000, 100);
        assert_eq!(p.take(0, 500), 100);
        assert_eq!(p.take(0, 1), 0);
        assert_eq!(p.wait_ns(0), Some(1_000_000));
        assert_eq!(p.take(500_000, 10), 0);
        assert_eq!(p.take(1_000_000, 10), 1);
        assert_eq!(p.take(11_000_000, 100), 10);
        // Never more than the burst, however long it waited.
        assert_eq!(p.take(10_000_000_000, 1000), 100);
    }

    proptest! {
        /// Over any schedule of looks, what is taken never exceeds the
        /// burst plus the rate times the time passed, and a greedy taker
        /// gets all of it but the fraction of a token.
        #[test]
        fn bounded_and_exact(rate in 1u64..200_000, burst in 1u64..10_000,
                             steps in proptest::collection::vec(0u64..5_000_000, 1..200)) {
            let mut p = Pacer::new(rate, burst);
            let mut now = 0u64;
            let mut taken = p.take(now, u64::MAX);
            prop_assert_eq!(taken, burst);
            for dt in steps {
                now += dt;
                taken += p.take(now, u64::MAX);
                let allowed = u128::from(burst) + u128::from(now) * u128::from(rate) / 1_000_000_000;
                prop_assert!(u128::from(taken) <= allowed, "{} > {}", taken, allowed);
            }
        }

        /// Taken one look at a time (never saving up to the burst), the
        /// count is exactly the burst plus floor(rate × time).
        #[test]
        fn no_token_lost_to_rounding(rate in 1u64..100_000, steps in proptest::collection::vec(1u64..1_000_000, 1..300)) {
            let burst = u64::MAX / 4;
            let mut p = Pacer::new(rate, burst);
            let mut now = 0u64;
            p.take(now, burst);
            let mut taken = 0u64;
            for dt in steps {
                now += dt;
                taken += p.take(now, u64::MAX);
            }
            prop_assert_eq!(u128::from(taken), u128::from(now) * u128::from(rate) / 1_000_000_000);
        }
    }
}
