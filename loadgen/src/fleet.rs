//! The fleet: tracks laid out in `airshow` show boxes (formation teams:
//! loops, rolls, opposing passes, vertical climbs and dives) or as `normal`
//! traffic (orbits, racetracks, transits), each a sensor with its own id.

use crate::geo::{Geodetic, LocalFrame, V3, add};
use crate::motion::{Circuit, Roll, State};
use crate::{geo, layout, motion};
use std::sync::Arc;
use tspi::codec::{Frame, FrameType, Geocentric, Payload, Spherical};

/// How the fleet flies.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// Formation teams over show boxes: tight vics and echelons, loops,
    /// formation rolls, opposing passes, vertical climbs and dives.
    Airshow,
    /// Cruise traffic: orbits, racetracks and long transits.
    Normal,
}

/// Which datagram types the fleet emits.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Every track geocentric (earth-centred x, y, z).
    Geocentric,
    /// Every track spherical, seen from a sensor site.
    Spherical,
    /// Every `spherical_every`-th track spherical, the rest geocentric.
    Mixed,
}

/// The most tracks a fleet can have: TSPI v4's `sensor_id` is 16 bits and
/// every track needs its own (its `Nats-Msg-Id` is `<sensor>:<day>:<time>`,
/// so two tracks sharing an id would deduplicate each other's datagrams).
/// Offer more load with a higher rate per track instead.
pub const TRACKS_MAX: u32 = 65_535;
/// Highest update rate per track: consecutive datagrams of a track must fall
/// in different 0.1 ms ticks, or their ids would collide.
pub const RATE_HZ_MAX: f64 = 1_000.0;

/// Everything that decides a fleet. Same config (seed included), same
/// datagrams for the same schedule, byte for byte (on one platform: the
/// trigonometry is the platform's `libm`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub style: Style,
    /// Number of tracks, 1..=[`TRACKS_MAX`].
    pub tracks: u32,
    pub seed: u64,
    /// The range origin; the fleet flies in its east-north-up frame.
    pub origin: Geodetic,
    pub output: Output,
    /// With [`Output::Mixed`], every n-th track is spherical.
    pub spherical_every: u32,
    /// Sensor sites for spherical datagrams; empty: one per show box
    /// (airshow) or a ring of four 45 km out (normal).
    pub sites: Vec<Geodetic>,
    /// The first track's sensor id; track k gets `sensor_id_base + k`.
    pub sensor_id_base: u16,
    /// Speeds are drawn from this range (m/s); `None`: the style's default
    /// (airshow 120-180, normal 90-240).
    pub speed_mps: Option<(f64, f64)>,
}

impl FleetConfig {
    /// A fleet of `tracks` of `style` around White Sands (32.5° N, 106.5° W,
    /// 1200 m), geocentric output.
    pub fn new(style: Style, tracks: u32, seed: u64) -> Self {
        FleetConfig {
            style,
            tracks,
            seed,
            origin: Geodetic {
                lat_deg: 32.5,
                lon_deg: -106.5,
                alt_m: 1200.0,
            },
            output: Output::Geocentric,
            spherical_every: 4,
            sites: Vec::new(),
            sensor_id_base: 1,
            speed_mps: None,
        }
    }
}

