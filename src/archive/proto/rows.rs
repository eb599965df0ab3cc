//! Pure: JetStream message bodies to archive rows, or a reason to reject.
//!
//! A telemetry body (CONTRACT §2) is turned back into the [`Frame`] it was
//! made from. Every value must be exactly what the codec produces for some
//! wire integer (`int / scale` in double precision), so the row's `raw`
//! column, `frame.encode()`, decodes to bit-for-bit the values in the body.
//! Anything else (a body another tool made up, a corrupted one) is a reject
//! with a reason, never a guess.
//!
//! One loss is inherent in the contract and documented: the body carries
//! `status` and the nine validity booleans, i.e. bits 0..=8 of
//! `status | status_flags << 8`. Bits 1..=15 of the wire's `status_flags`
//! are not in the body, so the archived `status_flags` (and `raw`) hold
//! bit 0 only. A datagram whose `status_flags` is 0 or 1 (every sender in
//! the field today) re-encodes to exactly its original 37 bytes.

use crate::codec::{self, Frame, FrameType, Geocentric, Payload, Spherical, TICKS_PER_S};
use crate::message::{PayloadValues, Record};

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;
/// Microseconds per day.
pub const DAY_US: i64 = 86_400_000_000;

/// A telemetry row, ready for the binary COPY.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TelemetryRow {
    /// `recv_iso` as microseconds since the Unix epoch.
    pub recv_unix_us: i64,
    pub recv_epoch_ms: i64,
    pub frame: Frame,
}

impl TelemetryRow {
    /// UTC day number (days since 1970-01-01) of the receive time: the
    /// native partition this row goes to.
    pub fn day_index(&self) -> i32 {
        self.recv_unix_us.div_euclid(DAY_US) as i32
    }
}

/// Why a message was not archived as a row (it goes to `tspi_rejects`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("body is not the contract's CBOR map: {0}")]
    Cbor(String),
    #[error("unknown type {0:?} (expected geocentric or spherical)")]
    Type(String),
    #[error("payload keys do not match type {0}")]
    PayloadType(&'static str),
    #[error("{field} = {value:?}: not a value the TSPI v4 codec produces ({why})")]
    Value {
        field: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error("status {status} disagrees with status_flags booleans (bits 0..=7 are 0x{flags:02X})")]
    Status { status: u8, flags: u8 },
    #[error("re-encoded datagram is invalid: {0}")]
    Datagram(#[from] codec::ParseError),
    #[error("recv_iso {0:?} is not RFC 3339")]
    RecvIso(String),
    #[error("subject {subject:?} does not match the body ({expected})")]
    Subject { subject: String, expected: String },
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

impl Reject {
    /// Short label, for counters and the `reason_kind` column.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Cbor(_) => "cbor",
            Reject::Type(_) => "type",
            Reject::PayloadType(_) => "payload_type",
            Reject::Value { .. } => "value",
            Reject::Status { .. } => "status",
            Reject::Datagram(_) => "datagram",
            Reject::RecvIso(_) => "recv_iso",
            Reject::Subject { .. } => "subject",
            Reject::Field { .. } => "field",
        }
    }
}

/// The wire integer behind `v = int / scale`, if there is one in
/// `min..=max`: `round(v * scale)`, accepted only if dividing it back gives
/// `v` bit for bit.
fn wire_int(field: &'static str, v: f64, scale: f64, min: i64, max: i64) -> Result<i64, Reject> {
    if !v.is_finite() {
        return Err(Reject::Value {
            field,
            value: v,
            why: "not finite",
        });
    }
    let n = (v * scale).round();
    if n < min as f64 || n > max as f64 {
        return Err(Reject::Value {
            field,
            value: v,
            why: "out of the wire type's range",
        });
    }
    let n = n as i64;
    if (n as f64 / scale).to_bits() != v.to_bits() {
        return Err(Reject::Value {
            field,
            value: v,
            why: "not an integer divided by its scale",
        });
    }
    Ok(n)
}

const C: f64 = 100.0;
const M: f64 = 1_000_000.0;
const I16: (i64, i64) = (i16::MIN as i64, i16::MAX as i64);
const I32: (i64, i64) = (i32::MIN as i64, i32::MAX as i64);
const U32: (i64, i64) = (0, u32::MAX as i64);

fn i16v(field: &'static str, v: f64) -> Result<i16, Reject> {
    Ok(wire_int(field, v, C, I16.0, I16.1)? as i16)
}

fn i32v(field: &'static str, v: f64) -> Result<i32, Reject> {
    Ok(wire_int(field, v, C, I32.0, I32.1)? as i32)
}

fn u32v(field: &'static str, v: f64) -> Result<u32, Reject> {
    Ok(wire_int(field, v, M, U32.0, U32.1)? as u32)
}

/// RFC 3339 text to microseconds since the Unix epoch (finer digits are
/// truncated toward the past): the encoder's own shape by a fast path,
/// anything else by the one parser ([`crate::message::rfc3339`]).
pub fn parse_rfc3339_us(text: &str) -> Option<i64> {
    if let Some(us) = fast::iso_us(text.as_bytes()) {
        return Some(us);
    }
    let ns = crate::message::rfc3339::parse_rfc3339_ns(text).ok()?;
    i64::try_from(ns.div_euclid(1000)).ok()
}

