//! Pure: PostgreSQL's binary `COPY` format, and the telemetry row in it.
//!
//! Format (PostgreSQL docs, "COPY ... Binary Format"): an 11-byte signature,
//! a 32-bit flags word and a 32-bit header-extension length; then per row a
//! 16-bit field count and per field a 32-bit length (-1 for NULL) and the
//! value in the type's binary send format; then a 16-bit -1 trailer.
//! Hand-written rather than `tokio_postgres::binary_copy` because a row is
//! then 29 plain appends into one reused buffer instead of 29 `&dyn ToSql`
//! calls, and the buffer is built on the decode side of the pipeline while
//! the database commits the previous batch.

use super::rows::{PG_EPOCH_UNIX_US, TelemetryRow};
use crate::codec::Payload;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The telemetry columns in COPY order (the staging table has them all).
pub const TELEMETRY_COLUMNS: [&str; 29] = [
    "recv_time",
    "recv_epoch_ms",
    "sensor_id",
    "msg_type",
    "day",
    "time_s",
    "status",
    "status_flags",
    "x_m",
    "y_m",
    "z_m",
    "vx_mps",
    "vy_mps",
    "vz_mps",
    "ax_mps2",
    "ay_mps2",
    "az_mps2",
    "range_m",
    "azimuth_deg",
    "elevation_deg",
    "azimuth_rate_dps",
    "elevation_rate_dps",
    "range_rate_mps",
    "azimuth_accel_dps2",
    "elevation_accel_dps2",
    "range_accel_mps2",
    "raw",
    "msg_id",
    "stream_seq",
];
const FIELDS: i16 = TELEMETRY_COLUMNS.len() as i16;
const _: () = assert!(TELEMETRY_COLUMNS.len() == 8 + 18 + 3);

/// One COPY stream being built: header on creation, rows appended,
/// [`CopyBuf::finish`] adds the trailer. `clear` keeps the allocation.
#[derive(Clone, Debug)]
pub struct CopyBuf {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyBuf {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut c = CopyBuf {
            buf: Vec::with_capacity(bytes),
            rows: 0,
        };
        c.header();
        c
    }

    fn header(&mut self) {
        self.buf.extend_from_slice(SIGNATURE);
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // no extension
    }

    /// Back to just the header.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows = 0;
        self.header();
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The bytes so far (no trailer).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The complete stream: the bytes so far and the trailer.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 2);
        out.extend_from_slice(&self.buf);
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    pub fn begin_row(&mut self, fields: i16) {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    /// Append one row already encoded (taken from another stream of the
    /// same columns: how a bisected batch is rebuilt without decoding).
    pub fn push_row_bytes(&mut self, row: &[u8]) {
        self.rows += 1;
        self.buf.extend_from_slice(row);
    }

    fn field(&mut self, value: &[u8]) {
        self.buf
            .extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(value);
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn int2(&mut self, v: i16) {
        self.field(&v.to_be_bytes());
    }

    pub fn int4(&mut self, v: i32) {
        self.field(&v.to_be_bytes());
    }

    pub fn int8(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    pub fn float8(&mut self, v: f64) {
        self.field(&v.to_bits().to_be_bytes());
    }

    /// `text` or `bytea`: the bytes as they are.
    pub fn bytes_field(&mut self, v: &[u8]) {
        self.field(v);
    }

    /// `timestamptz`: microseconds since 2000-01-01 UTC.
    pub fn timestamptz_unix_us(&mut self, unix_us: i64) {
        self.int8(unix_us - PG_EPOCH_UNIX_US);
    }

    /// One telemetry row in [`TELEMETRY_COLUMNS`] order.
    pub fn telemetry(&mut self, row: &TelemetryRow, msg_id: &str, stream_seq: u64) {
        let f = &row.frame;
        self.begin_row(FIELDS);
        self.timestamptz_unix_us(row.recv_unix_us);
        self.int8(row.recv_epoch_ms);
        self.int4(i32::from(f.sensor_id));
        self.bytes_field(f.frame_type().name().as_bytes());
        self.int2(f.day as i16);
        self.float8(f.time_s());
        self.int2(i16::from(f.status));
        self.int4(i32::from(f.status_flags));
        let values = f.values();
        let geocentric = matches!(f.payload, Payload::Geocentric(_));
        for slot in [true, false] {
            for v in values {
                if slot == geocentric {
                    self.float8(v);
                } else {
                    self.null();
                }
            }
        }
        self.bytes_field(&f.encode());
        self.bytes_field(msg_id.as_bytes());
        self.int8(stream_seq as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, vectors};

    #[test]
    fn empty_stream_is_header_and_trailer() {
        let c = CopyBuf::with_capacity(64);
        let out = c.finish();
        assert_eq!(&out[..11], SIGNATURE);
        assert_eq!(&out[11..19], &[0; 8]);
        assert_eq!(&out[19..], &[0xff, 0xff]);
        assert!(c.is_empty());
    }

    #[test]
    fn telemetry_row_layout() {
        let frame = codec::parse(&vectors::bytes(vectors::SPHERICAL_2)).unwrap();
        let row = TelemetryRow {
            recv_unix_us: PG_EPOCH_UNIX_US + 5,
            recv_epoch_ms: 946_684_800_000,
            frame,
        };
        let mut c = CopyBuf::with_capacity(1024);
        c.telemetry(&row, "2048:42:92.3400", 7);
        assert_eq!(c.rows(), 1);
        let b = &c.bytes()[19..];
        assert_eq!(&b[..2], &29i16.to_be_bytes());
        // recv_time: 8 bytes, 5 µs after the PostgreSQL epoch.
        assert_eq!(&b[2..6], &8i32.to_be_bytes());
        assert_eq!(&b[6..14], &5i64.to_be_bytes());
        // Walk the fields: 9 geocentric NULLs, the raw datagram, msg_id, seq.
        let mut at = 2;
        let mut fields = Vec::new();
        for _ in 0..29 {
            let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                fields.push(None);
            } else {
                fields.push(Some(&b[at..at + len as usize]));
                at += len as usize;
            }
        }
        assert_eq!(at, b.len());
        assert_eq!(fields[3], Some(&b"spherical"[..]));
        assert!(fields[8..17].iter().all(Option::is_none));
        assert_eq!(fields[17], Some(&3800.0f64.to_bits().to_be_bytes()[..]));
        assert_eq!(fields[26], Some(&vectors::bytes(vectors::SPHERICAL_2)[..]));
        assert_eq!(fields[27], Some(&b"2048:42:92.3400"[..]));
        assert_eq!(fields[28], Some(&7i64.to_be_bytes()[..]));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes().len(), 19);
    }
}
