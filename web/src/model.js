// PURE: the page's state, with no DOM, no map and no socket, so Node's
// test runner checks it (web/test/model.test.js). The hub's protocol is
// docs/console.md; this file applies its messages.

/** Tracks the page keeps at most (the hub's table holds up to 20,000). */
export const TRACKS_MAX = 20000;
/** Trail points kept per track, at most one per [`TRAIL_STEP_MS`] of
 * server time: 120 points, a minute of trail (the hub's default `trail_s`),
 * whatever the update rate. */
export const TRAIL_POINTS_MAX = 120;
export const TRAIL_STEP_MS = 500;
/** Operations log lines kept. */
export const OPS_LOG_MAX = 200;

/**
 * The tracks of the channel the page follows, applied as diffs: a snapshot
 * replaces them, a frame changes only what it names, `trails` fill the
 * trails after a snapshot.
 */
export class TrackStore {
  constructor({ tracksMax = TRACKS_MAX, trailMax = TRAIL_POINTS_MAX, trailStepMs = TRAIL_STEP_MS } = {}) {
    this.tracksMax = tracksMax;
    this.trailMax = trailMax;
    this.trailStepMs = trailStepMs;
    /** @type {Map<string, object>} id -> track (the hub's fields) */
    this.tracks = new Map();
    /** @type {Map<string, number[][]>} id -> [[lon, lat], ...] oldest first;
     * each trail's `headAt` is the server time its newest point was added */
    this.trails = new Map();
    this.channel = null;
    this.lastFrameMs = 0;
    /** Frames and snapshots applied, tracks refused over the cap. */
    this.applied = 0;
    this.refused = 0;
  }

  /** A `snapshot`: every track of `channel_id`. Returns the ids changed. */
  applySnapshot(msg) {
    if (msg.channel_id !== this.channel) {
      this.trails.clear();
    }
    this.channel = msg.channel_id;
    const keep = new Set();
    this.tracks.clear();
    for (const t of msg.tracks) {
      if (this.tracks.size >= this.tracksMax) {
        this.refused++;
        continue;
      }
      this.tracks.set(t.id, t);
      keep.add(t.id);
      this.#extend(t, msg.server_time_ms);
    }
    for (const id of [...this.trails.keys()]) {
      if (!keep.has(id)) this.trails.delete(id);
    }
    this.lastFrameMs = msg.server_time_ms;
    this.applied++;
    return { all: true };
  }

  /** A `frame`: changed and removed tracks. Frames of another channel
   * (a switch racing the last frames of the old one) are ignored. */
  applyFrame(msg) {
    if (msg.channel_id !== this.channel) return null;
    const changed = [];
    for (const t of msg.tracks) {
      if (!this.tracks.has(t.id) && this.tracks.size >= this.tracksMax) {
        this.refused++;
        continue;
      }
      this.tracks.set(t.id, t);
      this.#extend(t, msg.server_time_ms);
      changed.push(t.id);
    }
    const removed = [];
    for (const id of msg.removed || []) {
      if (this.tracks.delete(id)) removed.push(id);
      this.trails.delete(id);
    }
    this.lastFrameMs = msg.server_time_ms;
    this.applied++;
    return { changed, removed };
  }

  /** `trails` after a snapshot: whole trails of some tracks. */
  applyTrails(msg) {
    if (msg.channel_id !== this.channel) return;
    // The hub's trail points carry the fix's time of day (s): thin them to
    // one per step as the page's own are.
    const step = this.trailStepMs / 1000;
    for (const { id, trail } of msg.tracks) {
      if (!this.tracks.has(id)) continue;
      let pts = [];
      let at = -Infinity;
      for (const p of trail) {
        if (p[3] - at >= step || p[3] < at) {
          pts.push([p[1], p[0]]);
          at = p[3];
        }
      }
      const cur = this.tracks.get(id);
      const last = pts[pts.length - 1];
      if (!last || last[0] !== cur.lon_deg || last[1] !== cur.lat_deg) {
        pts.push([cur.lon_deg, cur.lat_deg]);
      }
      pts = pts.slice(-this.trailMax);
      pts.headAt = msg.server_time_ms;
      this.trails.set(id, pts);
    }
  }

