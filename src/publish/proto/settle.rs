//! Frames in doubt: published at least once, no acknowledgement seen,
//! waiting to be published again. After an outage longer than the
//! stream's duplicate window, publishing them again could store a second
//! copy, so the driver asks the stream which of them it holds and settles
//! those here: counted acknowledged (and duplicate), never published again.
//! The rest are published again as before.
//!
//! Both machines keep their frames waiting for a retry in `retries`; only
//! those (never a frame in flight in a batch) are settled.

use super::Nanos;
use super::fast::{Acked, FastBatcher, Frame};
use super::pipelined::Pipeline;

macro_rules! settle_impl {
    ($machine:ident, $($bound:tt)*) => {
        impl<F: $($bound)*> $machine<F> {
            /// The frames in doubt now (waiting for a retry, published before).
            pub fn in_doubt(&self) -> impl Iterator<Item = &F> + '_ {
                self.retries
                    .iter()
                    .filter(|(_, s)| s.attempts > 0)
                    .map(|(_, s)| &s.frame)
            }

            /// Settle the frames in doubt that `stored` says the stream
            /// holds: each counted acknowledged and duplicate (and handed
            /// out by `poll_acked`), removed from the retries. Returns how
            /// many.
            pub fn settle_stored(&mut self, now: Nanos, mut stored: impl FnMut(&F) -> bool) -> u64 {
                let mut settled = 0;
                let mut keep = std::collections::VecDeque::with_capacity(self.retries.len());
                for (due, s) in self.retries.drain(..) {
                    if s.attempts > 0 && stored(&s.frame) {
                        settled += 1;
                        self.acked.push_back(Acked {
                            frame: s.frame,
                            sent: s.sent,
                            at: now,
                        });
                    } else {
                        keep.push_back((due, s));
                    }
                }
                self.retries = keep;
                self.counts.acked += settled;
                self.counts.duplicate += settled;
                settled
            }
        }
    };
}

settle_impl!(FastBatcher, Frame);
settle_impl!(Pipeline, Sized);

#[cfg(test)]
mod tests {
    use super::super::Backoff;
    use super::super::fast::{Event, FastBatcher, FastConfig};
    use super::super::pipelined::Pipeline;
    use super::super::sim::{PREFIX, SimFrame};
    use std::time::Duration;

    fn frame(i: u64) -> SimFrame {
        SimFrame {
            idx: i,
            id: i,
            body: i,
        }
    }

    /// A batch whose server went quiet ends; its frames wait in doubt; the
    /// stored ones are settled, never published again, the account
    /// balanced; the rest are published again.
    #[test]
    fn fast_settles_frames_of_an_ended_batch() {
        let cfg = FastConfig {
            flow: 1,
            ack_interval: Duration::ZERO,
            outstanding: 2,
            batch_len_max: 100,
            batch_age_max: Duration::from_millis(50),
            idle_commit: Duration::from_millis(5),
            ack_timeout: Duration::from_millis(200),
            stream: "SIM".into(),
        };
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
        let mut m = FastBatcher::new(PREFIX.into(), cfg, backoff, Duration::from_secs(5), 0);
        assert_eq!(m.poll_event(), Some(Event::StreamPositionWanted));
        m.handle_stream_position(None);
        m.push(0, frame(7));
        assert!(m.poll_transmit(0, || 0).is_some());
        m.handle_send_result(0, Ok(()));
        assert_eq!(m.in_doubt().count(), 0, "in flight, not yet in doubt");
        // The server went away: no answer, the batch ends.
        m.handle_timeout(300 * MS, 0);
        let doubt: Vec<u64> = m.in_doubt().map(|f| f.id).collect();
        assert_eq!(doubt, vec![7]);
        assert_eq!(m.settle_stored(400 * MS, |f| f.id == 8), 0);
        assert_eq!(m.settle_stored(400 * MS, |f| f.id == 7), 1);
        assert!(m.balanced(), "{:?}", m.counts());
        assert_eq!(m.poll_acked().map(|a| a.frame.id), Some(7));
        assert_eq!((m.counts().acked, m.counts().duplicate), (1, 1));
        assert_eq!(m.in_doubt().count(), 0);
        assert!(
            m.poll_transmit(500 * MS, || 0).is_none(),
            "nothing to publish again"
        );
    }

    const MS: u64 = 1_000_000;

    /// Frames published and failed wait in doubt; those the stream holds
    /// are settled, the others published again; the account balances.
    #[test]
    fn pipelined_settles_only_frames_in_doubt_that_are_stored() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
        let mut m = Pipeline::new(8, backoff, Duration::from_secs(1), []);
        for f in 0..6u64 {
            m.push(f);
            let token = m.poll_transmit(0).expect("room").token;
            m.handle_send_result(0, Ok(()));
            // Every ack lost: the server went away.
            m.handle_ack(0, token, Err("gone".into()));
        }
        m.push(6); // never published
        let mut doubt: Vec<u64> = m.in_doubt().copied().collect();
        doubt.sort_unstable();
        assert_eq!(doubt, vec![0, 1, 2, 3, 4, 5]);
        let settled = m.settle_stored(5 * MS, |f| f % 2 == 0);
        assert_eq!(settled, 3);
        assert!(m.balanced(), "{:?}", m.counts());
        let acked: Vec<u64> = std::iter::from_fn(|| m.poll_acked().map(|a| a.frame)).collect();
        assert_eq!(acked, vec![0, 2, 4]);
        assert_eq!((m.counts().acked, m.counts().duplicate), (3, 3));
        let mut again = Vec::new();
        for now in (20..200).step_by(20) {
            while let Some(t) = m.poll_transmit(now * MS) {
                let (frame, token) = (*t.frame, t.token);
                again.push(frame);
                m.handle_send_result(now * MS, Ok(()));
                m.handle_ack(now * MS, token, Ok(false));
            }
        }
        again.sort_unstable();
        assert_eq!(again, vec![1, 3, 5, 6], "the rest is published again");
    }
}
