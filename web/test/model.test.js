// Node's test runner: `npm --prefix web test` (scripts/test runs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TrackStore, readUnits, readColor, formatAltitude, trackLabel, ringCoords, graticule,
  toFraction, fromFraction, fixTimeMs, healthVerdict, distributionSeries, OpsLog, Tags,
  percentile, centreOf,
} from '../src/model.js';

const track = (id, lat, lon, extra = {}) => ({
  id, sensor_id: Number(id.split(':')[0]), type: 'geocentric', lat_deg: lat, lon_deg: lon,
  alt_m: 3000, time_s: 100, day: 200, speed_mps: 150, heading_deg: 90, climb_mps: 0,
  stale: false, ...extra,
});

test('a snapshot replaces, a frame changes only what it names', () => {
  const s = new TrackStore();
  s.applySnapshot({ channel_id: 'livestream', server_time_ms: 1000,
    tracks: [track('1:geocentric', 32, -106), track('2:geocentric', 33, -106)] });
  assert.equal(s.size, 2);
  const r = s.applyFrame({ channel_id: 'livestream', server_time_ms: 1100,
    tracks: [track('2:geocentric', 33.1, -106), track('3:geocentric', 34, -106)],
    removed: ['1:geocentric', 'never-seen'] });
  assert.deepEqual(r, { changed: ['2:geocentric', '3:geocentric'], removed: ['1:geocentric'] });
  assert.deepEqual([...s.tracks.keys()].sort(), ['2:geocentric', '3:geocentric']);
  assert.equal(s.lastFrameMs, 1100);
  assert.deepEqual([...s.trails.get('2:geocentric')], [[-106, 33], [-106, 33.1]]);
  assert.equal(s.trails.has('1:geocentric'), false);
  // A late frame of another channel is ignored.
  assert.equal(s.applyFrame({ channel_id: 'replay.x', server_time_ms: 1200, tracks: [], removed: ['2:geocentric'] }), null);
  assert.equal(s.size, 2);
});

test('switching channel clears trails; trails messages fill them, bounded', () => {
  const s = new TrackStore({ trailMax: 5, trailStepMs: 0 });
  s.applySnapshot({ channel_id: 'livestream', server_time_ms: 1, tracks: [track('1:geocentric', 1, 1)] });
  s.applySnapshot({ channel_id: 'replay.a', server_time_ms: 2, tracks: [track('1:geocentric', 10, 10)] });
  assert.deepEqual([...s.trails.get('1:geocentric')], [[10, 10]]);
  const trail = Array.from({ length: 20 }, (_, i) => [i, i + 100, 3000, i]);
  s.applyTrails({ channel_id: 'replay.a', tracks: [{ id: '1:geocentric', trail }, { id: 'gone', trail }] });
  const t = s.trails.get('1:geocentric');
  assert.equal(t.length, 5);
  assert.deepEqual(t[t.length - 1], [10, 10], 'ends at the current position');
  assert.equal(s.trails.has('gone'), false);
  for (let i = 0; i < 50; i++) {
    s.applyFrame({ channel_id: 'replay.a', server_time_ms: 3 + i, tracks: [track('1:geocentric', 10 + i, 10)], removed: [] });
  }
  assert.equal(s.trails.get('1:geocentric').length, 5);
});

test('a trail keeps one point per step of server time, its head following the track', () => {
  const s = new TrackStore({ trailMax: 100, trailStepMs: 500 });
  s.applySnapshot({ channel_id: 'l', server_time_ms: 0, tracks: [track('1:geocentric', 0, 0)] });
  // 10 Hz for 3 s: 30 frames.
  for (let i = 1; i <= 30; i++) {
    s.applyFrame({ channel_id: 'l', server_time_ms: i * 100, tracks: [track('1:geocentric', i, 0)], removed: [] });
  }
  const tr = s.trails.get('1:geocentric');
  assert.ok(tr.length >= 6 && tr.length <= 8, `about one point per 500 ms: ${tr.length}`);
  assert.deepEqual(tr[tr.length - 1], [0, 30], 'the head is the track');
  // The hub's trail (time of day in s, 10 Hz) thinned the same way.
  const trail = Array.from({ length: 50 }, (_, i) => [i, 0, 3000, 100 + i / 10]);
  s.applyTrails({ channel_id: 'l', tracks: [{ id: '1:geocentric', trail }] });
  assert.equal(s.trails.get('1:geocentric').length, 11, '5 s of trail at 2 points/s, and the head');
});

