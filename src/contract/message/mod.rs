//! The telemetry message of CONTRACT §2: subject, `Nats-Msg-Id` and CBOR body
//! of one accepted datagram, and the same record as JSON.
//!
//! Pure: the receive time is passed in, output goes into caller-owned
//! buffers that the hot path reuses. The CBOR writer is hand-rolled because
//! the body's shape is fixed (keys, order, float64 everywhere); it is checked
//! against ciborium in the tests and measured against it in `bench/codec.rs`.

pub mod ops;
pub mod rfc3339;

use crate::codec::{Frame, TICKS_PER_S, VALIDITY_NAMES};
use serde::Serialize;

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "tspi";

/// Largest body the encoder produces (a spherical message with the longest
/// numbers); buffers sized to this never grow.
pub const BODY_LEN_MAX: usize = 560;
/// Longest `Nats-Msg-Id`: `65535:366:86400.9999`.
pub const MSG_ID_LEN_MAX: usize = 20;

/// A wall-clock receive time, nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecvTime {
    pub unix_ns: u64,
}

/// Integer division rounding half to even, as Python's `round` does for the
/// existing toolkit.
const fn div_round_half_even(n: u64, d: u64) -> u64 {
    let q = n / d;
    let r = n % d;
    let twice = r * 2;
    if twice > d || (twice == d && q % 2 == 1) {
        q + 1
    } else {
        q
    }
}

impl RecvTime {
    pub const fn from_unix_ns(unix_ns: u64) -> Self {
        RecvTime { unix_ns }
    }

    /// `recv_epoch_ms`: milliseconds, rounded half to even.
    pub const fn epoch_ms(self) -> u64 {
        div_round_half_even(self.unix_ns, 1_000_000)
    }

    /// Microseconds, rounded half to even (the precision of `recv_iso`).
    pub const fn epoch_us(self) -> u64 {
        div_round_half_even(self.unix_ns, 1_000)
    }

    /// `recv_iso`: RFC 3339 UTC with microseconds,
    /// `2023-11-14T22:13:20.123400+00:00` (32 ASCII bytes), or without the
    /// fraction when the microsecond part is zero,
    /// `2023-11-14T22:13:20+00:00` (25 bytes), as Python's
    /// `datetime.isoformat()` in the existing toolkit writes it (CONTRACT
    /// §2: consumers compare these strings). No allocation.
    pub fn iso(self) -> IsoTime {
        let us = self.epoch_us();
        let secs = us / 1_000_000;
        let micros = (us % 1_000_000) as u32;
        let days = (secs / 86_400) as i64;
        let sod = (secs % 86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00.000000+00:00";
        put_digits(&mut b[0..4], y as u32);
        put_digits(&mut b[5..7], m);
        put_digits(&mut b[8..10], d);
        put_digits(&mut b[11..13], sod / 3600);
        put_digits(&mut b[14..16], sod / 60 % 60);
        put_digits(&mut b[17..19], sod % 60);
        if micros == 0 {
            b.copy_within(26..32, 19);
            return IsoTime {
                buf: b,
                len: ISO_LEN_WHOLE as u8,
            };
        }
        put_digits(&mut b[20..26], micros);
        IsoTime {
            buf: b,
            len: ISO_LEN as u8,
        }
    }
}

/// `recv_iso` text as [`RecvTime::iso`] renders it: [`ISO_LEN`] or
/// [`ISO_LEN_WHOLE`] ASCII bytes, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IsoTime {
    buf: [u8; ISO_LEN],
    len: u8,
}

