//! The disk spool: frames JetStream cannot take now, kept on local disk
//! and published later, oldest first, with their original `Nats-Msg-Id`.
//!
#![doc = include_str!("../../docs/spool.md")]

pub mod config;
pub mod metrics;
pub mod proto;
mod store;

pub use config::{FsyncPolicy, SpoolConfig};

use crate::clock::mono_ns;
use crate::message::RecvTime;
use crate::receive::Received;
use proto::ledger::{Counts, Ledger, Limits, Step};
use proto::pacer::Pacer;
use proto::record::{RECORD_LEN, Record};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use store::Store;

/// Frames the spool thread takes from the spill rings per write.
const BATCH_MAX: usize = 8192;
/// The drain ring between the spool thread and the publisher.
const DRAIN_RING: usize = 8192;
/// The longest the spool thread sleeps with nothing to do.
const IDLE: Duration = Duration::from_millis(2);
/// How often the cursor file is rewritten while the drain moves.
const CURSOR_EVERY_NS: u64 = 200_000_000;
/// The open segment is sealed for the drain once this old.
const SEAL_AGE_NS: u64 = 100_000_000;

/// Where a spooled frame lives: segment and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolRef {
    pub seq: u64,
    pub slot: u64,
}

/// A frame handed from the spool to the publisher.
#[derive(Clone, Copy, Debug)]
pub struct Drained {
    pub received: Received,
    pub at: SpoolRef,
    /// Published once before without an ack seen.
    pub in_doubt: bool,
}

/// What the publisher tells the spool thread.
#[derive(Debug)]
pub enum ToSpool {
    /// JetStream acknowledged these frames from the spool.
    Acked(Vec<SpoolRef>),
    /// At the publisher's stop, frames not acknowledged: live ones to keep
    /// (`true`: published at least once, in doubt), spooled ones that stay.
    Unacked {
        live: Vec<(Received, bool)>,
        returned: Vec<SpoolRef>,
    },
}

/// The publisher's end: frames to drain, and where to report.
pub struct SpoolLink {
    pub drain: rtrb::Consumer<Drained>,
    pub tx: mpsc::Sender<ToSpool>,
}

/// The spool's counts as the reporter reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounts {
    /// Frames written this run.
    pub spooled: u64,
    /// Frames acknowledged by JetStream after leaving the spool.
    pub drained: u64,
    /// Frames dropped by the full policy.
    pub dropped: u64,
    /// Torn or damaged records skipped.
    pub torn: u64,
    /// Frames found in the spool at start.
    pub recovered: u64,
    /// Frames in the spool now.
    pub held: u64,
    /// Bytes of the segment files now.
    pub bytes: u64,
    /// Receive time of the oldest frame held (Unix ns; 0: none).
    pub oldest_recv_ns: u64,
    /// Write or read errors (each logged).
    pub errors: u64,
}

impl SpoolCounts {
    /// Age of the oldest frame held at `now` (0 when empty).
    pub fn oldest_age_s(&self, now: RecvTime) -> u64 {
        if self.oldest_recv_ns == 0 {
            return 0;
        }
        now.unix_ns.saturating_sub(self.oldest_recv_ns) / 1_000_000_000
    }
    /// A record's bytes per frame.
    pub const FRAME_BYTES: u64 = RECORD_LEN as u64;
}

#[derive(Debug, Default)]
struct Stats {
    cells: [AtomicU64; 9],
}

impl Stats {
    fn store(&self, c: &SpoolCounts) {
        let v = [
            c.spooled,
            c.drained,
            c.dropped,
            c.torn,
            c.recovered,
            c.held,
            c.bytes,
            c.oldest_recv_ns,
            c.errors,
        ];
        for (cell, v) in self.cells.iter().zip(v) {
            cell.store(v, Relaxed);
        }
    }
    fn load(&self) -> SpoolCounts {
        let v: [u64; 9] = std::array::from_fn(|i| self.cells[i].load(Relaxed));
        SpoolCounts {
            spooled: v[0],
            drained: v[1],
            dropped: v[2],
            torn: v[3],
            recovered: v[4],
            held: v[5],
            bytes: v[6],
            oldest_recv_ns: v[7],
            errors: v[8],
        }
    }
}

/// The running spool thread.
pub struct Spool {
    /// `spool.max_bytes`, for the `tspi_spool_max_bytes` gauge.
    max_bytes: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<SpoolCounts>>>,
}

