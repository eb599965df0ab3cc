//! The spool's files: the directory, the segment being written, whole
//! segments read back, deletion, fsync and the cursor. Every decision is
//! the ledger's ([`super::proto::ledger`]); this only does what a
//! [`Step`] names.

use super::config::FsyncPolicy;
use super::proto::ledger::{Ledger, Step};
use super::proto::record::{self, Record, Scan, crc32c, parse_segment_name, segment_name};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

const CURSOR: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const CURSOR_LEN: usize = 20;

/// The directory and the segment open for writing.
pub(crate) struct Store {
    dir: PathBuf,
    head: Option<(u64, File)>,
    fsync: FsyncPolicy,
    /// Written since the last fsync.
    dirty: bool,
    buf: Vec<u8>,
}

/// What opening the directory found.
pub(crate) struct Recovered {
    /// Frames in the spool from earlier runs.
    pub frames: u64,
    /// Torn or damaged records found (skipped).
    pub torn: u64,
    pub segments: usize,
}

impl Store {
    /// Open (create) `dir`, read every segment left there into `ledger`
    /// (torn records counted and skipped, the cursor's delivered prefix
    /// skipped), and delete the segments that hold nothing more.
    pub(crate) fn open(
        dir: &Path,
        fsync: FsyncPolicy,
        ledger: &mut Ledger,
    ) -> io::Result<(Store, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_name(e.file_name().to_str()?))
            .collect();
        seqs.sort_unstable();
        let cursor = read_cursor(dir);
        let mut rec = Recovered {
            frames: 0,
            torn: 0,
            segments: seqs.len(),
        };
        for seq in seqs {
            let scan = read_segment(dir, seq)?;
            let done_before = cursor.filter(|c| c.0 == seq).map_or(0, |c| c.1);
            let first = scan.records.first().map(|(_, r)| r.recv.unix_ns);
            rec.torn += scan.torn.len() as u64;
            rec.frames += ledger.recover(seq, scan.slots, &scan.torn, first, done_before);
        }
        let store = Store {
            dir: dir.to_owned(),
            head: None,
            fsync,
            dirty: false,
            buf: Vec::with_capacity(64 * record::RECORD_LEN),
        };
        for seq in ledger.take_finished() {
            store.delete(seq);
        }
        Ok((store, rec))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    /// Do the ledger's `steps` for `records` (the batch they were planned
    /// for): open, write, delete. Returns the segments deleted.
    pub(crate) fn apply(&mut self, steps: &[Step], records: &[Record]) -> io::Result<Vec<u64>> {
        let mut at = 0usize;
        let mut deleted = Vec::new();
        for step in steps {
            match *step {
                Step::Open { seq } => {
                    self.close_head()?;
                    let mut f = OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(self.path(seq))?;
                    f.write_all(&record::segment_header(seq))?;
                    if self.fsync != FsyncPolicy::Never {
                        // The new name must survive a power cut too.
                        File::open(&self.dir)?.sync_all()?;
                    }
                    self.head = Some((seq, f));
                    self.dirty = true;
                }
                Step::Write { seq, records: n } => {
                    let n = n as usize;
                    let batch = &records[at..at + n];
                    at += n;
                    self.buf.clear();
                    for r in batch {
                        self.buf.extend_from_slice(&r.encode());
                    }
                    match &mut self.head {
                        Some((s, f)) if *s == seq => f.write_all(&self.buf)?,
                        _ => {
                            return Err(io::Error::other(format!(
                                "spool: segment {seq} is not the one open for writing"
                            )));
                        }
                    }
                    self.dirty = true;
                }
                Step::DropNewest { records: n } => at += n as usize,
                Step::Delete { seq, .. } => {
                    if self.head.as_ref().is_some_and(|h| h.0 == seq) {
                        self.head = None;
                    }
                    self.delete(seq);
                    deleted.push(seq);
                }
            }
        }
        if self.fsync == FsyncPolicy::EveryBatch {
            self.sync()?;
        }
        Ok(deleted)
    }

    /// The open segment is sealed (the drain reads it next): no more
    /// writes go there.
    pub(crate) fn seal(&mut self, seq: u64) -> io::Result<()> {
        if self.head.as_ref().is_some_and(|h| h.0 == seq) {
            self.close_head()?;
        }
        Ok(())
    }

    fn close_head(&mut self) -> io::Result<()> {
        if self.dirty && self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        self.head = None;
        Ok(())
    }

    /// fsync the open segment if anything was written since the last.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if let Some((_, f)) = &self.head
            && self.dirty
        {
            f.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    pub(crate) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Segment `seq`'s records, read whole.
    pub(crate) fn read(&self, seq: u64) -> io::Result<Scan> {
        read_segment(&self.dir, seq)
    }

    pub(crate) fn delete(&self, seq: u64) {
        if let Err(e) = fs::remove_file(self.path(seq))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(segment = seq, error = %e, "spool: segment not deleted");
        }
    }

    /// Keep `(seq, prefix)`: segment `seq`'s first `prefix` slots are
    /// delivered (written aside and renamed, so a crash leaves the old or
    /// the new cursor, never half of one).
    pub(crate) fn write_cursor(&self, cursor: Option<(u64, u64)>) -> io::Result<()> {
        let (seq, prefix) = cursor.unwrap_or((0, 0));
        let mut b = [0u8; CURSOR_LEN];
        b[..8].copy_from_slice(&seq.to_le_bytes());
        b[8..16].copy_from_slice(&prefix.to_le_bytes());
        let crc = crc32c(&b[..16]);
        b[16..].copy_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join(CURSOR_TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        if self.fsync != FsyncPolicy::Never {
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join(CURSOR))
    }
}

fn read_segment(dir: &Path, seq: u64) -> io::Result<Scan> {
    let bytes = fs::read(dir.join(segment_name(seq)))?;
    Ok(record::scan(seq, &bytes))
}

/// The cursor left by the last run, if whole.
fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let b = fs::read(dir.join(CURSOR)).ok()?;
    if b.len() != CURSOR_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..].try_into().ok()?);
    if crc != crc32c(&b[..16]) {
        return None;
    }
    let seq = u64::from_le_bytes(b[..8].try_into().ok()?);
    let prefix = u64::from_le_bytes(b[8..16].try_into().ok()?);
    Some((seq, prefix))
}
