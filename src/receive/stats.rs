//! Per-worker counters: written by one receive thread once per batch, read
//! by anyone as a consistent snapshot.

use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crossbeam_utils::CachePadded;

use crate::codec::RejectReason;

const REASONS: usize = RejectReason::ALL.len();

/// What happened to the datagrams one worker (or all of them) read.
///
/// Invariant (see [`ReceiverCounts::is_consistent`]):
/// `received = sum(rejected) + filtered + ring_dropped + spilled + accepted`.
/// Datagrams the kernel dropped before a worker read them are not here; see
/// [`super::Receivers::kernel_drops`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// Every datagram read from a socket, good or bad.
    pub received: u64,
    /// Rejected by the codec, or by the source allow-list
    /// ([`RejectReason::Source`]), indexed by [`RejectReason::index`].
    pub rejected: [u64; REASONS],
    /// Valid, but the sensor is not on the allow list.
    pub filtered: u64,
    /// Valid and allowed, but the worker's ring was full
    /// ([`super::OverflowPolicy::DropNewest`]).
    pub ring_dropped: u64,
    /// Valid and allowed, the ring full: pushed into the worker's spill
    /// ring for the disk spool instead.
    pub spilled: u64,
    /// Pushed into the ring for the publisher.
    pub accepted: u64,
}

impl ReceiverCounts {
    /// All rejected datagrams, every reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejected for this reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    /// `received = sum(rejected) + filtered + ring_dropped + spilled + accepted`.
    pub fn is_consistent(&self) -> bool {
        self.received
            == self.rejected_total()
                + self.filtered
                + self.ring_dropped
                + self.spilled
                + self.accepted
    }
}

impl AddAssign for ReceiverCounts {
    fn add_assign(&mut self, o: ReceiverCounts) {
        self.received += o.received;
        for (a, b) in self.rejected.iter_mut().zip(o.rejected) {
            *a += b;
        }
        self.filtered += o.filtered;
        self.ring_dropped += o.ring_dropped;
        self.spilled += o.spilled;
        self.accepted += o.accepted;
    }
}

impl Add for ReceiverCounts {
    type Output = ReceiverCounts;
    fn add(mut self, o: ReceiverCounts) -> ReceiverCounts {
        self += o;
        self
    }
}

impl std::iter::Sum for ReceiverCounts {
    fn sum<I: Iterator<Item = ReceiverCounts>>(iter: I) -> ReceiverCounts {
        iter.fold(ReceiverCounts::default(), Add::add)
    }
}

/// Counter cells: `received`, six rejection reasons, `filtered`,
/// `ring_dropped`, `spilled`, `accepted`.
const CELLS: usize = 5 + REASONS;
const RECEIVED: usize = 0;
const REJECTED: usize = 1;
const FILTERED: usize = REJECTED + REASONS;
const RING_DROPPED: usize = FILTERED + 1;
const SPILLED: usize = RING_DROPPED + 1;
const ACCEPTED: usize = SPILLED + 1;
const _: () = assert!(ACCEPTED + 1 == CELLS);

/// Snapshot attempts before a reader stops waiting for a quiet moment (the
/// writer publishes once per batch, microseconds apart, so the first
/// attempt nearly always succeeds; only a writer publishing back to back
/// can starve a reader). The first few spin, the rest yield the core.
const SNAPSHOT_TRIES_MAX: u32 = 64;
const SNAPSHOT_SPINS_MAX: u32 = 8;

/// One worker's counters.
///
/// The receive thread keeps running totals in a local [`ReceiverCounts`]
/// and stores them here once per batch (plain `Relaxed` stores, no
/// read-modify-write), framed by a sequence number (a single-writer seqlock
/// in the form Boehm gives for the C++ memory model), so every
/// [`ReceiverStats::snapshot`] satisfies the counts' invariant even while
/// the worker runs. The cells share one cache-padded block: only the owning
/// worker writes them, so padding each cell would buy nothing; padding the
/// block keeps two workers' counters off one cache line.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    inner: CachePadded<Cells>,
}

#[derive(Debug, Default)]
struct Cells {
    /// Odd while the writer is storing.
    seq: AtomicU64,
    cells: [AtomicU64; CELLS],
}

