//! TSPI v4 datagram codec (CONTRACT §1).
//!
//! Pure: no I/O, no clock, no allocation. [`parse`] turns any byte slice into
//! a [`Frame`] or a typed [`ParseError`] and never panics; [`Frame::encode`]
//! is its exact inverse for every frame `parse` accepts.

use std::fmt;

/// Every TSPI v4 datagram is exactly this long.
pub const DATAGRAM_LEN: usize = 37;
/// Byte 1 of every accepted datagram.
pub const VERSION: u8 = 4;
/// Type byte of a geocentric datagram.
pub const TYPE_GEOCENTRIC: u8 = 0xC1;
/// Type byte of a spherical datagram.
pub const TYPE_SPHERICAL: u8 = 0xC2;
/// Valid days of year.
pub const DAY_MIN: u16 = 1;
/// Valid days of year (leap years have 366).
pub const DAY_MAX: u16 = 366;
/// Ticks per second of `time_ticks`.
pub const TICKS_PER_S: u32 = 10_000;
/// `time_ticks` must be below this: one day plus a leap second.
pub const TIME_TICKS_END: u32 = 864_010_000;

const PAYLOAD_OFFSET: usize = 13;
const _: () = assert!(PAYLOAD_OFFSET + 24 == DATAGRAM_LEN);

/// The two datagram types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// `0xC1`: earth-centred x, y, z and their derivatives.
    Geocentric,
    /// `0xC2`: range, azimuth, elevation and their derivatives, from a sensor site.
    Spherical,
}

impl FrameType {
    /// The type byte on the wire.
    pub const fn byte(self) -> u8 {
        match self {
            FrameType::Geocentric => TYPE_GEOCENTRIC,
            FrameType::Spherical => TYPE_SPHERICAL,
        }
    }

    /// The name used in subjects and message bodies.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Geocentric => "geocentric",
            FrameType::Spherical => "spherical",
        }
    }

    /// Both types, in type-byte order.
    pub const ALL: [FrameType; 2] = [FrameType::Geocentric, FrameType::Spherical];
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Geocentric payload, raw scaled integers as on the wire (metres and m/s
/// and m/s² times 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Geocentric {
    pub x: i32,
    pub y: i32,
    pub z: i32,
    pub vx: i16,
    pub vy: i16,
    pub vz: i16,
    pub ax: i16,
    pub ay: i16,
    pub az: i16,
}

/// Spherical payload, raw scaled integers as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Spherical {
    /// Metres × 100.
    pub range: i32,
    /// Degrees × 1 000 000.
    pub azimuth: u32,
    /// Degrees × 1 000 000.
    pub elevation: u32,
    /// Degrees/s × 100.
    pub azimuth_rate: i16,
    /// Degrees/s × 100.
    pub elevation_rate: i16,
    /// m/s × 100.
    pub range_rate: i16,
    /// Degrees/s² × 100.
    pub azimuth_accel: i16,
    /// Degrees/s² × 100.
    pub elevation_accel: i16,
    /// m/s² × 100.
    pub range_accel: i16,
}

/// The type-specific 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    Geocentric(Geocentric),
    Spherical(Spherical),
}

/// One accepted datagram. Fields hold the wire integers; the scaled
/// floating-point values are derived by [`Frame::values`] and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub sensor_id: u16,
    /// Day of year, 1..=366.
    pub day: u16,
    /// 1/10 000 s since midnight UTC, below [`TIME_TICKS_END`].
    pub time_ticks: u32,
    pub status: u8,
    pub status_flags: u16,
    pub payload: Payload,
}

/// Why a datagram was rejected. Each variant is one counted reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("length {len} bytes, a TSPI v4 datagram is exactly 37")]
    Length { len: usize },
    #[error("message type 0x{byte:02X}, expected 0xC1 (geocentric) or 0xC2 (spherical)")]
    Type { byte: u8 },
    #[error("version {byte}, expected 4")]
    Version { byte: u8 },
    #[error("day {day} out of range 1..=366")]
    Day { day: u16 },
    #[error("time_ticks {ticks} out of range (must be below 864010000)")]
    Time { ticks: u32 },
}

