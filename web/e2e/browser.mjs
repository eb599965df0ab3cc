// Debian's Chromium, driven by Playwright (playwright-core: no browser
// download), headless, with the network closed: every request that is not
// to the appliance under test is aborted and recorded.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.TSPI_CHROMIUM || '/usr/bin/chromium';

/** Flags for a headless Chromium on a machine with no network and no GPU:
 * no background networking (it would try Google's hosts at every start),
 * WebGL on SwiftShader (software) for the map. */
export const FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--metrics-recording-only',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
  '--disable-dev-shm-usage',
];

/** Chromium with a new, empty profile (Playwright makes one per launch
 * and removes it on close). */
export async function launch() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  const close = () => browser.close().catch(() => {});
  return { browser, close };
}

/** A page whose requests may reach only `origin` (the appliance); others
 * are aborted and listed in `page.foreign`. */
export async function openPage(browser, origin, path, { width = 1400, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.foreign = [];
  page.errors = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    page.foreign.push(url);
    return route.abort();
  });
  page.tiles = [];
  page.on('response', (r) => {
    if (r.url().includes('/tiles.pmtiles')) page.tiles.push(r.status());
  });
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(m.text());
  });
  await page.goto(`${origin}${path}`);
  return page;
}

/** Wait until `fn(arg)` is truthy in the page (a function, never a
 * string: the page's Content-Security-Policy forbids eval). */
export async function waitBody(page, fn, what, { timeout = 30000, arg = null } = {}) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const ds = await page
      .evaluate(() => ({
        ...document.body.dataset,
        timeline: window.tspi?.st.timeline,
        replayWindow: window.tspi?.st.replayWindow,
        newestFix: window.tspi?.store.newestFix(),
        stale: [...(window.tspi?.store.tracks.values() || [])].filter((t) => t.stale).length,
        now: Date.now(),
        messages: window.tspi?.perf.messages,
      }))
      .catch(() => ({}));
    throw new Error(`${what}: not within ${timeout} ms (${e.message.split("\n")[0]}); body: ${JSON.stringify(ds)}; errors: ${page.errors.join(' | ')}`);
  }
}
