//! The spool's bookkeeping: which segments exist, what each holds, what
//! has been handed to the publisher and acknowledged, what the size limit
//! and the full policy decide. The driver (`spool::store`) does the file
//! work each [`Step`] names; time is an argument.
//!
//! Every slot of a segment is, at any moment, exactly one of: waiting (not
//! yet handed to the publisher), out (handed, no ack yet) or done (acked,
//! torn, or dropped with its segment). A segment is deleted when it is
//! sealed and every slot is done. `held` (frames in the spool) is the
//! number of slots not done.

use super::record::{HEADER_LEN, RECORD_LEN};
use std::collections::VecDeque;

/// What to do when the spool is at `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Keep what is spooled, drop the incoming frames (counted).
    DropNewest,
    /// Delete the oldest segment no frame of which is out with the
    /// publisher (its frames counted as dropped), then write.
    DropOldest,
}

/// The bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of every segment file together.
    pub max_bytes: u64,
    /// One segment file's bytes, header included (at least one record).
    pub segment_bytes: u64,
    pub policy: FullPolicy,
    /// The open segment is sealed for draining only once it is this old,
    /// so a drain that caught up does not seal a file per frame.
    pub seal_age_ns: u64,
}

/// File work for the driver, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Close the open segment (no more writes) and create segment `seq`
    /// with its header.
    Open { seq: u64 },
    /// Append the next `records` of the batch to segment `seq`.
    Write { seq: u64, records: u64 },
    /// Delete segment `seq`; `dropped` of its frames were never delivered.
    Delete { seq: u64, dropped: u64 },
    /// Drop the batch's next `records` (full, drop-newest).
    DropNewest { records: u64 },
}

/// Running totals, frames and bytes (a frame's bytes are its record's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames written.
    pub spooled: u64,
    /// Frames acknowledged by JetStream after they left the spool.
    pub drained: u64,
    /// Frames dropped by the full policy (newest refused or oldest deleted).
    pub dropped: u64,
    /// Torn or damaged records found.
    pub torn: u64,
    /// Frames found in the spool at start.
    pub recovered: u64,
}

#[derive(Clone, Debug)]
struct Seg {
    seq: u64,
    slots: u64,
    done: Vec<u64>,
    done_count: u64,
    /// Slots `[0, handed)` have been handed out (or were done already).
    handed: u64,
    out: u64,
    sealed: bool,
    opened_ns: u64,
    first_recv_ns: Option<u64>,
}

impl Seg {
    fn new(seq: u64, slots: u64, sealed: bool, opened_ns: u64) -> Self {
        Seg {
            seq,
            slots,
            done: vec![0; slots.div_ceil(64) as usize],
            done_count: 0,
            handed: 0,
            out: 0,
            sealed,
            opened_ns,
            first_recv_ns: None,
        }
    }
    fn bytes(&self) -> u64 {
        HEADER_LEN as u64 + self.slots * RECORD_LEN as u64
    }
    fn is_done(&self, slot: u64) -> bool {
        self.done
            .get((slot / 64) as usize)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }
    /// Mark `slot` done; false if it was already (or is out of range).
    fn mark(&mut self, slot: u64) -> bool {
        if slot >= self.slots || self.is_done(slot) {
            return false;
        }
        self.done[(slot / 64) as usize] |= 1 << (slot % 64);
        self.done_count += 1;
        true
    }
    fn grow(&mut self, slots: u64) {
        self.slots += slots;
        self.done.resize(self.slots.div_ceil(64) as usize, 0);
    }
    fn waiting_or_out(&self) -> u64 {
        self.slots - self.done_count
    }
    fn finished(&self) -> bool {
        self.sealed && self.done_count == self.slots
    }
    /// The first slot not done.
    fn prefix(&self) -> u64 {
        (0..self.slots)
            .find(|&s| !self.is_done(s))
            .unwrap_or(self.slots)
    }
}

/// The spool's state.
#[derive(Clone, Debug)]
pub struct Ledger {
    limits: Limits,
    /// Oldest first; the last one is open for writing when not sealed.
    segs: VecDeque<Seg>,
    next_seq: u64,
    counts: Counts,
}