/// Why a fleet cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    #[error(
        "{0} tracks: TSPI v4 sensor ids are 16 bits, so at most 65535 tracks can have ids of their own; offer more load with a higher --rate-hz instead"
    )]
    TooManyTracks(u32),
    #[error("a fleet needs at least one track")]
    NoTracks,
    #[error(
        "sensor ids {base}..={last} do not fit in 1..=65535 (lower the base or the track count)"
    )]
    SensorIds { base: u32, last: u32 },
    #[error(
        "speeds {0}..{1} m/s: choose 30 <= min <= max <= 250 (the datagram holds ±327.67 m/s, formation rolls add speed)"
    )]
    Speed(f64, f64),
    #[error("spherical_every must be at least 1")]
    SphericalEvery,
    #[error("origin latitude {0}° is outside -85..=85")]
    Origin(f64),
    #[error(
        "track {track} (sensor {sensor_id}) is not seen well from any sensor site (it must stay 1 km or more off a site horizontally and 0.5° or more above its horizon): add a --site near it or use geocentric output"
    )]
    NoSite { track: u32, sensor_id: u16 },
    #[error(
        "track {track}: a value leaves the datagram's integer range ({what}); this is a bug in the fleet design"
    )]
    OutOfRange { track: u32, what: &'static str },
    #[error(transparent)]
    Circuit(#[from] motion::CircuitError),
}

/// One track: a circuit flown with a time shift, a formation offset (and
/// the team's roll), placed in the range by a linear map and a translation.
#[derive(Clone, Debug)]
pub(crate) struct Track {
    pub circuit: u32,
    pub shift_s: f64,
    pub offset: V3,
    pub roll: Option<Roll>,
    /// Columns: images of the local x, y, z axes in ENU.
    pub m: [V3; 3],
    pub b: V3,
    pub sensor_id: u16,
    /// Index into the sites, or `None` for geocentric output.
    pub site: Option<u16>,
}

/// Sensor site for spherical datagrams.
#[derive(Clone, Debug)]
pub struct Site {
    pub at: Geodetic,
    pub frame: LocalFrame,
}

/// A built fleet: every track's motion, ready to be sampled at any time.
#[derive(Clone, Debug)]
pub struct Fleet {
    config: FleetConfig,
    origin: LocalFrame,
    circuits: Vec<Circuit>,
    tracks: Vec<Track>,
    sites: Vec<Site>,
}

/// Status bits: all nine values valid (`status` 0xFF, `status_flags` bit 0).
const STATUS_ALL_VALID: (u8, u16) = (0xFF, 0x0001);

impl Fleet {
    /// Lay the fleet out, and check that every track's values fit the
    /// datagram over a whole circuit (sampled) and that spherical tracks are
    /// well seen from their site.
    pub fn new(config: FleetConfig) -> Result<Arc<Fleet>, FleetError> {
        let c = &config;
        if c.tracks == 0 {
            return Err(FleetError::NoTracks);
        }
        if c.tracks > TRACKS_MAX {
            return Err(FleetError::TooManyTracks(c.tracks));
        }
        let last = u32::from(c.sensor_id_base) + c.tracks - 1;
        if c.sensor_id_base == 0 || last > 65_535 {
            return Err(FleetError::SensorIds {
                base: u32::from(c.sensor_id_base),
                last,
            });
        }
        if c.spherical_every == 0 {
            return Err(FleetError::SphericalEvery);
        }
        if !(-85.0..=85.0).contains(&c.origin.lat_deg) {
            return Err(FleetError::Origin(c.origin.lat_deg));
        }
        let speed = c.speed_mps.unwrap_or(match c.style {
            Style::Airshow => (120.0, 180.0),
            Style::Normal => (90.0, 240.0),
        });
        if !(30.0 <= speed.0 && speed.0 <= speed.1 && speed.1 <= 250.0) {
            return Err(FleetError::Speed(speed.0, speed.1));
        }
        let origin = LocalFrame::new(c.origin);
        let laid = match c.style {
            Style::Airshow => layout::airshow(c, speed)?,
            Style::Normal => layout::normal(c, speed)?,
        };
        let mut sites: Vec<Site> = c
            .sites
            .iter()
            .map(|&at| Site {
                at,
                frame: LocalFrame::new(at),
            })
            .collect();
        let configured_sites = sites.len();
        if configured_sites == 0 {
            for p in &laid.auto_sites {
                let at = Geodetic::from_ecef(origin.point_to_ecef(*p));
                sites.push(Site {
                    at,
                    frame: LocalFrame::new(at),
                });
            }
        }
        let mut fleet = Fleet {
            config: config.clone(),
            origin,
            circuits: laid.circuits,
            tracks: laid.tracks,
            sites,
        };
        for k in 0..fleet.tracks.len() {
            let spherical = match c.output {
                Output::Geocentric => false,
                Output::Spherical => true,
                Output::Mixed => k as u32 % c.spherical_every == c.spherical_every - 1,
            };
            if spherical {
                let preferred = if configured_sites == 0 {
                    laid.auto_site_of[k]
                } else {
                    0
                };
                fleet.tracks[k].site = Some(fleet.choose_site(k, preferred)?);
            }
            fleet.check_ranges(k)?;
        }
        Ok(Arc::new(fleet))
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn tracks(&self) -> u32 {
        self.tracks.len() as u32
    }

    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    pub fn origin(&self) -> &LocalFrame {
        &self.origin
    }

    /// Sensor id of track `k`.
    pub fn sensor_id(&self, k: u32) -> u16 {
        self.tracks[k as usize].sensor_id
    }

    /// Datagram type of track `k`.
    pub fn frame_type(&self, k: u32) -> FrameType {
        if self.tracks[k as usize].site.is_some() {
            FrameType::Spherical
        } else {
            FrameType::Geocentric
        }
    }

    /// The track a datagram of `sensor_id` belongs to, if any.
    pub fn track_of(&self, sensor_id: u16) -> Option<u32> {
        let k = u32::from(sensor_id).checked_sub(u32::from(self.config.sensor_id_base))?;
        (k < self.tracks()).then_some(k)
    }

    /// Period of track `k`'s circuit (its motion repeats after this).
    pub fn period_s(&self, k: u32) -> f64 {
        self.circuits[self.tracks[k as usize].circuit as usize].period_s()
    }

    /// Instants in one period of track `k` where its acceleration may step
    /// (a pull starts or ends), in track time.
    pub fn acceleration_steps_s(&self, k: u32) -> Vec<f64> {
        let t = &self.tracks[k as usize];
        self.circuits[t.circuit as usize]
            .piece_starts_s()
            .map(|s| s - t.shift_s)
            .collect()
    }

    /// Track `k`'s position, velocity and acceleration in the range's ENU
    /// frame, `t_s` seconds after the fleet's start.
    #[inline]
    pub fn state_enu(&self, k: u32, t_s: f64) -> State {
        let tr = &self.tracks[k as usize];
        let circuit = &self.circuits[tr.circuit as usize];
        let tc = (t_s + tr.shift_s).rem_euclid(circuit.period_s());
        let s = circuit.state(tc);
        let off = match tr.roll {
            Some(r) => r.offset(tr.offset, tc),
            None => State {
                p: tr.offset,
                ..State::default()
            },
        };
        let map = |v: V3| -> V3 {
            std::array::from_fn(|i| tr.m[0][i] * v[0] + tr.m[1][i] * v[1] + tr.m[2][i] * v[2])
        };
        State {
            p: add(tr.b, map(add(s.p, off.p))),
            v: map(add(s.v, off.v)),
            a: map(add(s.a, off.a)),
        }
    }

    /// The same in earth-centred coordinates (m, m/s, m/s²).
    #[inline]
    pub fn state_ecef(&self, k: u32, t_s: f64) -> State {
        let s = self.state_enu(k, t_s);
        State {
            p: self.origin.point_to_ecef(s.p),
            v: self.origin.vec_to_ecef(s.v),
            a: self.origin.vec_to_ecef(s.a),
        }
    }

    /// The sensor site of track `k` (spherical tracks only): where a
    /// receiver must place the sensor (`[[console.site]]`) to turn its
    /// range, azimuth and elevation back into a position.
    pub fn site_of(&self, k: u32) -> Option<&Site> {
        Some(&self.sites[usize::from(self.tracks[k as usize].site?)])
    }

    /// Track `k` as seen from its site (spherical tracks only).
    pub fn spherical_state(&self, k: u32, t_s: f64) -> Option<geo::SphericalState> {
        let site = &self.sites[usize::from(self.tracks[k as usize].site?)];
        Some(self.seen_from(site, self.state_ecef(k, t_s)))
    }

    fn seen_from(&self, site: &Site, s: State) -> geo::SphericalState {
        geo::spherical(
            site.frame.point_from_ecef(s.p),
            site.frame.vec_from_ecef(s.v),
            site.frame.vec_from_ecef(s.a),
        )
    }

    /// Track `k`'s datagram for `t_s` after the start, stamped `day`/`ticks`.
    /// Values are rounded to the wire's resolution; a value that would not
    /// fit (which [`Fleet::new`]'s checks rule out) saturates and is counted
    /// in `out_of_range`.
    #[inline]
    pub fn frame(&self, k: u32, t_s: f64, day: u16, ticks: u32, out_of_range: &mut u64) -> Frame {
        let tr = &self.tracks[k as usize];
        let s = self.state_ecef(k, t_s);
        let payload = match tr.site {
            None => Payload::Geocentric(Geocentric {
                x: q_i32(s.p[0], 100.0, out_of_range),
                y: q_i32(s.p[1], 100.0, out_of_range),
                z: q_i32(s.p[2], 100.0, out_of_range),
                vx: q_i16(s.v[0], out_of_range),
                vy: q_i16(s.v[1], out_of_range),
                vz: q_i16(s.v[2], out_of_range),
                ax: q_i16(s.a[0], out_of_range),
                ay: q_i16(s.a[1], out_of_range),
                az: q_i16(s.a[2], out_of_range),
            }),
            Some(site) => {
                let sp = self.seen_from(&self.sites[usize::from(site)], s);
                Payload::Spherical(Spherical {
                    range: q_i32(sp.range_m, 100.0, out_of_range),
                    azimuth: q_u32(sp.azimuth_deg, out_of_range),
                    elevation: q_u32(sp.elevation_deg, out_of_range),
                    azimuth_rate: q_i16(sp.azimuth_rate_dps, out_of_range),
                    elevation_rate: q_i16(sp.elevation_rate_dps, out_of_range),
                    range_rate: q_i16(sp.range_rate_mps, out_of_range),
                    azimuth_accel: q_i16(sp.azimuth_accel_dps2, out_of_range),
                    elevation_accel: q_i16(sp.elevation_accel_dps2, out_of_range),
                    range_accel: q_i16(sp.range_accel_mps2, out_of_range),
                })
            }
        };
        Frame {
            sensor_id: tr.sensor_id,
            day,
            time_ticks: ticks,
            status: STATUS_ALL_VALID.0,
            status_flags: STATUS_ALL_VALID.1,
            payload,
        }
    }

    /// Samples per circuit period in the construction checks.
    const CHECK_SAMPLES: u32 = 64;

    /// Pick the first site, starting at `preferred`, that sees track `k`
    /// well over a whole period.
    fn choose_site(&self, k: usize, preferred: u16) -> Result<u16, FleetError> {
        let n = self.sites.len();
        for j in 0..n {
            let site_i = (usize::from(preferred) + j) % n;
            let site = &self.sites[site_i];
            let period = self.period_s(k as u32);
            let good = (0..Self::CHECK_SAMPLES).all(|i| {
                let s = self.state_ecef(
                    k as u32,
                    period * f64::from(i) / f64::from(Self::CHECK_SAMPLES),
                );
                let r = site.frame.point_from_ecef(s.p);
                let h = (r[0] * r[0] + r[1] * r[1]).sqrt();
                let sp = self.seen_from(site, s);
                h >= 1_000.0
                    && sp.elevation_deg >= 0.5
                    && [
                        sp.azimuth_rate_dps,
                        sp.elevation_rate_dps,
                        sp.azimuth_accel_dps2,
                        sp.elevation_accel_dps2,
                    ]
                    .iter()
                    .all(|v| v.abs() < 0.8 * I16_LIMIT)
            });
            if good {
                return Ok(site_i as u16);
            }
        }
        Err(FleetError::NoSite {
            track: k as u32,
            sensor_id: self.tracks[k].sensor_id,
        })
    }

    /// Every value of track `k` stays within 80% of its integer range over a
    /// period (sampled), so the schedule never saturates.
    fn check_ranges(&self, k: usize) -> Result<(), FleetError> {
        let period = self.period_s(k as u32);
        let track = k as u32;
        let bad = |what| Err(FleetError::OutOfRange { track, what });
        for i in 0..Self::CHECK_SAMPLES {
            let s = self.state_ecef(
                track,
                period * f64::from(i) / f64::from(Self::CHECK_SAMPLES),
            );
            if s.v.iter().any(|v| v.abs() >= 0.8 * I16_LIMIT) {
                return bad("velocity");
            }
            if s.a.iter().any(|v| v.abs() >= 0.8 * I16_LIMIT) {
                return bad("acceleration");
            }
            if s.p
                .iter()
                .any(|v| v.abs() >= 0.8 * f64::from(i32::MAX) / 100.0)
            {
                return bad("position");
            }
        }
        Ok(())
    }
}

/// Largest magnitude of an i16 / 100 value.
const I16_LIMIT: f64 = 327.67;

#[inline]
fn q_i32(v: f64, scale: f64, oor: &mut u64) -> i32 {
    let x = (v * scale).round();
    if !(x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX)) {
        *oor += 1;
    }
    x as i32
}

#[inline]
fn q_i16(v: f64, oor: &mut u64) -> i16 {
    let x = (v * 100.0).round();
    if !(x >= f64::from(i16::MIN) && x <= f64::from(i16::MAX)) {
        *oor += 1;
    }
    x as i16
}

/// Degrees × 10^6 into the unsigned angle fields.
#[inline]
fn q_u32(deg: f64, oor: &mut u64) -> u32 {
    let x = (deg * 1e6).round();
    if !(x >= 0.0 && x <= f64::from(u32::MAX)) {
        *oor += 1;
    }
    x as u32
}

#[cfg(test)]
mod tests;
