//! PURE. The one retry backoff: doubling from `initial` to `max`.
//!
//! Every retry loop of the appliance (publishing, the archive's database
//! writes and reconnects, stream set-up) waits by this type, so "how long
//! until the next try" has one meaning and one set of tests. It reads no
//! clock: callers sleep for what it returns.

use std::time::Duration;

/// A doubling backoff: `initial`, `2 × initial`, … capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `initial` is raised to `max` if it exceeds it (a programmer's
    /// mistake the configuration's validation already refuses).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        let initial = if initial.as_nanos() > max.as_nanos() {
            max
        } else {
            initial
        };
        Backoff { initial, max }
    }

    pub const fn initial(&self) -> Duration {
        self.initial
    }

    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The wait before retry number `attempt` (0: the first retry waits
    /// `initial`). Saturates at `max`; never overflows.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The wait before the next try of something already tried `attempts`
    /// times (1: `initial`; 0 counts as 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tspi::backoff::Backoff;
    /// let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    /// assert_eq!(b.after(1), Duration::from_millis(10));
    /// assert_eq!(b.after(2), Duration::from_millis(20));
    /// assert_eq!(b.after(4), Duration::from_millis(50));
    /// assert_eq!(b.after(u32::MAX), Duration::from_millis(50));
    /// ```
    pub fn after(&self, attempts: u32) -> Duration {
        self.delay(attempts.saturating_sub(1))
    }

    /// The wait after one of `current`: double it, at most `max`.
    pub fn next(&self, current: Duration) -> Duration {
        current.checked_mul(2).unwrap_or(self.max).min(self.max)
    }

    /// A running sequence of waits for one retry loop.
    pub fn start(&self) -> Retry {
        Retry {
            backoff: *self,
            attempt: 0,
        }
    }
}

/// The waits of one retry loop: [`Retry::next_delay`] after each failure,
/// [`Retry::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Retry {
    backoff: Backoff,
    attempt: u32,
}

impl Retry {
    /// The wait before the next try; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_initial_to_max() {
        let b = Backoff::new(50 * MS, 2000 * MS);
        let waits: Vec<_> = (0..8).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        let mut r = b.start();
        assert_eq!(r.next_delay(), 50 * MS);
        assert_eq!(r.next_delay(), 100 * MS);
        assert_eq!(r.attempts(), 2);
        r.reset();
        assert_eq!(r.next_delay(), 50 * MS);
        assert_eq!(b.next(50 * MS), 100 * MS);
        assert_eq!(b.next(1500 * MS), 2000 * MS);
    }

    #[test]
    fn initial_above_max_is_max() {
        let b = Backoff::new(10 * MS, 5 * MS);
        assert_eq!(b.delay(0), 5 * MS);
    }

    proptest! {
        #[test]
        fn never_overflows_never_exceeds_max_never_shrinks(
            initial_ns in any::<u64>(),
            max_ns in any::<u64>(),
            attempt in any::<u32>(),
        ) {
            let b = Backoff::new(Duration::from_nanos(initial_ns), Duration::from_nanos(max_ns));
            let d = b.delay(attempt);
            prop_assert!(d <= b.max());
            prop_assert!(d >= b.initial().min(b.max()));
            prop_assert!(b.delay(attempt.saturating_add(1)) >= d);
            prop_assert!(b.next(d) <= b.max());
            prop_assert!(b.next(d) >= d);
        }
    }
}
