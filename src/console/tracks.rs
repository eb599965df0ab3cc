//! PURE. The track table of one channel: telemetry bodies in, the
//! console's JSON messages out (`docs/console.md`, "WebSocket protocol:
//! snapshot and frame").
//!
//! The server owns one [`TrackTable`] per channel and the clock:
//! - every telemetry body of the channel goes to [`TrackTable::ingest`]
//!   with the server's wall-clock time in ms;
//! - every `1 / tick_hz` s, [`TrackTable::tick`] gives the [`Frame`] to send
//!   to every browser on the channel (`None`: nothing to send);
//! - a browser that connects (or switches channel) first gets
//!   [`TrackTable::snapshot`], then the frames.
//!
//! A track is one `(sensor_id, type)`: its latest fix as WGS84 latitude,
//! longitude and ellipsoidal height, with speed, heading and climb
//! ([`super::geodesy`]), and a trail of recent positions. Updates between
//! two ticks are coalesced: a frame carries each changed track's latest
//! state once. Trail points are kept at most every
//! `trail_s / CONSOLE_TRAIL_POINTS_MAX` (so a 1 kHz track costs what a
//! 10 Hz one does) and for `trail_s` of server time.
//!
//! Bounded: at most `tracks_max` tracks (a new one beyond is refused with
//! [`TrackError::TableFull`]), each trail at most `trail_points_max`
//! points; outputs are sorted by track id (sensor id, then type), so the
//! same inputs give the same bytes.

use crate::archive::proto::rows::{Reject, decode_telemetry};
use crate::codec::FrameType;
use crate::message::PayloadValues;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::geodesy::{Geodetic, LocalFrame, SphericalFix, motion, spherical_to_ecef};

/// The protocol version a [`Snapshot`] carries in `protocol`. A change
/// that an existing browser would misread raises it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Tracks in one table at most (each up to `trail_points_max` points of
/// about 40 bytes).
pub const TRACKS_MAX: usize = 20_000;

/// A fix more than this far below the ellipsoid is not a track (a
/// geocentric datagram near the Earth's centre: a test pattern or a sensor
/// fault); refused with [`TrackError::Position`].
pub const ALT_MIN_M: f64 = -100_000.0;

/// What a table needs of `[console]`
/// (`ConsoleConfig::tracks_config` builds it from the section).
#[derive(Clone, Debug, PartialEq)]
pub struct TracksConfig {
    /// Trail kept per track, in server time (ms); 0: no trail.
    pub trail_ms: u64,
    /// Points of one trail at most.
    pub trail_points_max: usize,
    /// A track not updated for this long is stale (ms).
    pub stale_ms: u64,
    /// A track not updated for this long leaves the table (ms).
    pub expire_ms: u64,
    /// Tracks at most.
    pub tracks_max: usize,
    /// Sensor sites of spherical tracks, by sensor id.
    pub sites: HashMap<u16, Geodetic>,
}

/// Why a body did not update the table. The caller counts each by
/// [`TrackError::label`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrackError {
    #[error("not a telemetry body: {0}")]
    Body(#[from] Reject),
    #[error("spherical track of sensor {0}: no [[console.site]] for this sensor")]
    NoSite(u16),
    #[error("sensor {sensor_id} ({kind}): the fix is not a position near the Earth")]
    Position { sensor_id: u16, kind: FrameType },
    #[error("table full ({0} tracks): a new track is refused")]
    TableFull(usize),
}

impl TrackError {
    /// Short label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            TrackError::Body(_) => "body",
            TrackError::NoSite(_) => "no_site",
            TrackError::Position { .. } => "position",
            TrackError::TableFull(_) => "table_full",
        }
    }
}

/// What [`TrackTable::ingest`] did with a valid body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The track was created or moved.
    Updated,
    /// Ignored: on the same day, not newer than the track's latest fix (a
    /// reordered or repeated datagram). The caller counts it.
    OutOfOrder,
}

/// `{"type": "snapshot", ...}`: the first message on a connection, every
/// track with its trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Always `"snapshot"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    pub channel_id: String,
    /// The server's wall-clock time of this message, ms since the Unix
    /// epoch.
    pub server_time_ms: u64,
    pub tracks: Vec<Track>,
}

/// `{"type": "frame", ...}`: what changed since the previous frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Frame {
    /// Always `"frame"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel_id: String,
    pub server_time_ms: u64,
    /// Tracks updated since the previous frame, and tracks that became
    /// stale since (with `stale: true`), without trails.
    pub tracks: Vec<Track>,
    /// Ids of tracks that left the table (expired).
    pub removed: Vec<String>,
}

