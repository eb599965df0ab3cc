//! Fast-batch flow control (ADR-50): the client's window, the flow a batch
//! opens with, and the duplicate count a commit implies. Pure arithmetic.

use super::wire::Op;

/// The server caps the requested flow here.
pub const FLOW_MAX: u16 = 500;

/// The client's side of flow control for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Flow the batch was opened with (written into every reply subject:
    /// replicas that missed the start read it from there).
    pub flow_requested: u16,
    /// Flow the server dictates now (never above `flow_requested`).
    pub flow: u16,
    /// Flow-ack periods that may be outstanding (ADR-50: 2; 1 deadlocks
    /// against nats-server 2.15: the client stalls one message before the
    /// server's first ack).
    pub outstanding: u16,
    /// Highest sequence sent.
    pub sent: u64,
    /// Highest sequence acknowledged.
    pub acked: u64,
    /// The server confirmed the batch (first flow ack).
    pub confirmed: bool,
}

impl Window {
    pub fn new(flow: u16, outstanding: u16) -> Self {
        let flow = flow.clamp(1, FLOW_MAX);
        Window {
            flow_requested: flow,
            flow,
            outstanding: outstanding.max(1),
            sent: 0,
            acked: 0,
            confirmed: false,
        }
    }

    /// Must the next message wait for an ack? (ADR-50's
    /// `last_ack + flow × outstanding <= next_seq`.)
    pub fn stalled(&self) -> bool {
        self.acked + u64::from(self.flow) * u64::from(self.outstanding) <= self.sent + 1
    }

    /// Take the next sequence to send and its operation.
    pub fn advance(&mut self) -> (u64, Op) {
        self.sent += 1;
        (
            self.sent,
            if self.sent == 1 {
                Op::Start
            } else {
                Op::Append
            },
        )
    }

    /// Apply a flow ack; returns how many more messages it covers. A later
    /// ack covers everything an earlier, lost one would have.
    pub fn on_ack(&mut self, seq: u64, flow: u16) -> u64 {
        self.confirmed = true;
        self.flow = flow.clamp(1, self.flow_requested);
        let seq = seq.min(self.sent);
        let newly = seq.saturating_sub(self.acked);
        self.acked = self.acked.max(seq);
        newly
    }
}

/// The flow to open a batch with. A flow ack every `flow` messages sets
/// both the ack latency (a message waits for its flow period to fill) and
/// the throughput (at most `flow × outstanding` messages per round trip).
/// So: enough messages for `ack_interval` at the recent `rate`, or, if
/// more, enough to clear what waits in the rings within a few round trips
/// (`backlog / (4 × outstanding)`), within `1..=flow_max`. `ack_interval`
/// zero means always `flow_max`.
///
/// ```
/// use std::time::Duration;
/// use tspi::publish::proto::flow::choose_flow;
/// let us = Duration::from_micros;
/// assert_eq!(choose_flow(20_000.0, 0, 2, us(250), 500), 5);
/// assert_eq!(choose_flow(100_000.0, 0, 2, us(250), 500), 25);
/// assert_eq!(choose_flow(100_000.0, 10_000, 2, us(250), 500), 500);
/// assert_eq!(choose_flow(20_000.0, 40, 2, us(250), 500), 5);
/// assert_eq!(choose_flow(0.0, 0, 2, us(250), 500), 1);
/// assert_eq!(choose_flow(20_000.0, 0, 2, Duration::ZERO, 100), 100);
/// ```
pub fn choose_flow(
    rate_per_s: f64,
    backlog: u64,
    outstanding: u16,
    ack_interval: std::time::Duration,
    flow_max: u16,
) -> u16 {
    let flow_max = flow_max.clamp(1, FLOW_MAX);
    if ack_interval.is_zero() {
        return flow_max;
    }
    let by_rate = (rate_per_s.max(0.0) * ack_interval.as_secs_f64()).ceil();
    let by_backlog = (backlog as f64 / (4.0 * f64::from(outstanding.max(1)))).ceil();
    by_rate.max(by_backlog).clamp(1.0, f64::from(flow_max)) as u16
}

/// A batch younger than this is never [`outgrown`].
pub const OUTGROWN_AGE_MIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Should a batch whose window is full be committed early so the next one
/// opens with a larger flow? Yes when the rings hold more than two full
/// windows and the flow can still grow (and the batch is not brand new).
pub fn outgrown(w: &Window, backlog: u64, flow_max: u16, age: std::time::Duration) -> bool {
    w.stalled()
        && w.flow_requested < flow_max.min(FLOW_MAX)
        && backlog >= 2 * u64::from(w.flow_requested) * u64::from(w.outstanding)
        && age >= OUTGROWN_AGE_MIN
}

