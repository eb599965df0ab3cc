// The page's own work per frame in a real browser (bench/page.rs runs it
// against `tspi console serve` fed 1,000 tracks at 10 Hz):
//
//   node web/bench/page.bench.mjs --url http://127.0.0.1:PORT --tracks N --seconds S
//
// After the tracks are all shown and a warm-up (long enough to fill the
// trails), the page's timings are reset; S seconds later they are read:
// per frame, performance.now() around the message handler (receive,
// decode, apply to the track store), and per map update (at most one per
// animation frame: the store's tracks and trails handed to MapLibre).
// Memory: the JS heap after a forced garbage collection (CDP), at the start
// and at the end of the S seconds, and the renderer's heap samples every
// tenth of the run. Prints one JSON line.
import { launch, openPage, waitBody } from '../e2e/browser.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const origin = args.url;
const tracks = Number(args.tracks || 1000);
const seconds = Number(args.seconds || 300);
const warmup = Number(args.warmup || 10);
const query = args.query || '';

const { browser, close } = await launch();
try {
  const page = await openPage(browser, origin, `/?client_id=bench${query ? `&${query}` : ''}`);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    return { js_heap_used_mib: m.JSHeapUsedSize / 1048576, nodes: m.Nodes, listeners: m.JSEventListeners };
  };
  await waitBody(page, (n) => Number(document.body.dataset.trackCount) >= n, `${tracks} tracks shown`, { arg: tracks, timeout: 60000 });
  await page.waitForTimeout(warmup * 1000);
  await page.evaluate(() => {
    window.tspi.perf.frameMs.length = 0;
    window.tspi.perf.snapshotMs.length = 0;
    window.tspi.perf.mapMs.length = 0;
    window.tspi.perf.mapUpdates = 0;
    window.tspi.perf.messages = 0;
    window.tspi.perf.bytes = 0;
  });
  const start = await heap();
  const samples = [];
  const step = (seconds * 1000) / 10;
  for (let i = 0; i < 10; i++) {
    await page.waitForTimeout(step);
    const { metrics } = await cdp.send('Performance.getMetrics');
    samples.push(Number((metrics.find((x) => x.name === 'JSHeapUsedSize').value / 1048576).toFixed(2)));
  }
  const end = await heap();
  const r = await page.evaluate(() => {
    const p = window.tspi.perf;
    const f = p.frameMs;
    const pc = (q) => window.tspi.percentile(f, q);
    return {
      frames: f.length, messages: p.messages, mib_received: p.bytes / 1048576,
      frame_ms_p50: pc(50), frame_ms_p99: pc(99), frame_ms_max: pc(100),
      map_updates: p.mapUpdates,
      map_ms_p50: window.tspi.percentile(p.mapMs, 50), map_ms_p99: window.tspi.percentile(p.mapMs, 99),
      map_ms_max: window.tspi.percentile(p.mapMs, 100),
      tracks_shown: window.tspi.store.size,
      label_ms_p99: window.tspi.percentile(window.tspi.map?.labelMs || [], 99),
    };
  });
  const body = await page.evaluate(() => ({ ...document.body.dataset }));
  console.log(JSON.stringify({ tracks, seconds, ...r, heap_start: start, heap_end: end, heap_samples_mib: samples, state: body.state, errors: page.errors, foreign: page.foreign }));
} finally {
  await close();
}