/// One track as the browser sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Track {
    /// `"<sensor_id>:<type>"`, e.g. `"10042:geocentric"`.
    pub id: String,
    pub sensor_id: u16,
    /// `"geocentric"` or `"spherical"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// WGS84 geodetic latitude, degrees north.
    pub lat_deg: f64,
    /// Degrees east, -180..=180.
    pub lon_deg: f64,
    /// Height above the WGS84 ellipsoid (m), not above mean sea level.
    pub alt_m: f64,
    /// The fix's time of day (s since midnight UTC), as in the body.
    pub time_s: f64,
    /// The fix's day of year, as in the body.
    pub day: u16,
    /// Speed (m/s, 3-D); null when the fix's velocity is not valid.
    pub speed_mps: Option<f64>,
    /// Degrees clockwise from true north, `[0, 360)`; null when the
    /// velocity is not valid or the horizontal speed is below 0.01 m/s.
    pub heading_deg: Option<f64>,
    /// Vertical speed (m/s, up positive); null when the velocity is not
    /// valid.
    pub climb_mps: Option<f64>,
    /// Not updated for `stale_s`.
    pub stale: bool,
    /// Snapshots only: past positions, oldest first, each
    /// `[lat_deg, lon_deg, alt_m, time_s]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trail: Option<Vec<[f64; 4]>>,
}

/// What [`TrackTable::tick`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct TickOutput {
    /// The frame to send; `None` when nothing changed.
    pub frame: Option<Frame>,
    /// Tracks in the table after this tick (for a gauge).
    pub tracks: usize,
    /// Tracks removed by this tick (expired).
    pub expired: usize,
}

/// Tracks are ordered by sensor id, then type byte.
type Key = (u16, u8);

#[derive(Clone, Debug)]
struct Fix {
    at: Geodetic,
    time_s: f64,
    time_ticks: u32,
    day: u16,
    motion: Option<super::geodesy::Motion>,
}

#[derive(Clone, Debug)]
struct TrailPoint {
    server_ms: u64,
    point: [f64; 4],
}

#[derive(Clone, Debug)]
struct TrackState {
    kind: FrameType,
    fix: Fix,
    /// Server time of the latest update.
    updated_ms: u64,
    /// The last frame said this track is stale.
    stale_sent: bool,
    trail: VecDeque<TrailPoint>,
    /// The latest datagram and its receive time, for [`TrackTable::detail`].
    last: crate::codec::Frame,
    recv_unix_us: i64,
    rate: UpdateRate,
    /// Server time of the first update.
    first_ms: u64,
}

/// Updates per second of one track over the last one to two windows of
/// [`RATE_WINDOW_MS`]: two buckets, the current and the previous.
#[derive(Clone, Copy, Debug, Default)]
struct UpdateRate {
    start_ms: u64,
    current: u32,
    previous: u32,
}

/// The window of [`UpdateRate`].
const RATE_WINDOW_MS: u64 = 5_000;

impl UpdateRate {
    fn roll(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.start_ms);
        if elapsed >= 2 * RATE_WINDOW_MS {
            (self.previous, self.current) = (0, 0);
            self.start_ms = now_ms - now_ms % RATE_WINDOW_MS;
        } else if elapsed >= RATE_WINDOW_MS {
            (self.previous, self.current) = (self.current, 0);
            self.start_ms += RATE_WINDOW_MS;
        }
    }

    fn note(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.current = self.current.saturating_add(1);
    }

    /// Updates per second seen over the previous window and the current
    /// one so far; `first_ms` (the track's first update) shortens the span
    /// of a young track.
    fn per_s(mut self, now_ms: u64, first_ms: u64) -> f64 {
        self.roll(now_ms);
        let from = self.start_ms.saturating_sub(RATE_WINDOW_MS).max(first_ms);
        let span_ms = now_ms.saturating_sub(from).max(1);
        f64::from(self.previous + self.current) * 1000.0 / span_ms as f64
    }
}

/// `{"type": "track_detail", ...}`: one track's latest datagram, every
/// contract field (`record`, as `tspi decode` prints it), with the age of
/// its last update and its update rate; the answer to a client's
/// `track_detail` request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackDetail {
    /// Always `"track_detail"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel_id: String,
    pub id: String,
    pub server_time_ms: u64,
    /// The contract record of the latest datagram (CONTRACT §2).
    pub record: crate::message::Record,
    /// Server time since the last update (ms).
    pub age_ms: u64,
    /// Updates per second over the last 5 to 10 s.
    pub updates_per_s: f64,
    pub stale: bool,
    pub track: Track,
}

/// The tracks of one channel. See the module docs for the protocol.
#[derive(Clone, Debug)]
pub struct TrackTable {
    channel_id: String,
    cfg: TracksConfig,
    /// Minimum server time between two trail points.
    trail_step_ms: u64,
    sites: HashMap<u16, LocalFrame>,
    tracks: BTreeMap<Key, TrackState>,
    changed: BTreeSet<Key>,
}