impl Ledger {
    pub fn new(limits: Limits) -> Self {
        assert!(limits.segment_bytes >= (HEADER_LEN + RECORD_LEN) as u64);
        Ledger {
            limits,
            segs: VecDeque::new(),
            next_seq: 0,
            counts: Counts::default(),
        }
    }

    /// A segment found at start (in ascending `seq` order), sealed: its
    /// `slots`, the slots that are `torn`, the receive time of its first
    /// intact record, and `done_before`: the slots before this one were
    /// delivered in the last run (the cursor). Returns the frames it holds.
    pub fn recover(
        &mut self,
        seq: u64,
        slots: u64,
        torn: &[u64],
        first_recv_ns: Option<u64>,
        done_before: u64,
    ) -> u64 {
        let mut s = Seg::new(seq, slots, true, 0);
        s.first_recv_ns = first_recv_ns;
        for &t in torn {
            if s.mark(t) {
                self.counts.torn += 1;
            }
        }
        for slot in 0..done_before.min(slots) {
            s.mark(slot);
        }
        self.next_seq = self.next_seq.max(seq + 1);
        let held = s.waiting_or_out();
        self.counts.recovered += held;
        if s.finished() {
            // Nothing left in it: the driver deletes it at once.
            self.segs.push_back(s);
            return 0;
        }
        self.segs.push_back(s);
        held
    }

    /// Segments found at start that hold nothing: to delete.
    pub fn take_finished(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        self.segs.retain(|s| {
            let f = s.finished();
            if f {
                out.push(s.seq);
            }
            !f
        });
        out
    }

    fn total_bytes(&self) -> u64 {
        self.segs.iter().map(Seg::bytes).sum()
    }

    fn head_open(&self) -> Option<&Seg> {
        self.segs.back().filter(|s| !s.sealed)
    }

