//! The pipelined publisher's accounting as a state machine: one JetStream
//! publish per frame, up to `acks_in_flight_max` acks outstanding, a failed
//! send or ack retried with the same frame after a doubling backoff.
//!
//! The driver ([`crate::publish`], `run_pipelined`) owns the client and one
//! ack future per publish; each future carries the [`Token`] this machine
//! handed out with the frame, and its result comes back through
//! [`Pipeline::handle_ack`]. The frames themselves stay here: in flight (by
//! token) or queued for a retry, never in the driver.
//!
//! **Invariant:** `taken + adopted = acked + failed + in_flight + queued`
//! after every call (`adopted`: frames the fast-batch machine handed back on
//! fall-back).

use super::fast::{Acked, Queued};
use super::{Backoff, Nanos, nanos};
use std::collections::VecDeque;
use std::time::Duration;

/// Names one frame in flight; handed out with its publish, handed back
/// with its ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(usize);

/// A publish to make now.
#[derive(Debug)]
pub struct Transmit<'a, F> {
    pub token: Token,
    pub frame: &'a F,
    /// The frame's first publish (for the receive-to-publish latency).
    pub first_attempt: bool,
}

/// What happened, for the driver to act on or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A publish failed (not sent, or its ack an error); the frame is
    /// published again, same id, after a backoff.
    Retrying { attempts: u32, reason: String },
    /// The drain timeout passed: `failed` frames (ring frames included) are
    /// given up.
    DrainTimedOut { failed: u64 },
    /// Input closed and everything taken is accounted for.
    Done,
}

/// The pipelined machine's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Frames taken ([`Pipeline::push`], plus ring frames given up at the
    /// drain timeout).
    pub taken: u64,
    /// Frames handed over at start (by the fast-batch machine).
    pub adopted: u64,
    /// Publishes sent, retries included.
    pub published: u64,
    /// Frames acknowledged (duplicates included).
    pub acked: u64,
    /// Acks that said `duplicate: true`.
    pub duplicate: u64,
    /// Publishes repeated after a failure.
    pub retried: u64,
    /// Frames given up at the drain timeout.
    pub failed: u64,
}

#[derive(Debug)]
pub(super) struct Slot<F> {
    pub(super) frame: F,
    pub(super) attempts: u32,
    pub(super) sent: Nanos,
}

/// The pipelined publisher, without I/O. See the module docs.
#[derive(Debug)]
pub struct Pipeline<F> {
    backoff: Backoff,
    drain_timeout: Nanos,
    max: usize,
    /// Frames in flight, by token; `free` lists the empty slots.
    in_flight: Vec<Option<Slot<F>>>,
    free: Vec<usize>,
    in_flight_len: usize,
    pub(super) retries: VecDeque<(Nanos, Slot<F>)>,
    offered: Option<Slot<F>>,
    /// The publish handed out whose send result is awaited.
    sending: Option<Token>,
    pub(super) acked: VecDeque<Acked<F>>,
    /// Frames given up at the drain deadline ([`Self::take_given_up`]).
    given_up: Vec<Queued<F>>,
    events: VecDeque<Event>,
    drain_deadline: Option<Nanos>,
    done: bool,
    pub(super) counts: PipelineCounts,
}

impl<F> Pipeline<F> {
    /// At most `acks_in_flight_max` frames outstanding (in flight or
    /// waiting to retry); `adopted` frames (handed back by the fast-batch
    /// machine) are published first, each when due.
    pub fn new(
        acks_in_flight_max: usize,
        backoff: Backoff,
        drain_timeout: Duration,
        adopted: impl IntoIterator<Item = Queued<F>>,
    ) -> Self {
        assert!(
            acks_in_flight_max > 0,
            "acks_in_flight_max must be positive"
        );
        let retries: VecDeque<_> = adopted
            .into_iter()
            .map(|q| {
                (
                    q.due,
                    Slot {
                        frame: q.frame,
                        attempts: q.attempts,
                        sent: 0,
                    },
                )
            })
            .collect();
        let counts = PipelineCounts {
            adopted: retries.len() as u64,
            ..PipelineCounts::default()
        };
        Pipeline {
            backoff,
            drain_timeout: nanos(drain_timeout),
            max: acks_in_flight_max,
            in_flight: Vec::with_capacity(acks_in_flight_max),
            free: Vec::with_capacity(acks_in_flight_max),
            in_flight_len: 0,
            retries,
            offered: None,
            sending: None,
            acked: VecDeque::new(),
            given_up: Vec::new(),
            events: VecDeque::new(),
            drain_deadline: None,
            done: false,
            counts,
        }
    }