test('the table is capped', () => {
  const s = new TrackStore({ tracksMax: 3 });
  s.applySnapshot({ channel_id: 'l', server_time_ms: 1,
    tracks: [1, 2, 3, 4].map((i) => track(`${i}:geocentric`, i, i)) });
  assert.equal(s.size, 3);
  s.applyFrame({ channel_id: 'l', server_time_ms: 2, tracks: [track('9:geocentric', 9, 9)], removed: [] });
  assert.equal(s.size, 3);
  assert.equal(s.refused, 2);
});

test('units and colours from display payloads; altitude labels follow the units', () => {
  assert.equal(readUnits('imperial'), 'imperial');
  assert.equal(readUnits({ units: 'metric' }), 'metric');
  assert.equal(readUnits('furlongs'), null);
  assert.equal(readColor('#FF8800'), '#ff8800');
  assert.equal(readColor({ color: '#00ff00' }), '#00ff00');
  assert.equal(readColor('red'), null);
  assert.equal(formatAltitude(3000, 'metric'), '3,000 m');
  assert.equal(formatAltitude(3000, 'imperial'), '9,843 ft');
  assert.equal(trackLabel(track('7:geocentric', 0, 0), 'imperial'), '7 9,843 ft');
});

test('range rings and graticule', () => {
  const r = ringCoords(32, -106, 10);
  assert.equal(r.length, 129);
  assert.deepEqual(r[0], r[r.length - 1]);
  // 10 km north of 32N is about 0.0899 degrees of latitude.
  assert.ok(Math.abs(r[0][1] - 32.0899) < 0.001, String(r[0][1]));
  const g = graticule(-107, 31, -105, 33);
  assert.equal(g.step, 0.2);
  assert.ok(g.lines.length >= 8);
});

test('timeline fractions and fix times', () => {
  assert.equal(toFraction(150, 100, 200), 0.5);
  assert.equal(toFraction(50, 100, 200), 0);
  assert.equal(fromFraction(0.25, 100, 200), 125);
  // Day 336 of 2026 is 2 December.
  const ms = fixTimeMs(336, 3600.5, Date.UTC(2026, 11, 2, 12));
  assert.equal(new Date(ms).toISOString(), '2026-12-02T01:00:00.500Z');
  // A window early in January, a fix of 31 December: the year before.
  const dec = fixTimeMs(365, 0, Date.UTC(2027, 0, 1, 0, 10));
  assert.equal(new Date(dec).toISOString(), '2026-12-31T00:00:00.000Z');
});

test('health goes red when a drop counter moves', () => {
  const v = healthVerdict({ per_box: {
    a: { drops: { ring_dropped: 0, failed: 0 } },
    b: { drops: { ring_dropped: 4, 'rejected.malformed': 1 } },
  } });
  assert.equal(v.red, true);
  assert.equal(v.boxes.a.red, false);
  assert.deepEqual(v.boxes.b.moved.sort(), ['rejected.malformed', 'ring_dropped']);
  assert.equal(healthVerdict({ per_box: {} }).red, false);
  const [xs, ys] = distributionSeries([[0, 1], [50, 2], [99, 5], [100, 9]]);
  assert.deepEqual(xs, [1, 2, 100, 1e6]);
  assert.deepEqual(ys, [1, 2, 5, 9]);
});

test('ops log newest first and bounded; tags by time; percentiles; centre', () => {
  const log = new OpsLog(3);
  log.add([{ unix_ms: 1, text: 'a' }, { unix_ms: 2, text: 'b' }]);
  log.add([{ unix_ms: 3, text: 'c' }, { unix_ms: 4, text: 'd' }]);
  assert.deepEqual(log.lines.map((l) => l.text), ['d', 'c', 'b']);
  log.add([{ unix_ms: 4, text: 'd' }]);
  assert.deepEqual(log.lines.map((l) => l.text), ['d', 'c', 'b'], 'the same line once');
  const tags = new Tags(2);
  tags.add({ id: 'x', ts_unix_us: 30 });
  tags.add({ id: 'y', ts_unix_us: 10 });
  tags.add({ id: 'z', ts_unix_us: 20 });
  assert.deepEqual(tags.sorted().map((t) => t.id), ['z', 'x']);
  assert.equal(percentile([5, 1, 4, 2, 3], 50), 3);
  assert.equal(percentile([5, 1, 4, 2, 3], 99), 5);
  assert.deepEqual(centreOf([track('1:g', 10, 20), track('2:g', 20, 40)]), { lat_deg: 15, lon_deg: 30 });
});