  /** The trail gains the track's position, at most one point per step
   * of server time; the newest point always follows the track. */
  #extend(t, nowMs) {
    let tr = this.trails.get(t.id);
    if (!tr) {
      tr = [];
      this.trails.set(t.id, tr);
    }
    const last = tr[tr.length - 1];
    if (last && last[0] === t.lon_deg && last[1] === t.lat_deg) return;
    if (tr.length >= 2 && nowMs - tr.headAt < this.trailStepMs) {
      // Within the step: move the head instead of adding a point.
      last[0] = t.lon_deg;
      last[1] = t.lat_deg;
      return;
    }
    tr.push([t.lon_deg, t.lat_deg]);
    tr.headAt = nowMs;
    if (tr.length > this.trailMax) tr.splice(0, tr.length - this.trailMax);
  }

  get size() {
    return this.tracks.size;
  }

  /** The newest fix time of the tracks (for a replay's playhead):
   * `{ day, time_s }` of the latest, or null. */
  newestFix() {
    let best = null;
    for (const t of this.tracks.values()) {
      if (t.stale) continue;
      if (!best || t.day > best.day || (t.day === best.day && t.time_s > best.time_s)) {
        best = { day: t.day, time_s: t.time_s };
      }
    }
    return best;
  }
}

/** Metres per foot. */
export const FT = 0.3048;

/** `metric` or `imperial` from a `units` display payload ("metric",
 * `{units: "imperial"}`, `{value: ..}`); null if neither. */
export function readUnits(payload) {
  const v = typeof payload === 'string' ? payload : payload && (payload.units ?? payload.value);
  return v === 'metric' || v === 'imperial' ? v : null;
}

/** `#rrggbb` from a `marker_color` payload, or null. */
export function readColor(payload) {
  const v =
    typeof payload === 'string'
      ? payload
      : payload && (payload.marker_color ?? payload.color ?? payload.value);
  return typeof v === 'string' && /^#[0-9a-fA-F]{6}$/.test(v) ? v.toLowerCase() : null;
}

/** An altitude as the session's units show it. */
export function formatAltitude(altM, units) {
  if (altM == null || !Number.isFinite(altM)) return '—';
  if (units === 'imperial') return `${Math.round(altM / FT).toLocaleString('en-US')} ft`;
  return `${Math.round(altM).toLocaleString('en-US')} m`;
}

/** A speed as the session's units show it (knots in imperial). */
export function formatSpeed(mps, units) {
  if (mps == null || !Number.isFinite(mps)) return '—';
  if (units === 'imperial') return `${Math.round(mps * 1.943844)} kt`;
  return `${Math.round(mps)} m/s`;
}

/** The label beside a track symbol: sensor id and altitude. */
export function trackLabel(t, units) {
  return `${t.sensor_id} ${formatAltitude(t.alt_m, units)}`;
}

const EARTH_R_M = 6371008.8;

/** A circle of `radiusKm` around (lat, lon) as a closed GeoJSON ring of
 * [lon, lat] (great-circle destination points). */
export function ringCoords(latDeg, lonDeg, radiusKm, steps = 128) {
  const d = (radiusKm * 1000) / EARTH_R_M;
  const lat1 = (latDeg * Math.PI) / 180;
  const lon1 = (lonDeg * Math.PI) / 180;
  const out = [];
  for (let i = 0; i <= steps; i++) {
    const brg = (2 * Math.PI * i) / steps;
    const lat2 = Math.asin(
      Math.sin(lat1) * Math.cos(d) + Math.cos(lat1) * Math.sin(d) * Math.cos(brg),
    );
    const lon2 =
      lon1 +
      Math.atan2(
        Math.sin(brg) * Math.sin(d) * Math.cos(lat1),
        Math.cos(d) - Math.sin(lat1) * Math.sin(lat2),
      );
    out.push([(((lon2 * 180) / Math.PI + 540) % 360) - 180, (lat2 * 180) / Math.PI]);
  }
  return out;
}

/** Graticule step (degrees) for a view `spanDeg` wide: about 4 to 10
 * lines across. */
export function graticuleStep(spanDeg) {
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30];
  for (const s of steps) if (spanDeg / s <= 10) return s;
  return 30;
}

/** Graticule lines over a bounding box, as GeoJSON LineString coords. */
export function graticule(west, south, east, north) {
  const step = graticuleStep(Math.max(east - west, north - south));
  const lines = [];
  const s = Math.max(-85, south - step);
  const n = Math.min(85, north + step);
  for (let lon = Math.floor(west / step) * step; lon <= east + step; lon += step) {
    lines.push({ coords: [[lon, s], [lon, n]], label: lon });
  }
  for (let lat = Math.floor(s / step) * step; lat <= n; lat += step) {
    lines.push({ coords: [[west - step, lat], [east + step, lat]], label: lat });
  }
  return { step, lines };
}

