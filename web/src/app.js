// The operator's page: one WebSocket to the hub (docs/console.md), the
// pure model (model.js), the map (map.js) and the panels. The page's state
// is on <body> for tests and scripts: data-track-count, data-channel,
// data-state, data-last-frame-ms (server time of the last frame applied),
// data-operator, data-connected, data-units, data-health.

import {
  TrackStore, OpsLog, Tags, readUnits, readColor, formatAltitude, formatSpeed, centreOf,
  toFraction, fromFraction, fixTimeMs, iso, healthVerdict, distributionSeries, percentile,
} from './model.js';
import { LiveMap } from './map.js';

const $ = (id) => document.getElementById(id);
const body = document.body;
const params = new URLSearchParams(location.search);

/** The page's own work per message (ms; receive, decode, update), for
 * the benchmark and `window.tspi.perf`. Bounded. */
const PERF_KEEP = 20000;
const perf = { frameMs: [], snapshotMs: [], mapMs: [], messages: 0, bytes: 0, mapUpdates: 0 };
function note(kind, ms) {
  const a = kind === 'frame' ? perf.frameMs : kind === 'map' ? perf.mapMs : perf.snapshotMs;
  a.push(ms);
  if (a.length > PERF_KEEP) a.splice(0, a.length - PERF_KEEP);
}

const store = new TrackStore();
const opsLog = new OpsLog();
const tags = new Tags();
const st = {
  cfg: null,
  ws: null,
  clientId: params.get('client_id') || sessionStorage.getItem('tspi.client_id') || `web-${Math.random().toString(36).slice(2, 8)}`,
  token: params.get('token') || '',
  operator: false,
  state: null,
  units: 'metric',
  color: '#ffb000',
  timeline: { first: null, last: null },
  replayWindow: null,
  detailId: null,
  roster: [],
  health: null,
  latency: null,
  directory: [],
  dismissedOffer: null,
  retry: 0,
  oriented: false,
};
sessionStorage.setItem('tspi.client_id', st.clientId);

let map = null;
window.tspi = { store, perf, st, percentile, get map() { return map; } };

function toast(text, bad = false) {
  const t = $('toast');
  t.textContent = text;
  t.className = bad ? 'show bad' : 'show';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ''), 4000);
}

function send(msg) {
  if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(msg));
}

function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().slice(11, 19) : '—';
}

// --- connection -------------------------------------------------------------

