//! What a receive thread does with each datagram, whichever backend read
//! it: parse, filter by sensor, push into the ring, count. No allocation, no
//! logging, no system call.

use std::sync::Arc;

use rtrb::{Producer, PushError};

use super::Received;
use super::config::OverflowPolicy;
use super::stats::{ReceiverCounts, ReceiverStats};
use crate::codec::{self, RejectReason};
use crate::message::RecvTime;

/// Sensor ids a worker passes on: one bit per possible `u16`, 8 KiB, one
/// load and a shift per datagram.
#[derive(Clone)]
pub(crate) struct AllowList {
    words: Box<[u64; Self::WORDS]>,
}

impl AllowList {
    const WORDS: usize = (u16::MAX as usize + 1) / 64;

    pub(crate) fn new(ids: &[u16]) -> Self {
        let mut words = Box::new([0u64; Self::WORDS]);
        for &id in ids {
            words[usize::from(id) >> 6] |= 1 << (id & 63);
        }
        AllowList { words }
    }

    #[inline]
    pub(crate) fn contains(&self, id: u16) -> bool {
        (self.words[usize::from(id) >> 6] >> (id & 63)) & 1 == 1
    }
}

/// The moment a batch came out of the kernel: every datagram of the batch
/// carries it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) recv: RecvTime,
    pub(crate) mono_ns: u64,
}

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        Stamp {
            recv: RecvTime::now(),
            mono_ns: crate::clock::mono_ns(),
        }
    }
}

/// One worker's end of the path: its ring producer, its allow list and its
/// running totals.
pub(crate) struct Sink {
    producer: Producer<Received>,
    allow: Option<AllowList>,
    overflow: OverflowPolicy,
    totals: ReceiverCounts,
    published: u64,
    stats: Arc<ReceiverStats>,
    /// Accepted count at the last wake, and whom to wake.
    woken_at: u64,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Sink {
    pub(crate) fn new(
        producer: Producer<Received>,
        allow: Option<AllowList>,
        overflow: OverflowPolicy,
        stats: Arc<ReceiverStats>,
    ) -> Self {
        Sink {
            producer,
            allow,
            overflow,
            totals: ReceiverCounts::default(),
            published: 0,
            stats,
            woken_at: 0,
            wake: None,
        }
    }

    /// Wake `wake` after each batch that accepted frames.
    pub(crate) fn with_wake(mut self, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        self.wake = wake;
        self
    }

    /// One datagram as the kernel delivered it. `truncated`: the datagram
    /// was longer than the buffer (`MSG_TRUNC`), so it is too long whatever
    /// `bytes` holds.
    #[inline]
    pub(crate) fn datagram(&mut self, bytes: &[u8], truncated: bool, stamp: Stamp) {
        self.totals.received += 1;
        if truncated {
            self.totals.rejected[RejectReason::Length.index()] += 1;
            return;
        }
        let frame = match codec::parse(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.totals.rejected[e.reason().index()] += 1;
                return;
            }
        };
        if let Some(allow) = &self.allow
            && !allow.contains(frame.sensor_id)
        {
            self.totals.filtered += 1;
            return;
        }
        let item = Received {
            frame,
            recv: stamp.recv,
            recv_mono_ns: stamp.mono_ns,
        };
        match self.producer.push(item) {
            Ok(()) => self.totals.accepted += 1,
            Err(PushError::Full(_)) => match self.overflow {
                OverflowPolicy::DropNewest => self.totals.ring_dropped += 1,
            },
        }
    }

    /// End of a batch: make the totals visible to readers (skipped when the
    /// batch was empty).
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.totals.received != self.published {
            self.stats.publish(&self.totals);
            self.published = self.totals.received;
        }
        if self.totals.accepted != self.woken_at {
            self.woken_at = self.totals.accepted;
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    /// Datagrams seen so far.
    pub(crate) fn received(&self) -> u64 {
        self.totals.received
    }

    #[cfg(test)]
    pub(crate) fn totals(&self) -> ReceiverCounts {
        self.totals
    }
}

/// At most one log line per interval for a repeating error on the receive
/// path; the lines in between are counted and reported with the next one.
pub(crate) struct LogLimiter {
    interval_ns: u64,
    next_ns: u64,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new(interval_ns: u64) -> Self {
        LogLimiter {
            interval_ns,
            next_ns: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged.
    pub(crate) fn allow(&mut self, now_ns: u64) -> Option<u64> {
        if now_ns >= self.next_ns {
            self.next_ns = now_ns.saturating_add(self.interval_ns);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::vectors;

    fn stamp() -> Stamp {
        Stamp {
            recv: RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS),
            mono_ns: 7,
        }
    }

    #[test]
    fn allow_list_is_a_bitmap_over_every_id() {
        let a = AllowList::new(&[0, 63, 64, 501, 65535]);
        for id in [0, 63, 64, 501, 65535] {
            assert!(a.contains(id), "{id}");
        }
        for id in [1, 62, 65, 500, 502, 65534] {
            assert!(!a.contains(id), "{id}");
        }
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let a = AllowList::new(&all);
        assert!((0..=u16::MAX).all(|id| a.contains(id)));
    }

    #[test]
    fn sink_classifies_and_counts() {
        let (producer, mut consumer) = rtrb::RingBuffer::new(2);
        let stats = Arc::new(ReceiverStats::new());
        let mut sink = Sink::new(
            producer,
            Some(AllowList::new(&[501, 2048])),
            OverflowPolicy::DropNewest,
            stats.clone(),
        );
        let g1 = vectors::bytes(vectors::GEOCENTRIC_1); // sensor 501
        let s2 = vectors::bytes(vectors::SPHERICAL_2); // sensor 2048
        let g3 = vectors::bytes(vectors::GEOCENTRIC_3); // sensor 65535
        let mut bad_version = g1.clone();
        bad_version[1] = 3;
        let mut long = g1.clone();
        long.push(0);
        sink.datagram(&g1, false, stamp());
        sink.datagram(&g3, false, stamp()); // filtered
        sink.datagram(&g1[..36], false, stamp()); // length
        sink.datagram(&long, false, stamp()); // length
        sink.datagram(&g1, true, stamp()); // truncated: length, whatever the bytes
        sink.datagram(&bad_version, false, stamp());
        sink.datagram(&s2, false, stamp());
        sink.datagram(&s2, false, stamp()); // ring of 2 is full
        assert_eq!(
            stats.snapshot(),
            ReceiverCounts::default(),
            "not yet published"
        );
        sink.publish();
        let c = stats.snapshot();
        assert_eq!(c, sink.totals());
        assert_eq!(c.received, 8);
        assert_eq!(c.rejected_for(RejectReason::Length), 3);
        assert_eq!(c.rejected_for(RejectReason::Version), 1);
        assert_eq!((c.filtered, c.ring_dropped, c.accepted), (1, 1, 2));
        assert!(c.is_consistent());
        let a = consumer.pop().unwrap();
        assert_eq!(a.frame, codec::parse(&g1).unwrap());
        assert_eq!(a.recv.unix_ns, vectors::RECV_EXAMPLE_UNIX_NS);
        assert_eq!(a.recv_mono_ns, 7);
        assert_eq!(consumer.pop().unwrap().frame.sensor_id, 2048);
        assert!(consumer.pop().is_err());
    }

    #[test]
    fn log_limiter_lets_one_line_per_interval_through() {
        let mut l = LogLimiter::new(1000);
        assert_eq!(l.allow(5), Some(0));
        assert_eq!(l.allow(6), None);
        assert_eq!(l.allow(1004), None);
        assert_eq!(l.allow(1005), Some(2));
    }
}