/** The centre of some tracks (for a map with no configured origin). */
export function centreOf(tracks) {
  let n = 0;
  let lat = 0;
  let lon = 0;
  for (const t of tracks) {
    lat += t.lat_deg;
    lon += t.lon_deg;
    n++;
  }
  return n ? { lat_deg: lat / n, lon_deg: lon / n } : null;
}

/** A replay window: times (ms) <-> slider fractions. */
export function toFraction(ms, firstMs, lastMs) {
  if (!(lastMs > firstMs)) return 0;
  return Math.min(1, Math.max(0, (ms - firstMs) / (lastMs - firstMs)));
}

export function fromFraction(f, firstMs, lastMs) {
  return Math.round(firstMs + Math.min(1, Math.max(0, f)) * (lastMs - firstMs));
}

/** The UTC time (ms) of a fix: its day of year and seconds of day, in the
 * year of `nearMs` (a replay's window), the year before when that is
 * closer. */
export function fixTimeMs(day, timeS, nearMs) {
  const year = new Date(nearMs).getUTCFullYear();
  let best = null;
  for (const y of [year - 1, year, year + 1]) {
    const ms = Date.UTC(y, 0, 1) + (day - 1) * 86400000 + Math.round(timeS * 1000);
    if (best === null || Math.abs(ms - nearMs) < Math.abs(best - nearMs)) best = ms;
  }
  return best;
}

/** RFC 3339 UTC with milliseconds. */
export function iso(ms) {
  return new Date(ms).toISOString();
}

/** Whether a health counter loses data (the hub's rule). */
export function isDrop(name) {
  return name.startsWith('rejected') || name === 'failed' || name.includes('dropped');
}

/**
 * The health panel's verdict per box: red when a drop counter moved in
 * the last interval. Returns `{ host: { red, moved: [names] } }` and the
 * whole page's `red`.
 */
export function healthVerdict(health) {
  const boxes = {};
  let red = false;
  for (const [host, b] of Object.entries(health?.per_box || {})) {
    const moved = Object.entries(b.drops || {})
      .filter(([, n]) => n > 0)
      .map(([k]) => k);
    boxes[host] = { red: moved.length > 0, moved };
    red = red || moved.length > 0;
  }
  return { red, boxes };
}

/** Percentile-distribution plot axes from a `distribution` ([p, ms]):
 * x = 1 / (1 - p/100) on a log scale (HdrHistogram's plot), capped where
 * p is 100. */
export function distributionSeries(distribution) {
  const xs = [];
  const ys = [];
  for (const [p, ms] of distribution || []) {
    const x = p >= 100 ? 1e6 : Number((1 / (1 - p / 100)).toPrecision(6));
    xs.push(x);
    ys.push(ms);
  }
  return [xs, ys];
}

/** A bounded, newest-first operations log. */
export class OpsLog {
  constructor(max = OPS_LOG_MAX) {
    this.max = max;
    this.lines = [];
  }

  /** Lines `[{unix_ms, text}]` oldest first, as the hub sends them. */
  add(lines) {
    for (const l of lines) {
      // A line can come twice: in the log sent on connecting, and as the
      // event of that same connection.
      const key = `${l.unix_ms}|${l.text}`;
      if (this.lines.some((o) => o.unix_ms === l.unix_ms && `${o.unix_ms}|${o.text}` === key)) continue;
      this.lines.unshift(l);
    }
    if (this.lines.length > this.max) this.lines.length = this.max;
  }
}

/** Tags by id, ordered by time, bounded. */
export class Tags {
  constructor(max = 500) {
    this.max = max;
    this.byId = new Map();
  }

  add(t) {
    this.byId.set(t.id, t);
    if (this.byId.size > this.max) {
      const oldest = [...this.byId.values()].sort((a, b) => a.ts_unix_us - b.ts_unix_us)[0];
      this.byId.delete(oldest.id);
    }
  }

  sorted() {
    return [...this.byId.values()].sort((a, b) => a.ts_unix_us - b.ts_unix_us);
  }
}

/** Nearest-rank percentile of numbers (for the page's own timing). */
export function percentile(values, p) {
  if (!values.length) return 0;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}
