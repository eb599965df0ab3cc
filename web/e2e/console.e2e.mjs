// The operator's page in a real browser, against a running appliance
// (tests/it/web.rs starts nats-server, `tspi run` with ingest, channels and
// the console, and a loadgen fleet, then runs this):
//
//   node web/e2e/console.e2e.mjs --url http://127.0.0.1:PORT --token T --tracks N --out DIR
//
// Each step prints `ok <step>` or throws (exit 1) with what the pages
// showed. At the end a screenshot of the live page is written to
// DIR/console.png.
import { launch, openPage, waitBody } from './browser.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const origin = args.url;
const token = args.token;
const tracks = Number(args.tracks || 10);
const out = args.out || '.';
mkdirSync(out, { recursive: true });

const t0 = Date.now();
const ok = (step) => console.log(`ok ${step} [${((Date.now() - t0) / 1000).toFixed(1)} s]`);
const body = (page) => page.evaluate(() => ({ ...document.body.dataset }));

const { browser, close } = await launch();
const pages = [];
try {
  // --- the page loads with no request leaving the machine; tracks appear --
  const viewer = await openPage(browser, origin, '/?client_id=viewer-a');
  const ops = await openPage(browser, origin, `/?client_id=ops-b&token=${encodeURIComponent(token)}`);
  pages.push(viewer, ops);
  for (const p of pages) {
    await waitBody(p, () => document.body.dataset.connected === 'true' && document.body.dataset.state === 'FOLLOWING_LIVESTREAM', 'connected, following the livestream');
    await waitBody(p, (n) => Number(document.body.dataset.trackCount) >= n, `${tracks} tracks shown`, { arg: tracks });
  }
  const f1 = Number((await body(viewer)).lastFrameMs);
  await waitBody(viewer, (f) => Number(document.body.dataset.lastFrameMs) > f, 'frames keep coming', { arg: f1 });
  const b = await body(viewer);
  if (b.channel !== 'livestream' || b.map !== 'ok') throw new Error(`viewer: ${JSON.stringify(b)}`);
  ok(`page loads offline and shows the fleet (${b.trackCount} tracks, map ${b.map})`);

  // --- the offline basemap: PMTiles read by byte ranges from the hub ---
  if (args.basemap) {
    await viewer.waitForFunction(() => {
      const m = window.tspi.map?.map;
      return m && m.getLayer('base') && m.isSourceLoaded('base');
    }, null, { timeout: 20000 });
    const px = await viewer.evaluate(async () => {
      const m = window.tspi.map.map;
      const c = m.getCanvas();
      // Read the drawing buffer while it is valid: in a render event.
      const url = await new Promise((resolve) => {
        m.once('render', () => resolve(c.toDataURL('image/png')));
        m.triggerRepaint();
      });
      const img = new Image();
      img.src = url;
      await img.decode();
      const g = Object.assign(document.createElement('canvas'), { width: c.width, height: c.height }).getContext('2d');
      g.drawImage(img, 0, 0);
      return [...g.getImageData(Math.floor(c.width * 0.9), Math.floor(c.height * 0.15), 1, 1).data];
    });
    if (!viewer.tiles.includes(206)) throw new Error(`no range request answered for the basemap: ${viewer.tiles}`);
    // The background alone is #0e1a24; the tile (#2a5d3c at 0.8) over it is far greener.
    if (!(px[1] > 0x40 && px[1] > px[2])) throw new Error(`the basemap is not drawn: pixel ${px}`);
    ok(`the offline basemap is drawn (PMTiles by range: ${viewer.tiles.filter((s) => s === 206).length} partial answers; pixel rgb(${px.slice(0, 3)}))`);
  }

  // --- a viewer sees no operator controls, and the hub refuses its actions
  for (const id of ['tag-button', 'replay-panel', 'display-panel']) {
    if (await viewer.isVisible(`#${id}`)) throw new Error(`viewer sees #${id}`);
    if (!(await ops.isVisible(`#${id}`))) throw new Error(`operator does not see #${id}`);
  }
  if ((await body(viewer)).operator !== 'false' || (await body(ops)).operator !== 'true') throw new Error('roles');
  await viewer.evaluate(() => window.tspi.st.ws.send(JSON.stringify({ type: 'tag', label: 'sneaky' })));
  await waitBody(viewer, () => (document.body.dataset.lastError || '').includes('viewers cannot act'), 'the hub refuses a viewer\'s action');
  ok('a viewer has no operator controls and the hub refuses its actions');

  // --- click a track: its details; units switched by an operator ----------
  const clickTrack = async (page) => {
    const at = await page.evaluate(() => {
      const m = window.tspi.map.map;
      const c = m.getCanvas().getBoundingClientRect();
      for (const t of window.tspi.store.tracks.values()) {
        if (t.stale) continue;
        const p = m.project([t.lon_deg, t.lat_deg]);
        if (p.x > 20 && p.y > 20 && p.x < c.width - 20 && p.y < c.height - 20) return { x: c.left + p.x, y: c.top + p.y };
      }
      return null;
    });
    if (!at) throw new Error('no track on screen to click');
    await page.mouse.click(at.x, at.y);
    await page.waitForSelector('#detail:not([hidden])', { timeout: 4000 });
  };
  // On a loaded machine the drawn dot can lag its track: try a few times.
  const clickTrackRetrying = async (page) => {
    for (let i = 1; ; i++) {
      try {
        return await clickTrack(page);
      } catch (e) {
        if (i >= 5) throw e;
      }
    }
  };
  await clickTrackRetrying(viewer);
  await viewer.waitForFunction(() => /updates\/s/.test(document.getElementById('detail-summary').textContent), null, { timeout: 10000 });
  const fields = await viewer.$$eval('#detail-fields td:first-child', (tds) => tds.map((t) => t.textContent));
  for (const f of ['sensor_id', 'day', 'time_s', 'status', 'recv_iso', 'payload.x_m', 'payload.vx_mps']) {
    if (!fields.includes(f)) throw new Error(`details lack ${f}: ${fields.join(', ')}`);
  }
  const metric = await viewer.textContent('#detail-summary');
  if (!/\d m ·/.test(metric)) throw new Error(`altitude not in metres: ${metric}`);
  await ops.selectOption('#units', 'imperial');
  await waitBody(viewer, () => document.body.dataset.units === 'imperial', 'units reach the viewer');
  await viewer.waitForFunction(() => / ft ·/.test(document.getElementById('detail-summary').textContent), null, { timeout: 5000 });
  ok(`track details show every field; units switched by an operator: "${metric.split(' · ')[0]}" -> "${(await viewer.textContent('#detail-summary')).split(' · ')[0]}"`);
  await ops.selectOption('#units', 'metric');
  await waitBody(viewer, () => document.body.dataset.units === 'metric', 'units back to metric');

  // --- a tag made in one browser appears in the other ---------------------
  const label = `merge-${Date.now() % 100000}`;
  await ops.click('#tag-button');
  await ops.fill('#tag-label', label);
  await ops.fill('#tag-notes', 'clean pass');
  await ops.click('#tag-send');
  await viewer.waitForFunction((l) => [...document.querySelectorAll('#tl-tag option')].some((o) => o.textContent.startsWith(l)), label, { timeout: 10000 });
  await viewer.waitForFunction((l) => document.getElementById('ops-log').textContent.includes(l), label, { timeout: 10000 });
  ok(`a tag made in one browser ("${label}") appears in the other`);

  // --- both browsers are in the roster, with a ping -----------------------
  for (const p of pages) {
    await p.waitForFunction(() => ['viewer-a', 'ops-b'].every((c) => document.querySelector(`#roster tr[data-client="${c}"][data-ping]`)), null, { timeout: 20000 });
  }
  ok('both browsers are in the roster with a ping measured by the hub');

  // --- private replay, then a group replay: the offer; back to live -------
  const ops2 = await openPage(browser, origin, `/?client_id=ops-c&token=${encodeURIComponent(token)}`);
  pages.push(ops2);
  await waitBody(ops2, () => document.body.dataset.state === 'FOLLOWING_LIVESTREAM' && document.body.dataset.operator === 'true', 'second operator connected');
  await ops2.waitForFunction(() => window.tspi.st.timeline.first != null, null, { timeout: 15000 });
  await ops2.click('#start-private');
  await waitBody(ops2, () => document.body.dataset.state === 'FOLLOWING_PRIVATE_REPLAY' && document.body.dataset.channel.startsWith('client.ops-c.'), 'private replay followed');
  await waitBody(ops2, () => Number(document.body.dataset.trackCount) > 0, 'private replay shows tracks');
  ok(`a private replay: ${(await body(ops2)).channel}`);

  await ops.waitForFunction(() => window.tspi.st.timeline.first != null, null, { timeout: 15000 });
  await ops.click('#start-group');
  for (const p of [viewer, ops]) {
    await waitBody(p, () => document.body.dataset.state === 'FOLLOWING_GROUP_REPLAY' && document.body.dataset.channel.startsWith('replay.'), 'the group replay switches the page');
  }
  await waitBody(viewer, () => Number(document.body.dataset.trackCount) > 0, 'the group replay shows tracks');
  const group = (await body(viewer)).channel;
  await waitBody(ops2, () => document.body.dataset.state === 'FOLLOWING_PRIVATE_REPLAY' && document.body.dataset.offered !== '', 'the private replay keeps its page and gets the offer');
  if (!(await ops2.isVisible('#offer'))) throw new Error('offer not shown');
  ok(`a group replay (${group}) switches the viewer; the private replay keeps its page and shows the offer`);

  // The playhead moves at the replay's pace; pause holds it.
  await waitBody(ops, () => Number(document.body.dataset.playheadMs) > 0, 'a playhead');
  const p0 = Number((await body(ops)).playheadMs);
  await waitBody(ops, (p) => Number(document.body.dataset.playheadMs) > p, 'the playhead moves', { arg: p0 + 500 });
  ok('the playhead moves with the replay');

  await viewer.click('#back-live');
  await waitBody(viewer, () => document.body.dataset.state === 'LIVE_OVERRIDE' && document.body.dataset.channel === 'livestream', 'back to live');
  await waitBody(viewer, (n) => Number(document.body.dataset.trackCount) >= n, 'live tracks again', { arg: tracks });
  ok('back to live works (LIVE_OVERRIDE on the livestream)');

  await ops2.click('#join-group');
  await waitBody(ops2, () => document.body.dataset.state === 'FOLLOWING_GROUP_REPLAY', 'joining the group replay');
  ok('the offer joins the group replay');

  // --- nothing left the machine; no script errors -------------------------
  for (const p of pages) {
    if (p.foreign.length) throw new Error(`requests left the machine: ${p.foreign.join(', ')}`);
    if (p.errors.length) throw new Error(`page errors: ${p.errors.join(' | ')}`);
  }
  ok('no request left the machine; no page errors');

  // --- a screenshot of the live page, for a person ------------------------
  await ops.click('#back-live');
  await waitBody(ops, () => document.body.dataset.channel === 'livestream', 'operator back to live');
  await waitBody(ops, (n) => Number(document.body.dataset.trackCount) >= n, 'live tracks on the operator page', { arg: tracks });
  await ops.waitForTimeout(1500);
  await ops.screenshot({ path: join(out, 'console.png') });
  ok(`screenshot ${join(out, 'console.png')}`);
} finally {
  await close();
}
