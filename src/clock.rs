//! Monotonic nanoseconds for latency measurement, comparable across threads
//! of one process (the wall clock is [`crate::message::RecvTime`]).

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since this process first asked; never goes backwards.
#[inline]
pub fn mono_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_goes_backwards() {
        let a = super::mono_ns();
        let b = super::mono_ns();
        assert!(b >= a);
    }
}
