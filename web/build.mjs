// Builds the page into dist/: our modules as they are (no bundler: the
// browser loads ES modules) and the pinned libraries' own builds from
// node_modules (package-lock.json pins them). `npm ci && npm run build`;
// scripts/setup runs it. The hub serves dist/ ([console] web_dir).
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const nm = join(here, 'node_modules');

// What the page loads from each library, and where it goes.
const vendor = [
  ['maplibre-gl/dist/maplibre-gl.mjs', 'vendor/maplibre-gl.mjs'],
  ['maplibre-gl/dist/maplibre-gl-worker.mjs', 'vendor/maplibre-gl-worker.mjs'],
  ['maplibre-gl/dist/maplibre-gl-shared.mjs', 'vendor/maplibre-gl-shared.mjs'],
  ['maplibre-gl/dist/maplibre-gl.css', 'vendor/maplibre-gl.css'],
  ['maplibre-gl/LICENSE.txt', 'vendor/LICENSE.maplibre-gl.txt'],
  ['pmtiles/dist/pmtiles.js', 'vendor/pmtiles.js'],
  ['pmtiles/LICENSE', 'vendor/LICENSE.pmtiles.txt'],
  ['uplot/dist/uPlot.iife.min.js', 'vendor/uPlot.iife.min.js'],
  ['uplot/dist/uPlot.min.css', 'vendor/uPlot.min.css'],
  ['uplot/LICENSE', 'vendor/LICENSE.uplot.txt'],
];

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'vendor'), { recursive: true });
cpSync(join(here, 'src'), dist, { recursive: true });
const versions = {};
for (const [from, to] of vendor) {
  const src = join(nm, from);
  if (!existsSync(src)) {
    if (from.includes('LICENSE')) continue;
    console.error(`build: ${src} is missing: run \`npm ci\` in web/ first`);
    process.exit(1);
  }
  // Drop source-map comments: the maps are not shipped, and a browser
  // with its developer tools open would ask for them.
  if (/\.(m?js|css)$/.test(to)) {
    const text = readFileSync(src, 'utf8').replace(/\n\/[/*][#@] sourceMappingURL=[^\n]*\s*$/, '\n');
    writeFileSync(join(dist, to), text);
  } else {
    cpSync(src, join(dist, to));
  }
  const pkg = from.split('/')[0];
  versions[pkg] = JSON.parse(readFileSync(join(nm, pkg, 'package.json'), 'utf8')).version;
}
writeFileSync(join(dist, 'vendor/versions.json'), `${JSON.stringify(versions, null, 2)}\n`);
console.log(`build: ${dist} (${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')})`);