/// Decode a telemetry body into its row. `subject`, when given, must be
/// `<prefix>.<type>.<sensor_id>` of the body.
pub fn decode_telemetry(body: &[u8], subject: Option<&str>) -> Result<TelemetryRow, Reject> {
    let r: Record = match fast::record(body) {
        Some(r) => r,
        // Not the exact layout our encoder writes (another tool's key order
        // or integer widths, or not a record at all): the general decoder
        // accepts any valid encoding and names what is wrong.
        None => ciborium::from_reader(body).map_err(|e| Reject::Cbor(e.to_string()))?,
    };
    let frame = record_frame(&r)?;
    if let Some(subject) = subject {
        let mut parts = subject.rsplitn(3, '.');
        let sensor = parts.next();
        let ty = parts.next();
        let ok = ty == Some(frame.frame_type().name())
            && sensor.and_then(|s| s.parse::<u16>().ok()) == Some(frame.sensor_id);
        if !ok {
            return Err(Reject::Subject {
                subject: subject.to_owned(),
                expected: format!("<prefix>.{}.{}", frame.frame_type(), frame.sensor_id),
            });
        }
    }
    let recv_unix_us =
        parse_rfc3339_us(&r.recv_iso).ok_or_else(|| Reject::RecvIso(r.recv_iso.clone()))?;
    let recv_epoch_ms = i64::try_from(r.recv_epoch_ms).map_err(|_| Reject::Field {
        field: "recv_epoch_ms",
        why: format!("{} does not fit a bigint", r.recv_epoch_ms),
    })?;
    Ok(TelemetryRow {
        recv_unix_us,
        recv_epoch_ms,
        frame,
    })
}

/// The frame a record was encoded from (see the module comment for what
/// `status_flags` keeps).
pub fn record_frame(r: &Record) -> Result<Frame, Reject> {
    let frame_type = match r.frame_type.as_str() {
        "geocentric" => FrameType::Geocentric,
        "spherical" => FrameType::Spherical,
        other => return Err(Reject::Type(other.to_owned())),
    };
    let time_ticks = wire_int(
        "time_s",
        r.time_s,
        f64::from(TICKS_PER_S),
        0,
        u32::MAX as i64,
    )?;
    let f = &r.status_flags;
    let bits = [
        f.position_x_valid,
        f.position_y_valid,
        f.position_z_valid,
        f.velocity_x_valid,
        f.velocity_y_valid,
        f.velocity_z_valid,
        f.acceleration_x_valid,
        f.acceleration_y_valid,
        f.acceleration_z_valid,
    ];
    let low = bits[..8]
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
    if low != r.status {
        return Err(Reject::Status {
            status: r.status,
            flags: low,
        });
    }
    let payload = match (frame_type, &r.payload) {
        (FrameType::Geocentric, PayloadValues::Geocentric(g)) => Payload::Geocentric(Geocentric {
            x: i32v("x_m", g.x_m)?,
            y: i32v("y_m", g.y_m)?,
            z: i32v("z_m", g.z_m)?,
            vx: i16v("vx_mps", g.vx_mps)?,
            vy: i16v("vy_mps", g.vy_mps)?,
            vz: i16v("vz_mps", g.vz_mps)?,
            ax: i16v("ax_mps2", g.ax_mps2)?,
            ay: i16v("ay_mps2", g.ay_mps2)?,
            az: i16v("az_mps2", g.az_mps2)?,
        }),
        (FrameType::Spherical, PayloadValues::Spherical(s)) => Payload::Spherical(Spherical {
            range: i32v("range_m", s.range_m)?,
            azimuth: u32v("azimuth_deg", s.azimuth_deg)?,
            elevation: u32v("elevation_deg", s.elevation_deg)?,
            azimuth_rate: i16v("azimuth_rate_dps", s.azimuth_rate_dps)?,
            elevation_rate: i16v("elevation_rate_dps", s.elevation_rate_dps)?,
            range_rate: i16v("range_rate_mps", s.range_rate_mps)?,
            azimuth_accel: i16v("azimuth_accel_dps2", s.azimuth_accel_dps2)?,
            elevation_accel: i16v("elevation_accel_dps2", s.elevation_accel_dps2)?,
            range_accel: i16v("range_accel_mps2", s.range_accel_mps2)?,
        }),
        (t, _) => return Err(Reject::PayloadType(t.name())),
    };
    let frame = Frame {
        sensor_id: r.sensor_id,
        day: r.day,
        time_ticks: time_ticks as u32,
        status: r.status,
        status_flags: u16::from(bits[8]),
        payload,
    };
    // Day and time range checks are the codec's.
    codec::parse(&frame.encode())?;
    Ok(frame)
}

mod fast;

// --- operator messages (CONTRACT §5) -----------------------------------------

pub use crate::message::ops::{
    BodyError, CommandBody, TagBody, decode_command, decode_tag, event_json, timestamp_us, to_json,
};

impl From<BodyError> for Reject {
    fn from(e: BodyError) -> Reject {
        match e {
            BodyError::Cbor(why) => Reject::Cbor(why),
            BodyError::Field { field, why } => Reject::Field { field, why },
        }
    }
}

/// Which table an operator-stream subject goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsKind {
    Tag,
    Command,
    Event,
}

/// `tags.broadcast` → tag, `tspi.cmd.display.*` → command, the rest of the
/// archived subjects → event.
pub fn ops_kind(subject: &str) -> OpsKind {
    if subject == "tags.broadcast" {
        OpsKind::Tag
    } else if subject.starts_with("tspi.cmd.display.") {
        OpsKind::Command
    } else {
        OpsKind::Event
    }
}

#[cfg(test)]
mod tests;
