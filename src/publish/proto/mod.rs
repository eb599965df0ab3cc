//! The publisher's protocol cores: pure state machines, no I/O, no clock.
//!
//! Like quinn's `quinn-proto`, nothing here opens a socket, spawns a task or
//! reads a clock. The caller passes the time in (`now`, plain nanoseconds on
//! a monotonic clock of its choosing: the driver uses
//! [`crate::clock::mono_ns`], the tests a counter they advance), feeds in
//! what happened (a frame taken from a ring, a server reply, whether a
//! publish could be sent, the stream's last sequence), and asks what to do
//! next:
//!
//! - [`fast::FastBatcher::poll_transmit`]: the next message to publish (a
//!   frame with its reply subject, or an empty commit / ping);
//! - [`fast::FastBatcher::poll_acked`]: frames JetStream has acknowledged,
//!   with the times to measure their latency;
//! - [`fast::FastBatcher::poll_event`]: batches committed or ended, a
//!   question for the stream, the fall back to pipelined publishing, the end;
//! - [`fast::FastBatcher::poll_timeout`]: when to call again if nothing
//!   arrives.
//!
//! [`pipelined::Pipeline`] has the same shape for the pipelined mode (one
//! JetStream publish per frame, acks named by a [`pipelined::Token`]).
//!
//! The driver (`publish/driver.rs`) owns the NATS client, the receive
//! rings and the clock, and only shuttles between the two.
//!
//! **Invariants** (checked against a simulated JetStream, `sim.rs`, by the
//! property tests in `tests.rs`, at every step):
//! - every frame taken is acknowledged, failed, handed back (on fall-back),
//!   in flight (published in the open batch, unacknowledged) or queued
//!   (waiting to be published again):
//!   `taken = acked + failed + handed_back + in_flight + queued`;
//! - a frame is handed back once: acknowledged, counted failed at the drain
//!   timeout, or returned for the pipelined publisher on fall-back;
//! - a retried frame is the same frame (same `Nats-Msg-Id`, same body), so
//!   the stream's duplicate window makes retries exactly-once;
//! - nothing is acknowledged that the server did not confirm (a flow ack
//!   covering it, or the batch's commit);
//! - at most `flow × outstanding` messages of a batch are unacknowledged.
//!
//! Purity is enforced by a test below (`purity::proto_is_pure`): no file of
//! this module may name the socket module, the async runtime, the NATS or
//! PostgreSQL client crates or the future-combinator crates, or read a
//! clock.

pub mod fast;
pub mod flow;
pub mod pipelined;
mod settle;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
pub mod wire;

use std::time::Duration;

/// Nanoseconds on the caller's monotonic clock (any origin; only
/// differences matter). Plain data: the state machines never read a clock.
pub type Nanos = u64;

/// A duration as [`Nanos`], saturating (a duration too long for `u64`
/// nanoseconds, about 584 years, means "never").
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Retry backoff: the crate's one type ([`crate::backoff`]).
pub use crate::backoff::Backoff;
