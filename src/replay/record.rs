//! A telemetry body back to its 37-byte datagram, for the UDP sink when the
//! source kept only bodies (the `TSPI` stream). Pure.
//!
//! Every field is recovered exactly except the upper seven bits of
//! `status_flags` (bits 9..15 of the combined validity word), which the body
//! does not carry: they come back as zero. Captures and the archive keep
//! the original datagram and need none of this.

use crate::codec::{Frame, Geocentric, Payload, Spherical, TICKS_PER_S};
use crate::message::{PayloadValues, Record};

/// A body that does not describe a datagram.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("body is not a telemetry record: {0}")]
    Decode(String),
    #[error("{field} = {value} does not fit the datagram's field")]
    Range { field: &'static str, value: f64 },
    #[error("type {0:?} does not match its payload")]
    Type(String),
}

fn scaled<T: TryFrom<i64>>(field: &'static str, v: f64, scale: f64) -> Result<T, RecordError> {
    let n = (v * scale).round();
    if !n.is_finite() || n.abs() > 9.0e15 {
        return Err(RecordError::Range { field, value: v });
    }
    T::try_from(n as i64).map_err(|_| RecordError::Range { field, value: v })
}

/// The frame a record was made from (see the module note on `status_flags`).
pub fn frame_from_record(r: &Record) -> Result<Frame, RecordError> {
    let f = &r.status_flags;
    let high = [
        f.position_x_valid,
        f.position_y_valid,
        f.position_z_valid,
        f.velocity_x_valid,
        f.velocity_y_valid,
        f.velocity_z_valid,
        f.acceleration_x_valid,
        f.acceleration_y_valid,
    ];
    // Bits 0..7 of the combined word are `status`; only bit 8 is in
    // `status_flags`. The body's booleans must agree with `status`.
    for (i, &b) in high.iter().enumerate() {
        if b != (r.status & (1 << i) != 0) {
            return Err(RecordError::Decode(format!(
                "status {} disagrees with validity bit {i}",
                r.status
            )));
        }
    }
    let status_flags = u16::from(f.acceleration_z_valid);
    let time_ticks: u32 = scaled("time_s", r.time_s, f64::from(TICKS_PER_S))?;
    let payload = match (&r.payload, r.frame_type.as_str()) {
        (PayloadValues::Geocentric(g), "geocentric") => Payload::Geocentric(Geocentric {
            x: scaled("x_m", g.x_m, 100.0)?,
            y: scaled("y_m", g.y_m, 100.0)?,
            z: scaled("z_m", g.z_m, 100.0)?,
            vx: scaled("vx_mps", g.vx_mps, 100.0)?,
            vy: scaled("vy_mps", g.vy_mps, 100.0)?,
            vz: scaled("vz_mps", g.vz_mps, 100.0)?,
            ax: scaled("ax_mps2", g.ax_mps2, 100.0)?,
            ay: scaled("ay_mps2", g.ay_mps2, 100.0)?,
            az: scaled("az_mps2", g.az_mps2, 100.0)?,
        }),
        (PayloadValues::Spherical(s), "spherical") => Payload::Spherical(Spherical {
            range: scaled("range_m", s.range_m, 100.0)?,
            azimuth: scaled("azimuth_deg", s.azimuth_deg, 1e6)?,
            elevation: scaled("elevation_deg", s.elevation_deg, 1e6)?,
            azimuth_rate: scaled("azimuth_rate_dps", s.azimuth_rate_dps, 100.0)?,
            elevation_rate: scaled("elevation_rate_dps", s.elevation_rate_dps, 100.0)?,
            range_rate: scaled("range_rate_mps", s.range_rate_mps, 100.0)?,
            azimuth_accel: scaled("azimuth_accel_dps2", s.azimuth_accel_dps2, 100.0)?,
            elevation_accel: scaled("elevation_accel_dps2", s.elevation_accel_dps2, 100.0)?,
            range_accel: scaled("range_accel_mps2", s.range_accel_mps2, 100.0)?,
        }),
        _ => return Err(RecordError::Type(r.frame_type.clone())),
    };
    Ok(Frame {
        sensor_id: r.sensor_id,
        day: r.day,
        time_ticks,
        status: r.status,
        status_flags,
        payload,
    })
}

/// Decode a CBOR body and rebuild its frame.
pub fn frame_from_body(body: &[u8]) -> Result<Frame, RecordError> {
    let r: Record = ciborium::from_reader(body).map_err(|e| RecordError::Decode(e.to_string()))?;
    frame_from_record(&r)
}

#[cfg(test)]
mod tests;