impl IsoTime {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits and punctuation by construction.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::ops::Deref for IsoTime {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for IsoTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for IsoTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TSPI day of year (1-based) and `time_ticks` of a UTC instant, as a
/// sender stamps its datagrams.
pub fn utc_day_ticks(unix_ns: u64) -> (u16, u32) {
    let days = (unix_ns / 86_400_000_000_000) as i64;
    let ticks = ((unix_ns % 86_400_000_000_000) / 100_000) as u32;
    let (y, _, _) = civil_from_days(days);
    // Days since 1 January of that year: the epoch day of 1 January is
    // found by stepping back through the day of the year.
    let jan1 = days_from_civil(y, 1, 1);
    ((days - jan1 + 1) as u16, ticks)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's
/// `days_from_civil`), the inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Length of [`RecvTime::iso`] with a fraction (the longest).
pub const ISO_LEN: usize = 32;
/// Length of [`RecvTime::iso`] for a whole second (no fraction).
pub const ISO_LEN_WHOLE: usize = 25;

/// Zero-padded decimal of `v` into all of `out`.
fn put_digits(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Append `<prefix>.<type>.<sensor_id>` to `out`.
pub fn write_subject(prefix: &str, frame: &Frame, out: &mut String) {
    out.push_str(prefix);
    out.push('.');
    out.push_str(frame.frame_type().name());
    out.push('.');
    push_u64(out, u64::from(frame.sensor_id));
}

/// Append the `Nats-Msg-Id` `<sensor_id>:<day>:<seconds>.<4 digits>` to
/// `out`, built from the integer ticks (no float rounding).
pub fn write_msg_id(frame: &Frame, out: &mut String) {
    push_u64(out, u64::from(frame.sensor_id));
    out.push(':');
    push_u64(out, u64::from(frame.day));
    out.push(':');
    push_u64(out, u64::from(frame.time_ticks / TICKS_PER_S));
    out.push('.');
    let mut frac = [0u8; 4];
    put_digits(&mut frac, frame.time_ticks % TICKS_PER_S);
    // The digits are ASCII by construction.
    out.push_str(std::str::from_utf8(&frac).unwrap_or("0000"));
}

/// Decimal digits of `v` (no `fmt` machinery: this runs three times per
/// datagram; see `bench/codec.rs`, group `message`).
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits by construction.
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or("0"));
}

// --- CBOR (RFC 8949), only the items the body uses -------------------------

const MAJOR_UINT: u8 = 0x00;
const MAJOR_TEXT: u8 = 0x60;
const MAJOR_MAP: u8 = 0xA0;
const CBOR_FALSE: u8 = 0xF4;
const CBOR_TRUE: u8 = 0xF5;
const CBOR_FLOAT64: u8 = 0xFB;

/// Item head with the shortest argument encoding (as every CBOR encoder the
/// toolkit uses produces).
#[inline(always)]
fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    if arg < 24 {
        out.push(major | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        out.extend_from_slice(&[major | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        out.push(major | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        out.push(major | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

#[inline(always)]
fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline(always)]
fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.push(CBOR_FLOAT64);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// Append the CBOR body of CONTRACT §2 for `frame` received at `recv`:
/// a map of exactly `type, sensor_id, day, time_s, status, status_flags,
/// recv_epoch_ms, recv_iso, payload`, in that order, every float a float64.
pub fn encode_cbor(frame: &Frame, recv: RecvTime, out: &mut Vec<u8>) {
    out.reserve(BODY_LEN_MAX);
    put_head(out, MAJOR_MAP, 9);
    put_text(out, "type");
    put_text(out, frame.frame_type().name());
    put_text(out, "sensor_id");
    put_head(out, MAJOR_UINT, u64::from(frame.sensor_id));
    put_text(out, "day");
    put_head(out, MAJOR_UINT, u64::from(frame.day));
    put_text(out, "time_s");
    put_f64(out, frame.time_s());
    put_text(out, "status");
    put_head(out, MAJOR_UINT, u64::from(frame.status));
    put_text(out, "status_flags");
    put_head(out, MAJOR_MAP, 9);
    for (name, valid) in VALIDITY_NAMES.iter().zip(frame.validity()) {
        put_text(out, name);
        out.push(if valid { CBOR_TRUE } else { CBOR_FALSE });
    }
    put_text(out, "recv_epoch_ms");
    put_head(out, MAJOR_UINT, recv.epoch_ms());
    put_text(out, "recv_iso");
    let iso = recv.iso();
    put_head(out, MAJOR_TEXT, iso.len() as u64);
    out.extend_from_slice(&iso);
    put_text(out, "payload");
    put_head(out, MAJOR_MAP, 9);
    for (name, v) in frame.value_names().iter().zip(frame.values()) {
        put_text(out, name);
        put_f64(out, v);
    }
}

/// One complete message, owned. The hot path uses the `write_*` and
/// [`encode_cbor`] functions with reused buffers instead.
///
/// ```
/// use tspi::codec::{self, vectors};
/// use tspi::message::{Message, Record, RecvTime};
///
/// let frame = codec::parse(&vectors::bytes(vectors::SPHERICAL_2)).unwrap();
/// let recv = RecvTime::from_unix_ns(1_700_000_000_123_400_000);
/// let msg = Message::encode("tspi", &frame, recv);
/// assert_eq!(msg.subject, "tspi.spherical.2048");
/// assert_eq!(msg.msg_id, "2048:42:92.3400");
/// let record = Record::new(&frame, recv);
/// assert_eq!(record.recv_iso, "2023-11-14T22:13:20.123400+00:00");
/// assert_eq!(record.recv_epoch_ms, 1_700_000_000_123);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub subject: String,
    pub msg_id: String,
    pub body: Vec<u8>,
}

impl Message {
    pub fn encode(prefix: &str, frame: &Frame, recv: RecvTime) -> Self {
        let mut subject = String::with_capacity(prefix.len() + 17);
        write_subject(prefix, frame, &mut subject);
        let mut msg_id = String::with_capacity(MSG_ID_LEN_MAX);
        write_msg_id(frame, &mut msg_id);
        let mut body = Vec::with_capacity(BODY_LEN_MAX);
        encode_cbor(frame, recv, &mut body);
        Message {
            subject,
            msg_id,
            body,
        }
    }
}

// --- JSON form ---------------------------------------------------------------

/// The nine validity booleans, named.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFlags {
    pub position_x_valid: bool,
    pub position_y_valid: bool,
    pub position_z_valid: bool,
    pub velocity_x_valid: bool,
    pub velocity_y_valid: bool,
    pub velocity_z_valid: bool,
    pub acceleration_x_valid: bool,
    pub acceleration_y_valid: bool,
    pub acceleration_z_valid: bool,
}

/// Geocentric payload in physical units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeocentricValues {
    pub x_m: f64,
    pub y_m: f64,
    pub z_m: f64,
    pub vx_mps: f64,
    pub vy_mps: f64,
    pub vz_mps: f64,
    pub ax_mps2: f64,
    pub ay_mps2: f64,
    pub az_mps2: f64,
}

/// Spherical payload in physical units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphericalValues {
    pub range_m: f64,
    pub azimuth_deg: f64,
    pub elevation_deg: f64,
    pub azimuth_rate_dps: f64,
    pub elevation_rate_dps: f64,
    pub range_rate_mps: f64,
    pub azimuth_accel_dps2: f64,
    pub elevation_accel_dps2: f64,
    pub range_accel_mps2: f64,
}

/// Either payload; which one is told by the record's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PayloadValues {
    Geocentric(GeocentricValues),
    Spherical(SphericalValues),
}

impl PayloadValues {
    /// The nine values of a frame type, in contract order (as
    /// [`Frame::values`] gives them).
    pub fn from_values(frame_type: crate::codec::FrameType, v: [f64; 9]) -> Self {
        match frame_type {
            crate::codec::FrameType::Geocentric => PayloadValues::Geocentric(GeocentricValues {
                x_m: v[0],
                y_m: v[1],
                z_m: v[2],
                vx_mps: v[3],
                vy_mps: v[4],
                vz_mps: v[5],
                ax_mps2: v[6],
                ay_mps2: v[7],
                az_mps2: v[8],
            }),
            crate::codec::FrameType::Spherical => PayloadValues::Spherical(SphericalValues {
                range_m: v[0],
                azimuth_deg: v[1],
                elevation_deg: v[2],
                azimuth_rate_dps: v[3],
                elevation_rate_dps: v[4],
                range_rate_mps: v[5],
                azimuth_accel_dps2: v[6],
                elevation_accel_dps2: v[7],
                range_accel_mps2: v[8],
            }),
        }
    }
}

impl From<[bool; 9]> for StatusFlags {
    /// The nine validity booleans in contract order (as
    /// [`Frame::validity`] gives them).
    fn from(f: [bool; 9]) -> Self {
        StatusFlags {
            position_x_valid: f[0],
            position_y_valid: f[1],
            position_z_valid: f[2],
            velocity_x_valid: f[3],
            velocity_y_valid: f[4],
            velocity_z_valid: f[5],
            acceleration_x_valid: f[6],
            acceleration_y_valid: f[7],
            acceleration_z_valid: f[8],
        }
    }
}

/// The telemetry record, field for field the CBOR body, in the same order.
/// Serialises to the contract's JSON form; deserialises from the CBOR body
/// (with ciborium) or the JSON form.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    #[serde(rename = "type")]
    pub frame_type: String,
    pub sensor_id: u16,
    pub day: u16,
    pub time_s: f64,
    pub status: u8,
    pub status_flags: StatusFlags,
    pub recv_epoch_ms: u64,
    pub recv_iso: String,
    pub payload: PayloadValues,
}

impl Record {
    pub fn new(frame: &Frame, recv: RecvTime) -> Self {
        let f = frame.validity();
        let payload = PayloadValues::from_values(frame.frame_type(), frame.values());
        Record {
            frame_type: frame.frame_type().name().to_owned(),
            sensor_id: frame.sensor_id,
            day: frame.day,
            time_s: frame.time_s(),
            status: frame.status,
            status_flags: StatusFlags::from(f),
            recv_epoch_ms: recv.epoch_ms(),
            recv_iso: recv.iso().as_str().to_owned(),
            payload,
        }
    }

    /// One line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        // A struct of plain numbers, booleans and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
