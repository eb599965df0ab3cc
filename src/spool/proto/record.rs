//! The spool's on-disk format: fixed-size records in segment files.
//!
//! A segment file is a 16-byte header (`TSPISPL1`, then the segment's
//! sequence number, little-endian `u64`) followed by records of
//! [`RECORD_LEN`] bytes each:
//!
//! ```text
//! offset  len  field
//!      0    2  magic 0xA5 0x7C
//!      2    1  format version (1)
//!      3    1  flags: bit 0 = in doubt (published once, no ack seen)
//!      4    8  receive time, Unix nanoseconds (u64 LE)
//!     12   37  the TSPI v4 datagram, byte for byte
//!     49    3  zero
//!     52    4  CRC32C (Castagnoli) of bytes 0..52 (u32 LE)
//! ```
//!
//! The datagram holds everything the `Nats-Msg-Id` is built from (sensor
//! id, day, time ticks), and the receive time is the body's, so a spooled
//! frame is published with exactly the subject, id and body it would have
//! had. Records have one length, so a torn write (a crash between two
//! `write`s) is found without any index: a short tail, or a full-length
//! record whose checksum does not match, is a torn record, counted and
//! skipped; the records around it are intact.
//!
//! Pure: bytes in, records out.

use crate::codec::{self, DATAGRAM_LEN, Frame};
use crate::message::RecvTime;

/// Bytes of one record.
pub const RECORD_LEN: usize = 56;
/// Bytes of the segment header.
pub const HEADER_LEN: usize = 16;
/// The segment header's magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TSPISPL1";
const RECORD_MAGIC: [u8; 2] = [0xA5, 0x7C];
const VERSION: u8 = 1;
const FLAG_IN_DOUBT: u8 = 1;
const CRC_AT: usize = RECORD_LEN - 4;
const _: () = assert!(12 + DATAGRAM_LEN <= CRC_AT);

/// One spooled frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub frame: Frame,
    pub recv: RecvTime,
    /// Published at least once without an acknowledgement: the stream may
    /// hold it already.
    pub in_doubt: bool,
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..2].copy_from_slice(&RECORD_MAGIC);
        b[2] = VERSION;
        b[3] = if self.in_doubt { FLAG_IN_DOUBT } else { 0 };
        b[4..12].copy_from_slice(&self.recv.unix_ns.to_le_bytes());
        b[12..12 + DATAGRAM_LEN].copy_from_slice(&self.frame.encode());
        let crc = crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A record from exactly [`RECORD_LEN`] bytes; `None` when the magic,
    /// the version, the checksum or the datagram is not right (a torn or
    /// damaged record).
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.len() != RECORD_LEN || b[0..2] != RECORD_MAGIC || b[2] != VERSION {
            return None;
        }
        let crc = u32::from_le_bytes(b[CRC_AT..].try_into().ok()?);
        if crc != crc32c(&b[..CRC_AT]) {
            return None;
        }
        let frame = codec::parse(&b[12..12 + DATAGRAM_LEN]).ok()?;
        Some(Record {
            frame,
            recv: RecvTime {
                unix_ns: u64::from_le_bytes(b[4..12].try_into().ok()?),
            },
            in_doubt: b[3] & FLAG_IN_DOUBT != 0,
        })
    }
}

/// The header of segment `seq`.
pub fn segment_header(seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// What a segment file's bytes hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact records with their slot (position after the header).
    pub records: Vec<(u64, Record)>,
    /// Slots whose record is torn or damaged (a short tail counts as one).
    pub torn: Vec<u64>,
    /// Slots in the file, the short tail included.
    pub slots: u64,
    /// Whether the header names this segment; when not, every slot is torn.
    pub header_ok: bool,
}

/// The file name of segment `seq`: sorted by name is sorted by age.
pub fn segment_name(seq: u64) -> String {
    format!("seg-{seq:020}.spool")
}

/// The sequence number in a segment's file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".spool")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Read segment `seq`'s bytes: every intact record, every torn slot.
pub fn scan(seq: u64, bytes: &[u8]) -> Scan {
    let body = bytes.get(HEADER_LEN..).unwrap_or(&[]);
    let slots = body.len().div_ceil(RECORD_LEN) as u64;
    let header_ok = bytes.len() >= HEADER_LEN && bytes[..HEADER_LEN] == segment_header(seq);
    let mut out = Scan {
        slots,
        header_ok,
        ..Scan::default()
    };
    if !header_ok {
        out.torn = (0..slots).collect();
        return out;
    }
    for (slot, chunk) in body.chunks(RECORD_LEN).enumerate() {
        match Record::decode(chunk) {
            Some(r) => out.records.push((slot as u64, r)),
            None => out.torn.push(slot as u64),
        }
    }
    out
}