fn key_of(sensor_id: u16, kind: FrameType) -> Key {
    (sensor_id, kind.byte())
}

fn id_of(sensor_id: u16, kind: FrameType) -> String {
    format!("{sensor_id}:{}", kind.name())
}

impl TrackTable {
    /// An empty table for `channel_id` (e.g. `livestream`,
    /// `replay.20260101T120000Z`: what the browser selected).
    pub fn new(channel_id: impl Into<String>, cfg: &TracksConfig) -> Self {
        let points = cfg.trail_points_max.max(1) as u64;
        TrackTable {
            channel_id: channel_id.into(),
            cfg: cfg.clone(),
            trail_step_ms: cfg.trail_ms / points,
            sites: cfg
                .sites
                .iter()
                .map(|(&id, &at)| (id, LocalFrame::new(at)))
                .collect(),
            tracks: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// Tracks in the table.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Decode one telemetry body (CONTRACT §2, with the archive's strict
    /// decoder) received at server time `now_ms`, and update its track.
    /// Never panics, whatever the bytes.
    pub fn ingest(&mut self, now_ms: u64, body: &[u8]) -> Result<Ingested, TrackError> {
        let row = decode_telemetry(body, None)?;
        let frame = row.frame;
        let kind = frame.frame_type();
        let key = key_of(frame.sensor_id, kind);
        if let Some(t) = self.tracks.get(&key)
            && t.fix.day == frame.day
            && frame.time_ticks <= t.fix.time_ticks
        {
            return Ok(Ingested::OutOfOrder);
        }
        if !self.tracks.contains_key(&key) && self.tracks.len() >= self.cfg.tracks_max {
            return Err(TrackError::TableFull(self.tracks.len()));
        }
        let (p, v) = match PayloadValues::from_values(kind, frame.values()) {
            PayloadValues::Geocentric(g) => ([g.x_m, g.y_m, g.z_m], [g.vx_mps, g.vy_mps, g.vz_mps]),
            PayloadValues::Spherical(s) => {
                let site = self
                    .sites
                    .get(&frame.sensor_id)
                    .ok_or(TrackError::NoSite(frame.sensor_id))?;
                let fix = SphericalFix {
                    range_m: s.range_m,
                    azimuth_deg: s.azimuth_deg,
                    elevation_deg: s.elevation_deg,
                    range_rate_mps: s.range_rate_mps,
                    azimuth_rate_dps: s.azimuth_rate_dps,
                    elevation_rate_dps: s.elevation_rate_dps,
                };
                spherical_to_ecef(site, &fix)
            }
        };
        let at = Geodetic::from_ecef(p);
        if !at.is_finite() || at.alt_m < ALT_MIN_M {
            return Err(TrackError::Position {
                sensor_id: frame.sensor_id,
                kind,
            });
        }
        // Velocity bits (3..=5 of the validity word): all three, or no
        // speed, heading and climb.
        let validity = frame.validity();
        let motion = validity[3..6]
            .iter()
            .all(|&b| b)
            .then(|| motion(at, v))
            .filter(|m| m.speed_mps.is_finite() && m.climb_mps.is_finite());
        let fix = Fix {
            at,
            time_s: frame.time_s(),
            time_ticks: frame.time_ticks,
            day: frame.day,
            motion,
        };
        let trail_ms = self.cfg.trail_ms;
        let (points_max, step) = (self.cfg.trail_points_max, self.trail_step_ms);
        let t = self.tracks.entry(key).or_insert_with(|| TrackState {
            kind,
            fix: fix.clone(),
            updated_ms: now_ms,
            stale_sent: false,
            trail: VecDeque::new(),
            last: frame,
            recv_unix_us: row.recv_unix_us,
            rate: UpdateRate {
                start_ms: now_ms - now_ms % RATE_WINDOW_MS,
                ..UpdateRate::default()
            },
            first_ms: now_ms,
        });
        t.fix = fix;
        t.last = frame;
        t.recv_unix_us = row.recv_unix_us;
        t.rate.note(now_ms);
        t.updated_ms = now_ms;
        t.stale_sent = false;
        trim_trail(&mut t.trail, now_ms, trail_ms);
        let due = t
            .trail
            .back()
            .is_none_or(|last| now_ms.saturating_sub(last.server_ms) >= step);
        if trail_ms > 0 && points_max > 0 && due {
            if t.trail.len() >= points_max {
                t.trail.pop_front();
            }
            t.trail.push_back(TrailPoint {
                server_ms: now_ms,
                point: [at.lat_deg, at.lon_deg, at.alt_m, t.fix.time_s],
            });
        }
        self.changed.insert(key);
        Ok(Ingested::Updated)
    }

    /// Advance to server time `now_ms`: expire tracks not updated for
    /// `expire_ms`, flag those not updated for `stale_ms` (once), trim
    /// trails, and return the frame of everything changed since the
    /// previous tick.
    pub fn tick(&mut self, now_ms: u64) -> TickOutput {
        let mut removed = Vec::new();
        let (stale_ms, expire_ms, trail_ms) =
            (self.cfg.stale_ms, self.cfg.expire_ms, self.cfg.trail_ms);
        let changed = &mut self.changed;
        self.tracks.retain(|key, t| {
            let age = now_ms.saturating_sub(t.updated_ms);
            if age >= expire_ms {
                removed.push(id_of(key.0, t.kind));
                changed.remove(key);
                return false;
            }
            if age >= stale_ms && !t.stale_sent {
                t.stale_sent = true;
                changed.insert(*key);
            }
            trim_trail(&mut t.trail, now_ms, trail_ms);
            true
        });
        let changed = std::mem::take(&mut self.changed);
        let tracks: Vec<Track> = changed
            .iter()
            .filter_map(|key| {
                self.tracks
                    .get(key)
                    .map(|t| self.track(*key, t, now_ms, false))
            })
            .collect();
        let expired = removed.len();
        let frame = (!tracks.is_empty() || !removed.is_empty()).then(|| Frame {
            kind: "frame",
            channel_id: self.channel_id.clone(),
            server_time_ms: now_ms,
            tracks,
            removed,
        });
        TickOutput {
            frame,
            tracks: self.tracks.len(),
            expired,
        }
    }

    /// Every track at server time `now_ms`, with its trail (points older
    /// than `trail_ms` left out); a track past `expire_ms` that the next
    /// tick will remove is left out already.
    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let tracks = self
            .tracks
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(t.updated_ms) < self.cfg.expire_ms)
            .map(|(key, t)| self.track(*key, t, now_ms, true))
            .collect();
        Snapshot {
            kind: "snapshot",
            protocol: PROTOCOL_VERSION,
            channel_id: self.channel_id.clone(),
            server_time_ms: now_ms,
            tracks,
        }
    }