    pub fn counts(&self) -> PipelineCounts {
        self.counts
    }

    /// Publishes awaiting an ack.
    pub fn in_flight(&self) -> u64 {
        self.in_flight_len as u64
    }

    /// Frames taken and waiting to be published (again).
    pub fn queued(&self) -> u64 {
        self.retries.len() as u64 + u64::from(self.offered.is_some())
    }

    /// See the module's invariant.
    pub fn balanced(&self) -> bool {
        let c = &self.counts;
        c.taken + c.adopted == c.acked + c.failed + self.in_flight() + self.queued()
    }

    /// Is there room for one more frame? (Outstanding = in flight + waiting
    /// to retry, below `acks_in_flight_max`.)
    pub fn wants_frame(&self) -> bool {
        !self.done
            && self.offered.is_none()
            && self.sending.is_none()
            && self.in_flight_len + self.retries.len() < self.max
    }

    /// Take a frame. Call only when [`Self::wants_frame`].
    pub fn push(&mut self, frame: F) {
        assert!(self.wants_frame(), "push without wants_frame");
        self.counts.taken += 1;
        self.offered = Some(Slot {
            frame,
            attempts: 0,
            sent: 0,
        });
    }

    pub fn close_input(&mut self, now: Nanos) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(now.saturating_add(self.drain_timeout));
        }
    }

    /// The next publish: a due retry (oldest first), else the frame pushed.
    /// Answer with [`Self::handle_send_result`] before polling again.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Transmit<'_, F>> {
        assert!(self.sending.is_none(), "poll_transmit before send result");
        if self.done || self.in_flight_len >= self.max {
            return None;
        }
        let slot = match self.retries.iter().position(|(due, _)| *due <= now) {
            Some(i) => self.retries.remove(i).map(|(_, s)| s),
            None => self.offered.take(),
        }?;
        let mut slot = slot;
        slot.attempts += 1;
        slot.sent = now;
        let first_attempt = slot.attempts == 1;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.in_flight.push(None);
                self.in_flight.len() - 1
            }
        };
        self.in_flight_len += 1;
        let token = Token(i);
        self.sending = Some(token);
        let frame = &self.in_flight[i].insert(slot).frame;
        Some(Transmit {
            token,
            frame,
            first_attempt,
        })
    }

    /// Whether the publish handed out could be sent (`Err`: the client's
    /// error; the frame is retried).
    pub fn handle_send_result(&mut self, now: Nanos, result: Result<(), String>) {
        let token = self
            .sending
            .take()
            .expect("a send result without a transmit");
        match result {
            Ok(()) => self.counts.published += 1,
            Err(e) => self.retry(now, token, e),
        }
    }

    /// The ack of the publish `token`: `Ok(duplicate)`, or the error.
    pub fn handle_ack(&mut self, now: Nanos, token: Token, result: Result<bool, String>) {
        match result {
            Ok(duplicate) => {
                let s = self.release(token);
                self.counts.acked += 1;
                self.counts.duplicate += u64::from(duplicate);
                self.acked.push_back(Acked {
                    frame: s.frame,
                    sent: s.sent,
                    at: now,
                });
            }
            Err(e) => self.retry(now, token, e),
        }
    }

    /// The drain: done, or given up at its deadline. `ring_frames`: frames
    /// waiting in the rings now.
    pub fn handle_timeout(&mut self, now: Nanos, ring_frames: u64) {
        let Some(deadline) = self.drain_deadline else {
            return;
        };
        if self.done {
            return;
        }
        if self.sending.is_some() {
            // A send the client has not finished (the server stopped
            // reading) waits, except past the drain deadline: then it is
            // given up with the rest and the driver drops it.
            if now >= deadline {
                self.sending = None;
                self.give_up(ring_frames);
            }
            return;
        }
        if ring_frames == 0 && self.in_flight_len == 0 && self.queued() == 0 {
            self.done = true;
            self.events.push_back(Event::Done);
        } else if now >= deadline {
            self.give_up(ring_frames);
        }
    }

    /// The drain deadline has passed: everything in hand and in the rings
    /// is counted failed, and the machine is done.
    fn give_up(&mut self, ring_frames: u64) {
        let failed = self.in_flight() + self.queued() + ring_frames;
        let in_flight = self.in_flight.drain(..).flatten().map(|s| (0, s));
        let retries = self.retries.drain(..);
        let offered = self.offered.take().map(|s| (0, s));
        self.given_up.extend(
            in_flight
                .chain(retries)
                .chain(offered)
                .map(|(due, s)| Queued {
                    due,
                    attempts: s.attempts,
                    frame: s.frame,
                }),
        );
        self.free.clear();
        self.in_flight_len = 0;
        self.counts.failed += failed;
        // Ring frames were never taken: count them so taken = acked +
        // failed holds.
        self.counts.taken += ring_frames;
        self.done = true;
        self.events.push_back(Event::DrainTimedOut { failed });
        self.events.push_back(Event::Done);
    }

    /// When the drain ends whatever happens: set by
    /// [`Self::close_input`].
    pub fn drain_deadline(&self) -> Option<Nanos> {
        self.drain_deadline
    }

    /// Finished (drained or timed out): a send still awaited is to be
    /// dropped, its result not handed in.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The earliest due retry or the drain deadline.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        if self.done {
            return None;
        }
        let retry = self.retries.iter().map(|(due, _)| *due).min();
        [retry, self.drain_deadline].into_iter().flatten().min()
    }

    pub fn poll_acked(&mut self) -> Option<Acked<F>> {
        self.acked.pop_front()
    }

    /// The frames counted failed at the drain deadline (not ring frames):
    /// `attempts` > 0 were published without an acknowledgement seen.
    pub fn take_given_up(&mut self) -> Vec<Queued<F>> {
        std::mem::take(&mut self.given_up)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn release(&mut self, token: Token) -> Slot<F> {
        let s = self.in_flight[token.0]
            .take()
            .expect("an ack for a publish not in flight");
        self.free.push(token.0);
        self.in_flight_len -= 1;
        s
    }

    fn retry(&mut self, now: Nanos, token: Token, reason: String) {
        let s = self.release(token);
        self.counts.retried += 1;
        let due = now.saturating_add(nanos(self.backoff.after(s.attempts)));
        self.events.push_back(Event::Retrying {
            attempts: s.attempts,
            reason,
        });
        self.retries.push_back((due, s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const MS: Nanos = 1_000_000;

    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Take this many frames (as room allows) and publish.
        Take(u8),
        /// The send of the next publish fails.
        SendFails,
        /// Answer the `n`-th outstanding ack (mod), `Ok` or an error.
        Ack(u8, bool),
        /// Time passes.
        Wait(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..20u8).prop_map(Step::Take),
            Just(Step::SendFails),
            (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(n, ok)| Step::Ack(n, ok)),
            (1..300u16).prop_map(Step::Wait),
        ]
    }

    /// The server goes away with frames in hand and in the rings: acks
    /// never come, and a send may never return (the client's buffer is
    /// full). The drain ends by its deadline, whatever is not acknowledged
    /// counted failed (rings included), the account balanced throughout.
    #[test]
    fn drain_with_the_server_gone_ends_by_the_deadline() {
        proptest!(|(max in 1..40usize, frames in 0..200u64, ring in 0..20_000u64,
                    acked_first in 0..50u64, hang_after in prop::option::of(0..40u32),
                    drain_ms in 1..3_000u64, tick_ms in 1..60u64)| {
            let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
            let mut m = Pipeline::new(max, backoff, Duration::from_millis(drain_ms), []);
            let total = frames + ring;
            let (mut now, mut next, mut sends) = (0, 0u64, 0u32);
            let mut hanging = false;
            let mut acked_ids = Vec::new();
            // The server answers the first `acked_first` publishes, then is gone.
            let mut answered = 0u64;
            m.close_input(now);
            let deadline = m.drain_deadline().expect("closed");
            loop {
                m.handle_timeout(now, total - next);
                if m.is_done() {
                    hanging = false;
                }
                let mut done = false;
                while let Some(e) = m.poll_event() {
                    done |= e == Event::Done;
                }
                if done {
                    break;
                }
                while !hanging {
                    if m.wants_frame() && next < total {
                        m.push(next);
                        next += 1;
                    }
                    let Some(t) = m.poll_transmit(now) else { break };
                    let token = t.token;
                    if hang_after.is_some_and(|k| sends >= k) {
                        hanging = true;
                    } else {
                        sends += 1;
                        m.handle_send_result(now, Ok(()));
                        if answered < acked_first {
                            answered += 1;
                            m.handle_ack(now, token, Ok(false));
                        }
                    }
                }
                while let Some(a) = m.poll_acked() {
                    acked_ids.push(a.frame);
                }
                prop_assert!(m.balanced(), "{:?}", m.counts());
                now += tick_ms * MS;
                prop_assert!(now <= deadline + 2 * tick_ms * MS, "not done by the deadline");
            }
            let c = m.counts();
            prop_assert_eq!(c.acked + c.failed, total, "{:?}", c);
            // Every frame once: acked, given up (for the spool), or never
            // taken from the rings.
            let mut all = acked_ids;
            all.extend(m.take_given_up().into_iter().map(|q| q.frame));
            all.extend(next..total);
            all.sort_unstable();
            prop_assert_eq!(all, (0..total).collect::<Vec<_>>());
            prop_assert_eq!(c.taken, total);
        });
    }

    /// Publishes fail, acks come in any order or as errors: the account
    /// balances at every step; after a drain every frame is acked exactly
    /// once and a retried frame is always the same frame.
    #[test]
    fn any_order_of_acks_and_failures_balances() {
        proptest!(|(max in 1..40usize, steps in prop::collection::vec(step(), 0..200), adopted in 0..10u64)| {
            let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
            let mut m = Pipeline::new(max, backoff, Duration::from_secs(3_600),
                (0..adopted).map(|i| Queued { due: 0, attempts: 1, frame: 1_000_000 + i }));
            let mut now = 0;
            let mut next = 0u64;
            let mut pending: Vec<(Token, u64)> = Vec::new();
            let mut acked: HashSet<u64> = HashSet::new();
            let mut fail_next = false;
            let publish = |m: &mut Pipeline<u64>, now, pending: &mut Vec<(Token, u64)>, fail: &mut bool| {
                while let Some(t) = m.poll_transmit(now) {
                    let (token, frame) = (t.token, *t.frame);
                    if std::mem::take(fail) {
                        m.handle_send_result(now, Err("down".into()));
                    } else {
                        m.handle_send_result(now, Ok(()));
                        pending.push((token, frame));
                    }
                }
            };
            let check = |m: &mut Pipeline<u64>, acked: &mut HashSet<u64>| {
                assert!(m.balanced(), "{:?}", m.counts());
                while let Some(a) = m.poll_acked() {
                    assert!(acked.insert(a.frame), "acked twice: {}", a.frame);
                }
            };
            for s in steps {
                match s {
                    Step::Take(n) => {
                        for _ in 0..n {
                            if !m.wants_frame() { break; }
                            m.push(next);
                            next += 1;
                            publish(&mut m, now, &mut pending, &mut fail_next);
                        }
                    }
                    Step::SendFails => fail_next = true,
                    Step::Ack(i, ok) => {
                        if !pending.is_empty() {
                            let (token, _) = pending.swap_remove(usize::from(i) % pending.len());
                            let r = if ok { Ok(i % 7 == 0) } else { Err("ack timeout".into()) };
                            m.handle_ack(now, token, r);
                        }
                    }
                    Step::Wait(ms) => now += u64::from(ms) * MS,
                }
                publish(&mut m, now, &mut pending, &mut fail_next);
                check(&mut m, &mut acked);
                prop_assert!(m.in_flight() as usize + m.retries.len() <= max.max(adopted as usize));
            }
            // Drain: the server answers everything from now on.
            m.close_input(now);
            fail_next = false;
            for _ in 0..10_000 {
                publish(&mut m, now, &mut pending, &mut fail_next);
                for (token, _) in pending.drain(..) {
                    m.handle_ack(now, token, Ok(false));
                }
                check(&mut m, &mut acked);
                m.handle_timeout(now, 0);
                if m.poll_event().into_iter().chain(std::iter::from_fn(|| m.poll_event())).any(|e| e == Event::Done) {
                    break;
                }
                now = m.poll_timeout().unwrap_or(now).max(now + MS);
            }
            let c = m.counts();
            prop_assert_eq!(c.failed, 0);
            prop_assert_eq!(c.acked, next + adopted);
            let want: HashSet<u64> = (0..next).chain((0..adopted).map(|i| 1_000_000 + i)).collect();
            prop_assert_eq!(acked, want);
        });
    }
}