    /// Plan to spool `records` frames at `now_ns`, the first received at
    /// `first_recv_ns`. The steps name every file change and together
    /// account for all `records` (written or dropped).
    pub fn append(&mut self, now_ns: u64, records: u64, first_recv_ns: u64) -> Vec<Step> {
        let (rec, hdr) = (RECORD_LEN as u64, HEADER_LEN as u64);
        let mut steps = Vec::new();
        let mut left = records;
        while left > 0 {
            let total = self.total_bytes();
            let room_total = self.limits.max_bytes.saturating_sub(total);
            let head_room = self
                .head_open()
                .map(|h| self.limits.segment_bytes.saturating_sub(h.bytes()) / rec);
            let fits = match head_room {
                Some(r) if r > 0 => room_total >= rec,
                _ => room_total >= hdr + rec,
            };
            if !fits {
                if self.limits.policy == FullPolicy::DropOldest
                    && let Some(i) = self.segs.iter().position(|s| s.sealed && s.out == 0)
                {
                    let s = self.segs.remove(i).unwrap_or_else(|| unreachable!());
                    let dropped = s.waiting_or_out();
                    self.counts.dropped += dropped;
                    steps.push(Step::Delete {
                        seq: s.seq,
                        dropped,
                    });
                    continue;
                }
                self.counts.dropped += left;
                steps.push(Step::DropNewest { records: left });
                break;
            }
            if head_room.unwrap_or(0) == 0 {
                if let Some(h) = self.segs.back_mut() {
                    h.sealed = true;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.segs.push_back(Seg::new(seq, 0, false, now_ns));
                steps.push(Step::Open { seq });
                continue;
            }
            let room = head_room.unwrap_or(0).min((room_total) / rec);
            let k = left.min(room);
            let h = self.segs.back_mut().unwrap_or_else(|| unreachable!());
            if h.first_recv_ns.is_none() {
                h.first_recv_ns = Some(first_recv_ns);
            }
            h.grow(k);
            steps.push(Step::Write {
                seq: h.seq,
                records: k,
            });
            self.counts.spooled += k;
            left -= k;
        }
        steps
    }

    /// The segment to read next for the drain: the oldest with frames not
    /// yet handed out. The open segment is sealed for it (once
    /// [`Limits::seal_age_ns`] old): `sealed_now` tells the driver to stop
    /// writing there. `None`: nothing to drain now.
    pub fn next_drain(&mut self, now_ns: u64) -> Option<(u64, bool)> {
        let seal_age = self.limits.seal_age_ns;
        let s = self.segs.iter_mut().find(|s| s.handed < s.slots)?;
        if s.sealed {
            return Some((s.seq, false));
        }
        if now_ns.saturating_sub(s.opened_ns) < seal_age {
            return None;
        }
        s.sealed = true;
        Some((s.seq, true))
    }

    /// The driver handed slot `slot` of `seq` to the publisher (slots are
    /// handed in order; any skipped are torn and reported so).
    pub fn handed(&mut self, seq: u64, slot: u64) {
        if let Some(s) = self.seg_mut(seq)
            && slot < s.slots
            && !s.is_done(slot)
        {
            s.handed = s.handed.max(slot + 1);
            s.out += 1;
        }
    }

    /// Every slot of `seq` has been looked at by the drain.
    pub fn all_handed(&mut self, seq: u64) -> Option<Step> {
        let s = self.seg_mut(seq)?;
        s.handed = s.slots;
        self.finish(seq)
    }

    /// Slot `slot` of `seq` was read back torn.
    pub fn torn(&mut self, seq: u64, slot: u64) -> Option<Step> {
        let s = self.seg_mut(seq)?;
        if s.mark(slot) {
            self.counts.torn += 1;
        }
        self.finish(seq)
    }

    /// JetStream acknowledged slot `slot` of `seq`. A step when that
    /// finished the segment.
    pub fn acked(&mut self, seq: u64, slot: u64) -> Option<Step> {
        let s = self.seg_mut(seq)?;
        if s.mark(slot) {
            s.out = s.out.saturating_sub(1);
            self.counts.drained += 1;
        }
        self.finish(seq)
    }

    /// The publisher gave slot `slot` of `seq` back unacknowledged (at its
    /// stop): it stays in the spool for the next run.
    pub fn returned(&mut self, seq: u64, slot: u64) {
        if let Some(s) = self.seg_mut(seq)
            && !s.is_done(slot)
        {
            s.out = s.out.saturating_sub(1);
        }
    }

    fn finish(&mut self, seq: u64) -> Option<Step> {
        let i = self.segs.iter().position(|s| s.seq == seq)?;
        if !self.segs[i].finished() || self.segs[i].handed < self.segs[i].slots {
            return None;
        }
        self.segs.remove(i);
        Some(Step::Delete { seq, dropped: 0 })
    }

    fn seg_mut(&mut self, seq: u64) -> Option<&mut Seg> {
        self.segs.iter_mut().find(|s| s.seq == seq)
    }

    /// Slots of segment `seq` (0 when unknown).
    pub fn slots(&self, seq: u64) -> u64 {
        self.segs
            .iter()
            .find(|s| s.seq == seq)
            .map_or(0, |s| s.slots)
    }

    /// Whether slot `slot` of `seq` is still to be delivered.
    pub fn is_pending(&self, seq: u64, slot: u64) -> bool {
        self.segs
            .iter()
            .find(|s| s.seq == seq)
            .is_some_and(|s| slot < s.slots && !s.is_done(slot))
    }

    /// The oldest segment and how many of its first slots are done: what
    /// the cursor file keeps across a restart.
    pub fn cursor(&self) -> Option<(u64, u64)> {
        self.segs.front().map(|s| (s.seq, s.prefix()))
    }

    /// Frames in the spool (not yet acknowledged after leaving it).
    pub fn held(&self) -> u64 {
        self.segs.iter().map(Seg::waiting_or_out).sum()
    }

    /// Bytes of every segment file.
    pub fn bytes(&self) -> u64 {
        self.total_bytes()
    }

    /// Receive time of the oldest segment's first frame.
    pub fn oldest_recv_ns(&self) -> Option<u64> {
        self.segs
            .iter()
            .find(|s| s.waiting_or_out() > 0)
            .and_then(|s| s.first_recv_ns)
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Segments, oldest first (for tests and the driver's checks).
    pub fn segments(&self) -> Vec<u64> {
        self.segs.iter().map(|s| s.seq).collect()
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
