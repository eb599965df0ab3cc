//! The process's clocks, kept out of the pure modules: monotonic
//! nanoseconds for latency measurement, comparable across threads of one
//! process, and the wall clock as a [`RecvTime`] (whose type and arithmetic
//! are pure, in [`crate::message`]).

use crate::message::RecvTime;
use std::sync::OnceLock;
use std::time::Instant;

impl RecvTime {
    /// The current wall-clock time (the one clock read of the receive path,
    /// once per batch). Lives here, not in `message`, so that the contract
    /// module reads no clock.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        RecvTime::from_unix_ns(d.as_nanos() as u64)
    }
}

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