function connect() {
  const q = new URLSearchParams({ client_id: st.clientId });
  if (st.token) q.set('token', st.token);
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/ws?${q}`);
  st.ws = ws;
  ws.onopen = () => {
    st.retry = 0;
    body.dataset.connected = 'true';
    $('conn').textContent = 'connected';
    $('conn').className = 'badge ok';
  };
  ws.onclose = (e) => {
    body.dataset.connected = 'false';
    $('conn').textContent = `disconnected${e.reason ? `: ${e.reason}` : ''}`;
    $('conn').className = 'badge bad';
    const wait = Math.min(10000, 500 * 2 ** st.retry++);
    setTimeout(connect, wait);
  };
  ws.onmessage = (e) => onMessage(e.data);
}

function onMessage(text) {
  const t0 = performance.now();
  perf.messages++;
  perf.bytes += text.length;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return;
  }
  const h = handlers[m.type];
  if (h) h(m);
  if (m.type === 'frame' || m.type === 'snapshot') note(m.type, performance.now() - t0);
}

// --- tracks -----------------------------------------------------------------

// Messages only change the store (cheap); the map takes the store's state
// once per animation frame at most, so a page that renders slowly (no GPU:
// software WebGL) still applies every frame and never falls behind the hub.
let mapDue = false;
let mapAll = false;
function mapFrame() {
  mapDue = false;
  if (!map) return;
  const t0 = performance.now();
  if (!st.oriented && store.size) {
    st.oriented = true;
    map.orientOn(centreOf(store.tracks.values()), store.tracks.values());
  }
  map.update(mapAll);
  mapAll = false;
  perf.mapUpdates++;
  note('map', performance.now() - t0);
}

function tracksChanged(all) {
  body.dataset.trackCount = String(store.size);
  body.dataset.lastFrameMs = String(store.lastFrameMs);
  $('track-count').textContent = `${store.size} tracks · ${store.channel ?? ''}`;
  mapAll = mapAll || all;
  if (!mapDue) {
    mapDue = true;
    requestAnimationFrame(mapFrame);
  }
  updatePlayhead();
}

const handlers = {
  hello(m) {
    st.operator = m.operator;
    st.clientId = m.client_id;
    body.dataset.operator = String(m.operator);
    $('client').textContent = m.client_id;
    $('role').textContent = m.operator ? 'operator' : 'viewer';
    for (const el of document.querySelectorAll('.op')) el.hidden = !m.operator;
  },
  snapshot(m) {
    store.applySnapshot(m);
    tracksChanged(true);
  },
  frame(m) {
    if (store.applyFrame(m)) tracksChanged(false);
  },
  trails(m) {
    store.applyTrails(m);
    tracksChanged(true);
  },
  state(m) {
    st.state = m;
    body.dataset.state = m.state;
    body.dataset.channel = m.channel_id;
    $('state').textContent = m.state.replaceAll('_', ' ').toLowerCase();
    $('channel').textContent = m.channel_id;
    $('override').hidden = !m.live_override || m.state === 'LIVE_OVERRIDE';
    $('back-live').hidden = m.state === 'FOLLOWING_LIVESTREAM' && !m.offered;
    const offer = m.offered && m.offered !== st.dismissedOffer;
    $('offer').hidden = !offer;
    body.dataset.offered = m.offered || '';
    if (offer) $('offer-text').textContent = `A group replay started: ${m.offered}.`;
    const replaying = m.state === 'FOLLOWING_GROUP_REPLAY' || m.state === 'FOLLOWING_PRIVATE_REPLAY';
    $('replay-controls').hidden = !replaying;
    $('rc-channel').textContent = replaying ? m.channel_id : '';
    renderChannels();
  },
  display(m) {
    if (m.name === 'units') {
      const u = readUnits(m.payload);
      if (u) {
        st.units = u;
        body.dataset.units = u;
        $('units').value = u;
        if (map) map.setUnits(u);
        renderDetail(st.lastDetail);
      }
    } else if (m.name === 'marker_color') {
      const c = readColor(m.payload);
      if (c) {
        st.color = c;
        $('marker-color').value = c;
        if (map) map.setColor(c);
      }
    } else if (m.name === 'session_metadata' && m.payload && typeof m.payload === 'object') {
      $('session').textContent = `${m.payload.name ?? ''} (${m.payload.id ?? ''})`;
      body.dataset.session = m.payload.id ?? '';
    }
  },
  tag(m) {
    tags.add(m);
    renderTags();
    toast(`tag "${m.label}"${m.creator ? ` by ${m.creator}` : ''}`);
  },
  tags(m) {
    for (const t of m.tags) tags.add(t);
    renderTags();
  },
  control() {},
  roster(m) {
    st.roster = m.clients;
    renderRoster();
  },
  ops_log(m) {
    opsLog.add(m.lines);
    renderLog();
  },
  latency(m) {
    st.latency = m;
    renderHealth();
  },
  health(m) {
    st.health = m;
    renderHealth();
  },
  directory(m) {
    st.directory = m.channels;
    renderChannels();
  },
  timeline(m) {
    st.timeline = { first: m.first_unix_ms, last: m.last_unix_ms, messages: m.messages, archive: m.archive };
    renderTimeline();
  },
  track_detail(m) {
    if (m.id !== st.detailId) return;
    st.lastDetail = m;
    renderDetail(m);
  },
  done(m) {
    toast(m.what);
  },
  error(m) {
    toast(m.reason, true);
    body.dataset.lastError = m.reason;
  },
  bye(m) {
    toast(`hub: ${m.reason}`, true);
  },
};

// --- panels -----------------------------------------------------------------

function renderChannels() {
  const ul = $('channels');
  const cur = st.state?.channel_id;
  ul.replaceChildren(
    ...st.directory.map((c) => {
      const li = document.createElement('li');
      li.dataset.channel = c.channel_id;
      li.className = c.channel_id === cur ? 'current' : '';
      li.textContent = `${c.channel_id === cur ? '▶ ' : ''}${c.display_name || c.channel_id} · ${c.kind.replace('_', ' ')}`;
      return li;
    }),
  );
}

function renderRoster() {
  const now = Date.now();
  $('roster').tBodies[0].replaceChildren(
    ...st.roster.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.client = c.client_id;
      const cells = [
        c.client_id,
        c.channel_id,
        c.state.replace('FOLLOWING_', '').toLowerCase() + (c.live_override ? ' (override)' : ''),
        fmtTime(c.since_unix_ms),
        `${Math.max(0, Math.round((now - c.seen_unix_ms) / 1000))} s ago`,
        c.operator ?? '',
        c.ping_ms == null ? '—' : `${c.ping_ms.toFixed(1)} ms`,
      ];
      tr.replaceChildren(...cells.map((t) => Object.assign(document.createElement('td'), { textContent: t })));
      if (c.ping_ms != null) tr.dataset.ping = String(c.ping_ms);
      return tr;
    }),
  );
}

function renderLog() {
  $('ops-log').replaceChildren(
    ...opsLog.lines.map((l) => {
      const li = document.createElement('li');
      const time = document.createElement('time');
      time.textContent = fmtTime(l.unix_ms);
      li.append(time, l.text);
      return li;
    }),
  );
}

let plot = null;
function renderHealth() {
  const rows = [];
  const v = healthVerdict(st.health);
  const row = (cells, bad = []) => {
    const tr = document.createElement('tr');
    cells.forEach((c, i) => {
      const td = document.createElement(rows.length === 0 ? 'th' : 'td');
      td.textContent = c;
      if (bad[i]) td.className = 'bad';
      tr.append(td);
    });
    rows.push(tr);
  };
  row(['box', 'in/s', 'acked/s', 'p50', 'p99', 'p99.9', 'drops (interval)', 'spool']);
  const lat = st.latency?.per_box || {};
  const fmt = (x) => (x == null ? '—' : `${x.toFixed(2)}`);
  for (const [host, b] of Object.entries(st.health?.per_box || {})) {
    const r = lat[host]?.receive_to_ack;
    const drops = Object.entries(b.drops).filter(([, n]) => n > 0).map(([k, n]) => `${k} +${n}`);
    const sp = b.spool;
    const spool = sp
      ? `${sp.held} held (${sp.max_bytes ? ((100 * sp.bytes) / sp.max_bytes).toFixed(0) : '?'}%)${sp.held ? `, oldest ${sp.oldest_age_s} s` : ''}`
      : '—';
    row(
      [host, b.received_per_s.toFixed(0), b.acked_per_s.toFixed(0), fmt(r?.p50), fmt(r?.p99), fmt(r?.p999), drops.join(', ') || 'none', spool],
      [false, false, false, false, false, false, drops.length > 0, sp != null && sp.held > 0],
    );
  }
  const m = st.latency?.merged?.receive_to_ack;
  if (m) row(['merged (ms)', '', '', fmt(m.p50), fmt(m.p99), fmt(m.p999), `max ${fmt(m.max)}`, '']);
  $('health-table').replaceChildren(...rows);
  body.dataset.health = v.red ? 'red' : 'ok';
  const badge = $('health-badge');
  badge.textContent = v.red ? 'data plane: drops' : 'data plane ok';
  badge.className = `badge ${v.red ? 'bad' : 'ok'}`;
  const dist = st.health?.distribution || [];
  if (dist.length && window.uPlot) {
    const data = distributionSeries(dist);
    if (!plot) {
      plot = new window.uPlot(
        {
          width: 390, height: 170, title: 'receive → ack (ms) by percentile',
          scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
          axes: [
            {
              stroke: '#7d95a5',
              splits: () => [1, 2, 10, 100, 1000, 10000, 100000, 1e6],
              values: (u, vals) => vals.map((x) => ({ 1: '0%', 2: '50%', 10: '90%', 100: '99%', 1000: '99.9%', 10000: '99.99%', 100000: '99.999%', 1000000: 'max' })[x] ?? ''),
            },
            { stroke: '#7d95a5' },
          ],
          series: [{}, { label: 'merged', stroke: '#3fb37f', width: 2 }],
          legend: { show: false },
        },
        data,
        $('health-plot'),
      );
    } else {
      plot.setData(data);
    }
  }
}

function renderTags() {
  const sel = $('tl-tag');
  const keep = sel.value;
  const list = tags.sorted();
  sel.replaceChildren(
    Object.assign(document.createElement('option'), { value: '', textContent: '—' }),
    ...list.map((t) => Object.assign(document.createElement('option'), {
      value: t.id, textContent: `${t.label} · ${new Date(t.ts_unix_us / 1000).toISOString().slice(5, 19)}`,
    })),
  );
  sel.value = keep;
  renderTimeline();
}

/** The extent the slider spans: the archive's (from its per-minute
 * aggregate) when replaying from the archive and the hub can read it, else
 * the stream's. */
function extent() {
  const a = st.timeline.archive;
  if ($('tl-source').value === 'archive' && a) return { first: a.first_unix_ms, last: a.last_unix_ms, archive: a };
  return { first: st.timeline.first, last: st.timeline.last, archive: null };
}

function windowTimes() {
  const { first, last } = extent();
  if (first == null || last == null) return null;
  const a = fromFraction(Number($('tl-start').value) / 1000, first, last);
  const b = fromFraction(Number($('tl-end').value) / 1000, first, last);
  return [Math.min(a, b), Math.max(a, b)];
}

/** Rows per bucket of the archive as bars behind the slider's track. */
function drawDensity(archive, first, last) {
  const c = $('tl-density');
  const w = c.clientWidth;
  const h = c.clientHeight;
  c.width = w;
  c.height = h;
  const g = c.getContext('2d');
  g.clearRect(0, 0, w, h);
  if (!archive || !archive.density.length) return;
  const max = Math.max(...archive.density.map((d) => d[1]));
  g.fillStyle = 'rgba(127, 209, 168, 0.45)';
  for (const [at, rows] of archive.density) {
    const x0 = toFraction(at, first, last) * w;
    const x1 = toFraction(at + archive.bucket_ms, first, last) * w;
    const bh = max ? Math.max(1, (rows / max) * h) : 0;
    g.fillRect(x0, h - bh, Math.max(1, x1 - x0), bh);
  }
}

function renderTimeline() {
  const { first, last, archive } = extent();
  const from = archive ? 'archive' : 'stream';
  $('tl-first').textContent = first ? `${from} ${iso(first).slice(0, 19)}` : `${from} empty`;
  $('tl-last').textContent = last ? iso(last).slice(0, 19) : '';
  body.dataset.timelineFrom = first ? from : '';
  drawDensity(archive, first, last);
  const w = windowTimes();
  if (w) {
    $('tl-start-text').textContent = iso(w[0]).slice(11, 23);
    $('tl-end-text').textContent = iso(w[1]).slice(11, 23);
    const win = $('tl-window');
    win.style.left = `${toFraction(w[0], first, last) * 100}%`;
    win.style.width = `${(toFraction(w[1], first, last) - toFraction(w[0], first, last)) * 100}%`;
  }
  $('tl-tags').replaceChildren(
    ...(first == null ? [] : tags.sorted()
      .filter((t) => t.ts_unix_us / 1000 >= first && t.ts_unix_us / 1000 <= last)
      .map((t) => {
        const i = document.createElement('i');
        i.style.left = `${toFraction(t.ts_unix_us / 1000, first, last) * 100}%`;
        i.title = t.label;
        return i;
      })),
  );
}

function updatePlayhead() {
  const s = st.state?.state;
  if (s !== 'FOLLOWING_GROUP_REPLAY' && s !== 'FOLLOWING_PRIVATE_REPLAY') {
    $('tl-playhead').hidden = true;
    return;
  }
  const fix = store.newestFix();
  const win = st.replayWindow || windowTimes();
  if (!fix || !win) return;
  const at = fixTimeMs(fix.day, fix.time_s, win[0]);
  body.dataset.playheadMs = String(at);
  $('rc-playhead').textContent = iso(at).slice(11, 23);
  if (!seeking) $('rc-seek').value = String(Math.round(toFraction(at, win[0], win[1]) * 1000));
  const { first, last } = extent();
  if (first != null) {
    const ph = $('tl-playhead');
    ph.hidden = false;
    ph.style.left = `${toFraction(at, first, last) * 100}%`;
  }
}

function renderDetail(m) {
  if (!m) return;
  $('detail').hidden = false;
  $('detail-title').textContent = m.id;
  const t = m.track;
  $('detail-summary').textContent =
    `${formatAltitude(t.alt_m, st.units)} · ${formatSpeed(t.speed_mps, st.units)} · ` +
    `hdg ${t.heading_deg == null ? '—' : `${t.heading_deg.toFixed(0)}°`} · ` +
    `age ${(m.age_ms / 1000).toFixed(1)} s · ${m.updates_per_s.toFixed(1)} updates/s${m.stale ? ' · STALE' : ''}`;
  const rows = [];
  const add = (k, v) => {
    const tr = document.createElement('tr');
    tr.append(Object.assign(document.createElement('td'), { textContent: k }), Object.assign(document.createElement('td'), { textContent: v }));
    rows.push(tr);
  };
  add('lat, lon', `${t.lat_deg.toFixed(6)}, ${t.lon_deg.toFixed(6)}`);
  add('altitude (ellipsoid)', formatAltitude(t.alt_m, st.units));
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj)) {
      if (v && typeof v === 'object') walk(v, `${prefix}${k}.`);
      else add(`${prefix}${k}`, String(v));
    }
  };
  walk(m.record, '');
  $('detail-fields').replaceChildren(...rows);
}

// --- actions ----------------------------------------------------------------

function spec() {
  const s = { rate: Number($('tl-rate').value) || 1, source: $('tl-source').value };
  const tag = $('tl-tag').value;
  if (tag) {
    s.tag = tag;
  } else {
    const w = windowTimes();
    if (!w) {
      toast('nothing to replay yet: the stream is empty', true);
      return null;
    }
    s.start = iso(w[0]);
    s.end = iso(w[1]);
  }
  return s;
}

function rememberWindow(s) {
  if (s.start) {
    st.replayWindow = [Date.parse(s.start), Date.parse(s.end)];
  } else {
    const t = tags.byId.get(s.tag);
    st.replayWindow = t && st.timeline.last ? [t.ts_unix_us / 1000 - 60000, st.timeline.last] : null;
  }
}

let seeking = false;

function wire() {
  $('back-live').onclick = () => send({ type: 'back_to_live' });
  $('join-group').onclick = () => send({ type: 'join_group' });
  $('offer-dismiss').onclick = () => {
    st.dismissedOffer = st.state?.offered;
    $('offer').hidden = true;
  };
  $('detail-close').onclick = () => {
    st.detailId = null;
    st.lastDetail = null;
    $('detail').hidden = true;
  };
  $('tl-start').oninput = $('tl-end').oninput = $('tl-source').onchange = renderTimeline;
  $('start-group').onclick = () => {
    const s = spec();
    if (!s) return;
    rememberWindow(s);
    send({ type: 'group_replay_start', spec: s });
  };
  $('start-private').onclick = () => {
    const s = spec();
    if (!s) return;
    rememberWindow(s);
    send({ type: 'private_replay_start', spec: s });
  };
  const control = (action, extra = {}) => send({ type: 'replay_control', channel_id: st.state?.channel_id, action, ...extra });
  $('rc-pause').onclick = () => control('pause');
  $('rc-resume').onclick = () => control('resume');
  $('rc-set-rate').onclick = () => control('rate', { rate: Number($('rc-rate').value) || 1 });
  $('rc-seek').onpointerdown = () => (seeking = true);
  $('rc-seek').onchange = () => {
    seeking = false;
    const win = st.replayWindow || windowTimes();
    if (win) control('seek', { to: iso(fromFraction(Number($('rc-seek').value) / 1000, win[0], win[1])) });
  };
  $('rc-stop').onclick = () => {
    const ch = st.state?.channel_id || '';
    if (ch.startsWith('client.')) send({ type: 'private_replay_stop', session_id: ch.split('.').slice(2).join('.') });
    else send({ type: 'group_replay_stop', channel_id: ch });
  };
  $('units').onchange = () => send({ type: 'display', name: 'units', payload: $('units').value });
  $('marker-color').onchange = () => send({ type: 'display', name: 'marker_color', payload: $('marker-color').value });
  $('session-send').onclick = () => send({ type: 'display', name: 'session_metadata', payload: { name: $('session-name').value, id: $('session-id').value } });
  // The tag's moment is frozen when the button is pressed, not when the
  // comment is sent.
  let frozen = null;
  $('tag-button').onclick = () => {
    frozen = new Date();
    $('tag-time').textContent = frozen.toISOString().slice(11, 23);
    $('tag-label').value = '';
    $('tag-notes').value = '';
    $('tag-dialog').showModal();
  };
  $('tag-dialog').addEventListener('close', () => {
    if ($('tag-dialog').returnValue !== 'send' || !frozen) return;
    const label = $('tag-label').value.trim() || 'tag';
    const notes = $('tag-notes').value.trim();
    send({ type: 'tag', label, ts: frozen.toISOString(), ...(notes ? { notes } : {}) });
    frozen = null;
  });
  // Details of the clicked track, refreshed every second while open.
  setInterval(() => {
    if (st.detailId) send({ type: 'track_detail', id: st.detailId });
    renderRoster();
  }, 1000);
}

function pick(id) {
  st.detailId = id;
  send({ type: 'track_detail', id });
}

async function main() {
  wire();
  try {
    st.cfg = await (await fetch('/config.json')).json();
  } catch {
    st.cfg = { map: { origin: null, rings_km: [], tiles: null } };
  }
  try {
    // `?map=0`: the panels without the map (the page bench's comparison).
    if (params.get('map') === '0') throw new Error('switched off by ?map=0');
    map = new LiveMap($('map'), st.cfg.map, pick);
    map.store = store;
    body.dataset.map = 'ok';
  } catch (e) {
    // No WebGL: the panels still work; say why the map is missing.
    body.dataset.map = `failed: ${e.message}`;
    $('map').textContent = `The map needs WebGL: ${e.message}`;
  }
  connect();
}

main();