    /// Track `id`'s latest datagram, every field, with the age of its
    /// last update and its update rate; `None` if the table has no such
    /// track.
    pub fn detail(&self, id: &str, now_ms: u64) -> Option<TrackDetail> {
        let (sensor, kind) = id.split_once(':')?;
        let sensor: u16 = sensor.parse().ok()?;
        let (key, t) = self
            .tracks
            .range((sensor, 0)..=(sensor, u8::MAX))
            .find(|(_, t)| t.kind.name() == kind)?;
        let recv = crate::message::RecvTime::from_unix_ns(
            u64::try_from(t.recv_unix_us)
                .unwrap_or(0)
                .saturating_mul(1_000),
        );
        let age_ms = now_ms.saturating_sub(t.updated_ms);
        Some(TrackDetail {
            kind: "track_detail",
            channel_id: self.channel_id.clone(),
            id: id.to_owned(),
            server_time_ms: now_ms,
            record: crate::message::Record::new(&t.last, recv),
            age_ms,
            updates_per_s: t.rate.per_s(now_ms, t.first_ms),
            stale: age_ms >= self.cfg.stale_ms,
            track: self.track(*key, t, now_ms, false),
        })
    }

    fn track(&self, key: Key, t: &TrackState, now_ms: u64, with_trail: bool) -> Track {
        let m = t.fix.motion;
        let trail = with_trail.then(|| {
            let from = now_ms.saturating_sub(self.cfg.trail_ms);
            t.trail
                .iter()
                .filter(|p| p.server_ms >= from && self.cfg.trail_ms > 0)
                .map(|p| p.point)
                .collect()
        });
        Track {
            id: id_of(key.0, t.kind),
            sensor_id: key.0,
            kind: t.kind.name(),
            lat_deg: t.fix.at.lat_deg,
            lon_deg: t.fix.at.lon_deg,
            alt_m: t.fix.at.alt_m,
            time_s: t.fix.time_s,
            day: t.fix.day,
            speed_mps: m.map(|m| m.speed_mps),
            heading_deg: m.and_then(|m| m.heading_deg),
            climb_mps: m.map(|m| m.climb_mps),
            stale: now_ms.saturating_sub(t.updated_ms) >= self.cfg.stale_ms,
            trail,
        }
    }
}

/// Drop points older than `trail_ms` before `now_ms` (all of them when the
/// trail is off).
fn trim_trail(trail: &mut VecDeque<TrailPoint>, now_ms: u64, trail_ms: u64) {
    let from = now_ms.saturating_sub(trail_ms);
    while trail
        .front()
        .is_some_and(|p| p.server_ms < from || trail_ms == 0)
    {
        trail.pop_front();
    }
}

#[cfg(test)]
mod tests;