/// CRC32C (Castagnoli, reflected, as iSCSI and ext4 use), table-driven.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid frame unique per `i` (below 2^16 × 8e8).
    pub(crate) fn frame(i: u64) -> Frame {
        let hex = codec::vectors::ACCEPTED[(i % 4) as usize];
        let mut f = codec::parse(&codec::vectors::bytes(hex)).unwrap();
        f.sensor_id = i as u16;
        f.time_ticks = ((i >> 16) % 800_000_000) as u32;
        f
    }

    fn record(i: u64, in_doubt: bool) -> Record {
        Record {
            frame: frame(i),
            recv: RecvTime {
                unix_ns: 1_700_000_000_000_000_000u64.wrapping_add(i),
            },
            in_doubt,
        }
    }

    fn segment(seq: u64, records: &[Record]) -> Vec<u8> {
        let mut b = segment_header(seq).to_vec();
        for r in records {
            b.extend_from_slice(&r.encode());
        }
        b
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn names_sort_by_sequence_and_parse_back() {
        assert_eq!(segment_name(7), "seg-00000000000000000007.spool");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "seg-7.spool",
            "seg-0000000000000000000x.spool",
            "x",
            "seg-00000000000000000007.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn wrong_header_makes_every_slot_torn() {
        let b = segment(3, &[record(1, false), record(2, false)]);
        let s = scan(4, &b);
        assert!(!s.header_ok);
        assert_eq!((s.records.len(), s.torn, s.slots), (0, vec![0, 1], 2));
        assert_eq!(scan(3, &b[..5]).slots, 0);
    }

    proptest! {
        #[test]
        fn records_round_trip(i in any::<u64>(), doubt in any::<bool>(), ns in any::<u64>()) {
            let mut r = record(i, doubt);
            r.recv.unix_ns = ns;
            prop_assert_eq!(Record::decode(&r.encode()), Some(r));
        }

        /// Any single flipped bit is caught by the checksum (or the magic).
        #[test]
        fn a_flipped_bit_is_torn(i in any::<u64>(), bit in 0usize..RECORD_LEN * 8) {
            let mut b = record(i, false).encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(Record::decode(&b), None);
        }

        /// A segment cut anywhere (a crash mid-write) yields every whole
        /// record before the cut, and one torn slot for a partial tail.
        #[test]
        fn a_cut_segment_keeps_whole_records(n in 0usize..40, cut in 0usize..40 * RECORD_LEN) {
            let records: Vec<Record> = (0..n as u64).map(|i| record(i, i % 3 == 0)).collect();
            let full = segment(9, &records);
            let len = (HEADER_LEN + cut).min(full.len());
            let s = scan(9, &full[..len]);
            let whole = (len - HEADER_LEN) / RECORD_LEN;
            prop_assert_eq!(s.records.len(), whole);
            for (k, (slot, r)) in s.records.iter().enumerate() {
                prop_assert_eq!(*slot, k as u64);
                prop_assert_eq!(*r, records[k]);
            }
            let partial = !(len - HEADER_LEN).is_multiple_of(RECORD_LEN);
            prop_assert_eq!(s.torn.len(), usize::from(partial));
            prop_assert_eq!(s.slots, whole as u64 + u64::from(partial));
        }

        /// A damaged record in the middle is skipped; the rest is delivered.
        #[test]
        fn a_damaged_record_is_skipped(n in 1usize..30, hit in 0usize..30, byte in 0usize..RECORD_LEN) {
            let hit = hit % n;
            let records: Vec<Record> = (0..n as u64).map(|i| record(i, false)).collect();
            let mut b = segment(1, &records);
            b[HEADER_LEN + hit * RECORD_LEN + byte] ^= 0x40;
            let s = scan(1, &b);
            prop_assert_eq!(s.torn, vec![hit as u64]);
            prop_assert_eq!(s.records.len(), n - 1);
            prop_assert!(s.records.iter().all(|(slot, r)| *r == records[*slot as usize]));
        }
    }
}