/// The rejection reasons, for counters indexed without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Length,
    Type,
    Version,
    Day,
    Time,
    /// Not the codec's: the sender is not on its listen address's source
    /// allow-list, so the datagram was not parsed (the receive path counts
    /// it; [`parse`] never returns it).
    Source,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Length,
        RejectReason::Type,
        RejectReason::Version,
        RejectReason::Day,
        RejectReason::Time,
        RejectReason::Source,
    ];

    /// Short label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            RejectReason::Length => "length",
            RejectReason::Type => "type",
            RejectReason::Version => "version",
            RejectReason::Day => "day",
            RejectReason::Time => "time",
            RejectReason::Source => "source",
        }
    }

    /// Index into a `[_; RejectReason::ALL.len()]` counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl ParseError {
    /// The counted reason of this rejection.
    pub const fn reason(&self) -> RejectReason {
        match self {
            ParseError::Length { .. } => RejectReason::Length,
            ParseError::Type { .. } => RejectReason::Type,
            ParseError::Version { .. } => RejectReason::Version,
            ParseError::Day { .. } => RejectReason::Day,
            ParseError::Time { .. } => RejectReason::Time,
        }
    }
}

#[inline(always)]
fn be_u16(b: &[u8; DATAGRAM_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be_u32(b: &[u8; DATAGRAM_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse one datagram. Checks, in order: length, type, version, day, time.
///
/// ```
/// use tspi::codec::{self, FrameType, ParseError, vectors};
///
/// let bytes = vectors::bytes(vectors::GEOCENTRIC_1);
/// let frame = codec::parse(&bytes).unwrap();
/// assert_eq!(frame.frame_type(), FrameType::Geocentric);
/// assert_eq!((frame.sensor_id, frame.day, frame.time_s()), (501, 123, 1.534));
/// assert_eq!(frame.encode().as_slice(), bytes.as_slice());
///
/// assert_eq!(codec::parse(&bytes[..36]), Err(ParseError::Length { len: 36 }));
/// ```
#[inline]
pub fn parse(bytes: &[u8]) -> Result<Frame, ParseError> {
    let b: &[u8; DATAGRAM_LEN] = bytes
        .try_into()
        .map_err(|_| ParseError::Length { len: bytes.len() })?;
    let frame_type = match b[0] {
        TYPE_GEOCENTRIC => FrameType::Geocentric,
        TYPE_SPHERICAL => FrameType::Spherical,
        byte => return Err(ParseError::Type { byte }),
    };
    if b[1] != VERSION {
        return Err(ParseError::Version { byte: b[1] });
    }
    let day = be_u16(b, 4);
    if !(DAY_MIN..=DAY_MAX).contains(&day) {
        return Err(ParseError::Day { day });
    }
    let time_ticks = be_u32(b, 6);
    if time_ticks >= TIME_TICKS_END {
        return Err(ParseError::Time { ticks: time_ticks });
    }
    let p = PAYLOAD_OFFSET;
    let i16_at = |at: usize| be_u16(b, at) as i16;
    let payload = match frame_type {
        FrameType::Geocentric => Payload::Geocentric(Geocentric {
            x: be_u32(b, p) as i32,
            y: be_u32(b, p + 4) as i32,
            z: be_u32(b, p + 8) as i32,
            vx: i16_at(p + 12),
            vy: i16_at(p + 14),
            vz: i16_at(p + 16),
            ax: i16_at(p + 18),
            ay: i16_at(p + 20),
            az: i16_at(p + 22),
        }),
        FrameType::Spherical => Payload::Spherical(Spherical {
            range: be_u32(b, p) as i32,
            azimuth: be_u32(b, p + 4),
            elevation: be_u32(b, p + 8),
            azimuth_rate: i16_at(p + 12),
            elevation_rate: i16_at(p + 14),
            range_rate: i16_at(p + 16),
            azimuth_accel: i16_at(p + 18),
            elevation_accel: i16_at(p + 20),
            range_accel: i16_at(p + 22),
        }),
    };
    Ok(Frame {
        sensor_id: be_u16(b, 2),
        day,
        time_ticks,
        status: b[10],
        status_flags: be_u16(b, 11),
        payload,
    })
}

/// Names of the nine validity booleans, bit 0 first (CONTRACT §1).
pub const VALIDITY_NAMES: [&str; 9] = [
    "position_x_valid",
    "position_y_valid",
    "position_z_valid",
    "velocity_x_valid",
    "velocity_y_valid",
    "velocity_z_valid",
    "acceleration_x_valid",
    "acceleration_y_valid",
    "acceleration_z_valid",
];

/// Names of the nine geocentric payload values, wire order.
pub const GEOCENTRIC_NAMES: [&str; 9] = [
    "x_m", "y_m", "z_m", "vx_mps", "vy_mps", "vz_mps", "ax_mps2", "ay_mps2", "az_mps2",
];

/// Names of the nine spherical payload values, wire order.
pub const SPHERICAL_NAMES: [&str; 9] = [
    "range_m",
    "azimuth_deg",
    "elevation_deg",
    "azimuth_rate_dps",
    "elevation_rate_dps",
    "range_rate_mps",
    "azimuth_accel_dps2",
    "elevation_accel_dps2",
    "range_accel_mps2",
];

impl Frame {
    /// The datagram type.
    #[inline]
    pub const fn frame_type(&self) -> FrameType {
        match self.payload {
            Payload::Geocentric(_) => FrameType::Geocentric,
            Payload::Spherical(_) => FrameType::Spherical,
        }
    }

    /// Seconds since midnight UTC, `time_ticks / 10000.0` (a division, as the
    /// contract requires).
    #[inline]
    pub fn time_s(&self) -> f64 {
        f64::from(self.time_ticks) / f64::from(TICKS_PER_S)
    }

    /// The nine validity booleans, bit i of `status | status_flags << 8`.
    #[inline]
    pub fn validity(&self) -> [bool; 9] {
        let combined = u32::from(self.status) | (u32::from(self.status_flags) << 8);
        std::array::from_fn(|i| combined & (1 << i) != 0)
    }

    /// Names of this frame's payload values, in the order of [`Frame::values`].
    #[inline]
    pub const fn value_names(&self) -> &'static [&'static str; 9] {
        match self.payload {
            Payload::Geocentric(_) => &GEOCENTRIC_NAMES,
            Payload::Spherical(_) => &SPHERICAL_NAMES,
        }
    }

    /// The nine payload values in physical units: each wire integer divided
    /// by its scale in double precision.
    #[inline]
    pub fn values(&self) -> [f64; 9] {
        const C: f64 = 100.0;
        const M: f64 = 1_000_000.0;
        match self.payload {
            Payload::Geocentric(g) => [
                f64::from(g.x) / C,
                f64::from(g.y) / C,
                f64::from(g.z) / C,
                f64::from(g.vx) / C,
                f64::from(g.vy) / C,
                f64::from(g.vz) / C,
                f64::from(g.ax) / C,
                f64::from(g.ay) / C,
                f64::from(g.az) / C,
            ],
            Payload::Spherical(s) => [
                f64::from(s.range) / C,
                f64::from(s.azimuth) / M,
                f64::from(s.elevation) / M,
                f64::from(s.azimuth_rate) / C,
                f64::from(s.elevation_rate) / C,
                f64::from(s.range_rate) / C,
                f64::from(s.azimuth_accel) / C,
                f64::from(s.elevation_accel) / C,
                f64::from(s.range_accel) / C,
            ],
        }
    }

    /// The exact 37 bytes of this frame. `parse(&f.encode()) == Ok(f)` for
    /// every frame whose day and time are in range.
    pub fn encode(&self) -> [u8; DATAGRAM_LEN] {
        let mut b = [0u8; DATAGRAM_LEN];
        b[0] = self.frame_type().byte();
        b[1] = VERSION;
        b[2..4].copy_from_slice(&self.sensor_id.to_be_bytes());
        b[4..6].copy_from_slice(&self.day.to_be_bytes());
        b[6..10].copy_from_slice(&self.time_ticks.to_be_bytes());
        b[10] = self.status;
        b[11..13].copy_from_slice(&self.status_flags.to_be_bytes());
        let (w32, w16): ([u32; 3], [i16; 6]) = match self.payload {
            Payload::Geocentric(g) => (
                [g.x as u32, g.y as u32, g.z as u32],
                [g.vx, g.vy, g.vz, g.ax, g.ay, g.az],
            ),
            Payload::Spherical(s) => (
                [s.range as u32, s.azimuth, s.elevation],
                [
                    s.azimuth_rate,
                    s.elevation_rate,
                    s.range_rate,
                    s.azimuth_accel,
                    s.elevation_accel,
                    s.range_accel,
                ],
            ),
        };
        let mut at = PAYLOAD_OFFSET;
        for v in w32 {
            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            at += 4;
        }
        for v in w16 {
            b[at..at + 2].copy_from_slice(&v.to_be_bytes());
            at += 2;
        }
        debug_assert_eq!(at, DATAGRAM_LEN);
        b
    }
}

pub mod vectors;

#[cfg(test)]
pub(crate) mod tests;