impl ReceiverStats {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Store the owning worker's running totals. Only that worker calls it
    /// (single writer), once per batch.
    pub(crate) fn publish(&self, c: &ReceiverCounts) {
        let s = self.inner.seq.load(Ordering::Relaxed);
        self.inner.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let cells = &self.inner.cells;
        cells[RECEIVED].store(c.received, Ordering::Relaxed);
        for (i, &v) in c.rejected.iter().enumerate() {
            cells[REJECTED + i].store(v, Ordering::Relaxed);
        }
        cells[FILTERED].store(c.filtered, Ordering::Relaxed);
        cells[RING_DROPPED].store(c.ring_dropped, Ordering::Relaxed);
        cells[SPILLED].store(c.spilled, Ordering::Relaxed);
        cells[ACCEPTED].store(c.accepted, Ordering::Relaxed);
        self.inner.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy of the counters as of the worker's last batch.
    ///
    /// Should the writer keep the reader from ever finding a quiet moment
    /// (back-to-back publishing), the cells are read one by one and
    /// `received` is set to the sum of the others: the invariant still
    /// holds, every count is one the worker reached, and no count goes
    /// backwards between snapshots.
    pub fn snapshot(&self) -> ReceiverCounts {
        self.try_snapshot().unwrap_or_else(|| {
            let mut out = self.read_cells();
            out.received =
                out.rejected_total() + out.filtered + out.ring_dropped + out.spilled + out.accepted;
            out
        })
    }

    /// A copy taken between two publishes, or `None` when every attempt
    /// overlapped one.
    fn try_snapshot(&self) -> Option<ReceiverCounts> {
        for attempt in 0..SNAPSHOT_TRIES_MAX {
            let s1 = self.inner.seq.load(Ordering::Acquire);
            let out = self.read_cells();
            fence(Ordering::Acquire);
            let s2 = self.inner.seq.load(Ordering::Relaxed);
            if s1 == s2 && s1.is_multiple_of(2) {
                return Some(out);
            }
            if attempt < SNAPSHOT_SPINS_MAX {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    fn read_cells(&self) -> ReceiverCounts {
        let cells = &self.inner.cells;
        ReceiverCounts {
            received: cells[RECEIVED].load(Ordering::Relaxed),
            rejected: std::array::from_fn(|i| cells[REJECTED + i].load(Ordering::Relaxed)),
            filtered: cells[FILTERED].load(Ordering::Relaxed),
            ring_dropped: cells[RING_DROPPED].load(Ordering::Relaxed),
            spilled: cells[SPILLED].load(Ordering::Relaxed),
            accepted: cells[ACCEPTED].load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn publish_then_snapshot_round_trips() {
        let s = ReceiverStats::new();
        assert_eq!(s.snapshot(), ReceiverCounts::default());
        let c = ReceiverCounts {
            received: 12,
            rejected: [1, 2, 0, 0, 1, 0],
            filtered: 1,
            ring_dropped: 2,
            spilled: 2,
            accepted: 3,
        };
        assert!(c.is_consistent());
        s.publish(&c);
        assert_eq!(s.snapshot(), c);
        assert_eq!(c.rejected_total(), 4);
        assert_eq!(c.rejected_for(RejectReason::Version), 0);
        assert_eq!((c + c).received, 24);
        assert_eq!([c, c, c].into_iter().sum::<ReceiverCounts>().accepted, 9);
    }

    /// A writer publishing `publishes` batches, pausing `pause_spins` spins
    /// between them, racing a reader that checks every snapshot. Returns how
    /// many snapshots the reader took and how many came from a quiet moment.
    fn race(publishes: u64, pause_spins: u32) -> (u64, u64) {
        let s = Arc::new(ReceiverStats::new());
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = ReceiverCounts::default();
                for i in 0..publishes {
                    c.received += 3;
                    c.rejected[(i % REASONS as u64) as usize] += 1;
                    c.filtered += 1;
                    c.accepted += 1;
                    s.publish(&c);
                    for _ in 0..pause_spins {
                        std::hint::spin_loop();
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        let mut last = ReceiverCounts::default();
        let (mut reads, mut quiet) = (0u64, 0u64);
        while !done.load(Ordering::Acquire) && reads < 10_000_000 {
            quiet += u64::from(s.try_snapshot().is_some());
            let c = s.snapshot();
            assert!(c.is_consistent(), "torn snapshot {c:?}");
            assert!(c.received >= last.received && c.accepted >= last.accepted);
            last = c;
            reads += 2;
        }
        writer.join().unwrap();
        assert_eq!(s.snapshot().received, 3 * publishes);
        (reads, quiet)
    }

    /// A writer publishing back to back can starve the seqlock; snapshots
    /// stay consistent and monotonic anyway.
    #[test]
    fn snapshots_stay_consistent_under_a_back_to_back_writer() {
        race(50_000, 0);
    }

    /// At a realistic pace (a publish per batch), nearly every snapshot
    /// finds a quiet moment.
    #[test]
    fn paced_writer_leaves_quiet_moments() {
        let (reads, quiet) = race(5_000, 1_000);
        assert!(reads > 0);
        assert!(
            quiet * 10 >= reads / 2 * 9,
            "{quiet} quiet of {} tries",
            reads / 2
        );
    }
}