impl Spool {
    /// Open `cfg.dir` (recovering what earlier runs left) and start the
    /// spool thread, which takes frames from `spills` (the receive
    /// workers' overflow rings). Returns the publisher's end.
    pub fn start(
        cfg: &SpoolConfig,
        spills: Vec<rtrb::Consumer<Received>>,
    ) -> std::io::Result<(Spool, SpoolLink)> {
        let dir = cfg
            .dir
            .clone()
            .ok_or_else(|| std::io::Error::other("spool.dir is not set"))?;
        let mut ledger = Ledger::new(Limits {
            max_bytes: cfg.max_bytes,
            segment_bytes: cfg.segment_bytes,
            policy: cfg.full,
            seal_age_ns: SEAL_AGE_NS,
        });
        let (store, rec) = Store::open(&dir, cfg.fsync, &mut ledger)?;
        tracing::info!(
            dir = %dir.display(),
            frames = rec.frames,
            torn = rec.torn,
            segments = rec.segments,
            "spool open"
        );
        let (producer, drain) = rtrb::RingBuffer::new(DRAIN_RING);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            ledger,
            store,
            spills,
            drain: producer,
            rx,
            pacer: Pacer::new(cfg.drain_rate_per_s, cfg.drain_rate_per_s / 10 + 1),
            fsync: cfg.fsync,
            fsync_every_ns: cfg.fsync_interval_ms * 1_000_000,
            loaded: None,
            stats: stats.clone(),
            stop: stop.clone(),
            errors: 0,
            batch: Vec::with_capacity(BATCH_MAX),
        };
        worker.publish_stats();
        let thread = std::thread::Builder::new()
            .name("tspi-spool".into())
            .spawn(move || worker.run())?;
        Ok((
            Spool {
                max_bytes: cfg.max_bytes,
                stats,
                stop,
                thread: std::sync::Mutex::new(Some(thread)),
            },
            SpoolLink { drain, tx },
        ))
    }

    /// The counts now.
    pub fn counts(&self) -> SpoolCounts {
        self.stats.load()
    }

    /// `spool.max_bytes`: the most the spool's files may hold.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Stop after the publisher has ended (its last report sent) and the
    /// receive threads have stopped: the spill rings are emptied onto
    /// disk, the cursor written, the segment synced. The final counts.
    pub fn stop(&self) -> SpoolCounts {
        self.stop.store(true, Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread.map(JoinHandle::join) {
            Some(Ok(c)) => c,
            _ => self.stats.load(),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// A segment read back for the drain.
struct Loaded {
    seq: u64,
    records: VecDeque<(u64, Record)>,
}

struct Worker {
    ledger: Ledger,
    store: Store,
    spills: Vec<rtrb::Consumer<Received>>,
    drain: rtrb::Producer<Drained>,
    rx: mpsc::Receiver<ToSpool>,
    pacer: Pacer,
    fsync: FsyncPolicy,
    fsync_every_ns: u64,
    loaded: Option<Loaded>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    errors: u64,
    batch: Vec<Record>,
}

impl Worker {
    fn run(mut self) -> SpoolCounts {
        let mut last_sync = mono_ns();
        let mut last_cursor = (mono_ns(), self.ledger.cursor());
        loop {
            // Read before emptying the rings: once set, the publisher has
            // ended and the receive threads have stopped.
            let stopping = self.stop.load(Acquire);
            let mut busy = self.take_spills();
            while let Ok(m) = self.rx.try_recv() {
                busy = true;
                self.message(m);
            }
            let now = mono_ns();
            if !stopping {
                busy |= self.fill_drain(now);
            }
            if self.fsync == FsyncPolicy::Interval
                && self.store.dirty()
                && now.saturating_sub(last_sync) >= self.fsync_every_ns
            {
                self.io(|s| s.store.sync());
                last_sync = now;
            }
            let cursor = self.ledger.cursor();
            if cursor != last_cursor.1 && now.saturating_sub(last_cursor.0) >= CURSOR_EVERY_NS {
                self.io(|s| s.store.write_cursor(cursor));
                last_cursor = (now, cursor);
            }
            self.publish_stats();
            if stopping && !busy {
                break;
            }
            if !busy {
                std::thread::sleep(IDLE);
            }
        }
        let cursor = self.ledger.cursor();
        self.io(|s| s.store.write_cursor(cursor));
        if self.fsync != FsyncPolicy::Never {
            self.io(|s| s.store.sync());
        }
        self.publish_stats();
        self.stats.load()
    }

    fn io(&mut self, f: impl FnOnce(&mut Self) -> std::io::Result<()>) {
        if let Err(e) = f(self) {
            self.errors += 1;
            tracing::error!(error = %e, "spool: file error");
        }
    }

    fn take_spills(&mut self) -> bool {
        let mut any = false;
        loop {
            self.batch.clear();
            let mut first_ns = 0;
            for c in &mut self.spills {
                while self.batch.len() < BATCH_MAX {
                    let Ok(r) = c.pop() else { break };
                    if self.batch.is_empty() {
                        first_ns = r.recv.unix_ns;
                    }
                    self.batch.push(Record {
                        frame: r.frame,
                        recv: r.recv,
                        in_doubt: false,
                    });
                }
            }
            if self.batch.is_empty() {
                return any;
            }
            any = true;
            let batch = std::mem::take(&mut self.batch);
            self.write(&batch, first_ns);
            self.batch = batch;
        }
    }

    fn write(&mut self, records: &[Record], first_recv_ns: u64) {
        let steps = self
            .ledger
            .append(mono_ns(), records.len() as u64, first_recv_ns);
        match self.store.apply(&steps, records) {
            Ok(deleted) => self.forget(&deleted),
            Err(e) => {
                self.errors += 1;
                tracing::error!(error = %e, "spool: write failed");
            }
        }
    }

    /// Segments deleted: drop a loaded copy.
    fn forget(&mut self, deleted: &[u64]) {
        if self
            .loaded
            .as_ref()
            .is_some_and(|l| deleted.contains(&l.seq))
        {
            self.loaded = None;
        }
    }

    fn step(&mut self, step: Option<Step>) {
        if let Some(Step::Delete { seq, .. }) = step {
            self.store.delete(seq);
            self.forget(&[seq]);
        }
    }

    fn message(&mut self, m: ToSpool) {
        match m {
            ToSpool::Acked(refs) => {
                for r in refs {
                    let s = self.ledger.acked(r.seq, r.slot);
                    self.step(s);
                }
            }
            ToSpool::Unacked { live, returned } => {
                for r in returned {
                    self.ledger.returned(r.seq, r.slot);
                }
                if let Some((first, _)) = live.first() {
                    let first_ns = first.recv.unix_ns;
                    let records: Vec<Record> = live
                        .iter()
                        .map(|(r, in_doubt)| Record {
                            frame: r.frame,
                            recv: r.recv,
                            in_doubt: *in_doubt,
                        })
                        .collect();
                    for chunk in records.chunks(BATCH_MAX) {
                        self.write(chunk, first_ns);
                    }
                }
            }
        }
    }

    /// Hand frames to the publisher, as the pacer and the ring allow.
    fn fill_drain(&mut self, now: u64) -> bool {
        let mut any = false;
        loop {
            let room = self.drain.slots() as u64;
            if room == 0 {
                return any;
            }
            if self.loaded.is_none() && !self.load(now) {
                return any;
            }
            let Some(l) = self.loaded.as_mut() else {
                return any;
            };
            let want = room.min(l.records.len() as u64);
            let n = if want == 0 {
                0
            } else {
                self.pacer.take(now, want)
            };
            let seq = l.seq;
            for _ in 0..n {
                let Some((slot, r)) = l.records.pop_front() else {
                    break;
                };
                let item = Drained {
                    received: Received {
                        frame: r.frame,
                        recv: r.recv,
                        recv_mono_ns: now,
                    },
                    at: SpoolRef { seq, slot },
                    in_doubt: r.in_doubt,
                };
                if self.drain.push(item).is_ok() {
                    self.ledger.handed(seq, slot);
                    any = true;
                }
            }
            if l.records.is_empty() {
                self.loaded = None;
                let s = self.ledger.all_handed(seq);
                self.step(s);
                continue;
            }
            return any;
        }
    }

    /// Read the next segment to drain; false when there is none now.
    fn load(&mut self, now: u64) -> bool {
        let Some((seq, sealed_now)) = self.ledger.next_drain(now) else {
            return false;
        };
        if sealed_now {
            self.io(|s| s.store.seal(seq));
        }
        let scan = match self.store.read(seq) {
            Ok(s) => s,
            Err(e) => {
                self.errors += 1;
                tracing::error!(segment = seq, error = %e, "spool: segment not readable; its frames are counted torn");
                proto::record::Scan {
                    header_ok: false,
                    ..Default::default()
                }
            }
        };
        // Torn slots, and any the ledger counted that the file lacks.
        let missing = scan.slots..self.ledger.slots(seq);
        for slot in scan.torn.iter().copied().chain(missing) {
            let s = self.ledger.torn(seq, slot);
            self.step(s);
        }
        let records: VecDeque<(u64, Record)> = scan
            .records
            .into_iter()
            .filter(|(slot, _)| self.ledger.is_pending(seq, *slot))
            .collect();
        if records.is_empty() {
            let s = self.ledger.all_handed(seq);
            self.step(s);
            // Try the next one on the next pass.
            return false;
        }
        self.loaded = Some(Loaded { seq, records });
        true
    }

    fn publish_stats(&self) {
        let c: Counts = self.ledger.counts();
        self.stats.store(&SpoolCounts {
            spooled: c.spooled,
            drained: c.drained,
            dropped: c.dropped,
            torn: c.torn,
            recovered: c.recovered,
            held: self.ledger.held(),
            bytes: self.ledger.bytes(),
            oldest_recv_ns: self.ledger.oldest_recv_ns().unwrap_or(0),
            errors: self.errors,
        });
    }
}

#[cfg(test)]
mod tests;