/// Duplicates inside a committed batch, derived from how far the stream's
/// last sequence moved (`before` → `stream_seq`) against the batch's
/// `count` (the server drops duplicates in a fast batch silently: the
/// commit's `count` includes them and nothing says which). Exact when this
/// publisher is the stream's only writer during the batch; other writers
/// make it an undercount, never an overcount.
///
/// nats-server 2.15 commits a batch whose last message was a duplicate with
/// stream sequence 0: the caller then asks the stream for its last
/// sequence and passes that.
pub fn duplicates_in_batch(before: u64, stream_seq: u64, count: u64) -> u64 {
    if stream_seq < before {
        // The stream was purged or recreated under us: no information.
        return 0;
    }
    count.saturating_sub(stream_seq - before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_follows_adr50() {
        let mut w = Window::new(10, 2);
        // Twenty may be outstanding: the 20th waits.
        for i in 1..=19 {
            assert!(!w.stalled(), "message {i}");
            assert_eq!(
                w.advance(),
                (i, if i == 1 { Op::Start } else { Op::Append })
            );
        }
        assert!(w.stalled());
        assert_eq!(w.on_ack(10, 10), 10);
        assert!(!w.stalled());
        // A lost ack is covered by the next one.
        for _ in 20..=29 {
            w.advance();
        }
        assert!(w.stalled());
        assert_eq!(w.on_ack(29, 10), 19);
        // The server may lower the flow, never raise it above the request.
        assert_eq!(w.on_ack(29, 500), 0);
        assert_eq!(w.flow, 10);
        w.on_ack(29, 4);
        assert_eq!(w.flow, 4);
        // An ack can never cover more than was sent.
        assert_eq!(w.on_ack(1_000, 4), 0);
        assert_eq!(w.acked, 29);
    }

    #[test]
    fn flow_is_clamped_to_what_the_server_accepts() {
        assert_eq!(Window::new(0, 2).flow, 1);
        assert_eq!(Window::new(9_999, 2).flow, FLOW_MAX);
        assert_eq!(Window::new(5, 0).outstanding, 1);
    }

    #[test]
    fn flow_follows_rate_and_backlog() {
        let us = std::time::Duration::from_micros;
        // Monotone in rate and backlog, always within 1..=max.
        let mut last = 0;
        for rate in [0.0, 1.0, 1e3, 1e4, 5e4, 1e5, 1e6, 1e9] {
            let f = choose_flow(rate, 0, 2, us(250), 400);
            assert!((1..=400).contains(&f) && f >= last, "{rate}: {f}");
            last = f;
        }
        assert_eq!(last, 400);
        assert_eq!(choose_flow(1e4, 0, 2, us(250), 9_999), 3);
        // 3 by rate, 1000 by backlog: capped at the server's 500.
        assert_eq!(choose_flow(1e4, 8_000, 2, us(250), 9_999), 500);
        assert_eq!(choose_flow(1e4, 800, 2, us(250), 9_999), 100);
        assert_eq!(choose_flow(1e5, 800, 2, us(250), 9_999), 100);
        assert_eq!(choose_flow(1e6, 800, 2, us(250), 9_999), 250);
        assert_eq!(choose_flow(f64::NAN, 0, 2, us(250), 100), 1);
        assert_eq!(choose_flow(-5.0, 0, 2, us(250), 100), 1);
    }

    #[test]
    fn a_full_window_with_a_backlog_is_outgrown() {
        let ms = std::time::Duration::from_millis;
        let mut w = Window::new(10, 2);
        while !w.stalled() {
            w.advance();
        }
        assert!(outgrown(&w, 40, 500, ms(20)));
        assert!(!outgrown(&w, 39, 500, ms(20)), "backlog below two windows");
        assert!(!outgrown(&w, 40, 10, ms(20)), "flow cannot grow");
        assert!(!outgrown(&w, 40, 500, ms(19)), "too young");
        w.on_ack(10, 10);
        assert!(!outgrown(&w, 40, 500, ms(20)), "not stalled");
    }

    #[test]
    fn duplicates_from_sequence_advance() {
        assert_eq!(duplicates_in_batch(100, 200, 100), 0);
        assert_eq!(duplicates_in_batch(100, 190, 100), 10);
        assert_eq!(duplicates_in_batch(100, 100, 100), 100);
        // All duplicates: the stream did not move.
        assert_eq!(duplicates_in_batch(800, 800, 40), 40);
        // Another writer moved the stream further: undercount, not panic.
        assert_eq!(duplicates_in_batch(100, 400, 100), 0);
        assert_eq!(duplicates_in_batch(500, 100, 10), 0);
    }

    proptest! {
        /// Whatever order and spacing acks come in, the window never lets
        /// more than flow × outstanding be unacknowledged, and the covered
        /// counts add up to the highest ack.
        #[test]
        fn window_bounds_unacked(
            flow in 1u16..600,
            outstanding in 1u16..4,
            acks in proptest::collection::vec((0u64..5_000, 1u16..600), 0..200),
        ) {
            let mut w = Window::new(flow, outstanding);
            let bound = u64::from(w.flow_requested) * u64::from(w.outstanding);
            let mut covered = 0;
            for (seq, f) in acks {
                while !w.stalled() {
                    w.advance();
                    prop_assert!(w.sent - w.acked < bound);
                }
                covered += w.on_ack(seq, f);
                prop_assert!(w.acked <= w.sent);
            }
            prop_assert_eq!(covered, w.acked);
        }
    }
}
