//! Pure: the player's check of a telemetry body against the contract
//! (CONTRACT §2, `schema/tspi.schema.json`).
//!
//! **Why a strict decoder and not the schema itself.** The schema describes
//! the JSON rendering; the wire carries CBOR. Validating with the schema
//! would mean CBOR → JSON value → validator → typed record for every
//! message, and a JSON Schema engine in the shipped binary (`jsonschema` is
//! a dev-dependency only, on purpose). Instead [`check`] decodes the CBOR
//! straight into [`Record`] (`deny_unknown_fields` at every level, so no
//! additional property; serde's integer types bound `sensor_id`, `status`)
//! and then checks what types alone cannot: `type` is one of the two names,
//! the payload's nine names are the ones of that type, `day` 1..=366,
//! `time_s` in `[0, 86401)`, `recv_iso` matches the schema's pattern, and
//! each payload value lies in its schema range. A property test
//! (`agrees_with_the_json_schema` below) feeds valid and mutated bodies to
//! both this decoder and the schema (via `jsonschema`) and requires the same
//! verdict, so the two cannot drift apart silently.
//!
//! One difference is by design: CBOR tells a float from an integer and
//! JSON does not. The contract writes every float field as a CBOR float64
//! and every count as an unsigned integer; the decoder refuses an integer
//! where a float belongs (`"time_s": 0`) and a float where an integer
//! belongs (`"day": 5.0`), both of which the schema's `number`/`integer`
//! would let through. The property test states exactly this: decoder
//! verdict = schema verdict and the CBOR item types of the contract.

use crate::message::{PayloadValues, Record};

/// Why a body is not a contract telemetry record.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("not the contract's CBOR record: {0}")]
    Decode(String),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

fn field(field: &'static str, why: impl Into<String>) -> BodyError {
    BodyError::Field {
        field,
        why: why.into(),
    }
}

/// Largest magnitude of a 32-bit value / 100 (`x_m`, `range_m`, ...).
const I32_CENTI: (f64, f64) = (-21_474_836.48, 21_474_836.47);
/// Range of a 16-bit value / 100 (rates and accelerations).
const I16_CENTI: (f64, f64) = (-327.68, 327.67);
/// Range of an unsigned 32-bit value / 1e6 (azimuth, elevation).
const U32_MICRO: (f64, f64) = (0.0, 4294.967295);

fn in_range(name: &'static str, v: f64, (lo, hi): (f64, f64)) -> Result<(), BodyError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(field(name, format!("{v} is outside {lo}..={hi}")))
    }
}

/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?\+00:00$`
/// (the schema's pattern; a shape check, as the schema's is).
pub fn recv_iso_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let shape: &[u8] = match b.len() {
        25 => b"dddd-dd-ddTdd:dd:dd+00:00",
        32 => b"dddd-dd-ddTdd:dd:dd.dddddd+00:00",
        _ => return false,
    };
    b.iter().zip(shape).all(|(&c, &want)| match want {
        b'd' => c.is_ascii_digit(),
        w => c == w,
    })
}

/// Decode and check one telemetry body; the record on success.
pub fn check(body: &[u8]) -> Result<Record, BodyError> {
    let v: ciborium::Value =
        ciborium::from_reader(body).map_err(|e| BodyError::Decode(e.to_string()))?;
    floats_are_floats(&v)?;
    let r: Record = v
        .deserialized()
        .map_err(|e| BodyError::Decode(e.to_string()))?;
    check_record(&r)?;
    Ok(r)
}

/// `time_s` and the payload's values are CBOR floats, never integers
/// (serde would widen an integer inside the untagged payload, and not at
/// the top level: one rule for both). Other shapes are left to serde.
fn floats_are_floats(v: &ciborium::Value) -> Result<(), BodyError> {
    use ciborium::Value as V;
    let Some(top) = v.as_map() else {
        return Ok(());
    };
    for (k, val) in top {
        match (k.as_text(), val) {
            (Some("time_s"), V::Integer(_)) => {
                return Err(field(
                    "time_s",
                    "an integer where the contract writes a float",
                ));
            }
            (Some("payload"), V::Map(m)) => {
                if let Some((name, _)) = m.iter().find(|(_, x)| x.is_integer()) {
                    return Err(field(
                        "payload",
                        format!(
                            "{} is an integer where the contract writes a float",
                            name.as_text().unwrap_or("a value")
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The checks beyond types (see the module note).
pub fn check_record(r: &Record) -> Result<(), BodyError> {
    if !(1..=366).contains(&r.day) {
        return Err(field("day", format!("{} is outside 1..=366", r.day)));
    }
    if !(r.time_s.is_finite() && r.time_s >= 0.0 && r.time_s < 86_401.0) {
        return Err(field(
            "time_s",
            format!("{} is outside [0, 86401)", r.time_s),
        ));
    }
    if !recv_iso_ok(&r.recv_iso) {
        return Err(field(
            "recv_iso",
            format!("{:?} is not RFC 3339 UTC (+00:00)", r.recv_iso),
        ));
    }
    match (r.frame_type.as_str(), &r.payload) {
        ("geocentric", PayloadValues::Geocentric(g)) => {
            for (n, v) in [("x_m", g.x_m), ("y_m", g.y_m), ("z_m", g.z_m)] {
                in_range(n, v, I32_CENTI)?;
            }
            for (n, v) in [
                ("vx_mps", g.vx_mps),
                ("vy_mps", g.vy_mps),
                ("vz_mps", g.vz_mps),
                ("ax_mps2", g.ax_mps2),
                ("ay_mps2", g.ay_mps2),
                ("az_mps2", g.az_mps2),
            ] {
                in_range(n, v, I16_CENTI)?;
            }
        }
        ("spherical", PayloadValues::Spherical(s)) => {
            in_range("range_m", s.range_m, I32_CENTI)?;
            in_range("azimuth_deg", s.azimuth_deg, U32_MICRO)?;
            in_range("elevation_deg", s.elevation_deg, U32_MICRO)?;
            for (n, v) in [
                ("azimuth_rate_dps", s.azimuth_rate_dps),
                ("elevation_rate_dps", s.elevation_rate_dps),
                ("range_rate_mps", s.range_rate_mps),
                ("azimuth_accel_dps2", s.azimuth_accel_dps2),
                ("elevation_accel_dps2", s.elevation_accel_dps2),
                ("range_accel_mps2", s.range_accel_mps2),
            ] {
                in_range(n, v, I16_CENTI)?;
            }
        }
        ("geocentric" | "spherical", _) => {
            return Err(field("payload", format!("not a {} payload", r.frame_type)));
        }
        (other, _) => {
            return Err(field(
                "type",
                format!("{other:?} is neither geocentric nor spherical"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
