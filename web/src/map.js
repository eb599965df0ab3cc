// The live map: MapLibre GL with no network. Without a basemap it draws a
// background, a graticule, the range origin and its rings; with
// `[console.map] tiles` it adds the PMTiles basemap the hub serves. Tracks
// are a GeoJSON circle layer in the session's marker colour, grey when
// stale, each with a velocity leader (heading and speed: where it will be
// in 30 s); trails a line layer;
// labels (sensor id and altitude) are drawn on a canvas over the map, so
// no glyph server is needed.

import * as maplibregl from './vendor/maplibre-gl.mjs';
import { graticule, ringCoords, trackLabel } from './model.js';

/** Trail points drawn per track (the store keeps more). */
const TRAIL_DRAWN = 120;
/** Trails are redrawn at most this often (ms): positions every frame. */
const TRAIL_EVERY_MS = 1000;
/** Labels drawn at most (the rest of a dense picture is symbols alone). */
const LABELS_MAX = 200;
/** Labels are redrawn at most this often (ms) while the view is still. */
const LABELS_EVERY_MS = 333;
const STALE_COLOR = '#8a8f98';

/** Seconds ahead a velocity leader points. */
const LEADER_S = 30;
const M_PER_DEG = 111320;

/** Where a track at (lon, lat) moving `speed` m/s on `heading` degrees
 * will be in `s` seconds (flat earth: leaders are a few km). */
export function ahead(lon, lat, speed, heading, s = LEADER_S) {
  const d = speed * s;
  const h = (heading * Math.PI) / 180;
  const dLat = (d * Math.cos(h)) / M_PER_DEG;
  const dLon = (d * Math.sin(h)) / (M_PER_DEG * Math.max(0.01, Math.cos((lat * Math.PI) / 180)));
  return [lon + dLon, lat + dLat];
}

const empty = () => ({ type: 'FeatureCollection', features: [] });

export class LiveMap {
  /**
   * @param {HTMLElement} el the map's container
   * @param {object} cfg `/config.json`'s `map`
   * @param {(id: string) => void} onPick a track was clicked
   */
  constructor(el, cfg, onPick) {
    this.cfg = cfg;
    this.units = 'metric';
    this.color = '#ffb000';
    this.origin = cfg.origin ? [cfg.origin.lon_deg, cfg.origin.lat_deg] : null;
    this.ready = false;
    this.lastTrailMs = 0;
    this.store = null;
    this.labelMs = [];
    const style = {
      version: 8,
      sources: {
        grat: { type: 'geojson', data: empty() },
        rings: { type: 'geojson', data: empty() },
        origin: { type: 'geojson', data: empty() },
        trails: { type: 'geojson', data: empty() },
        leaders: { type: 'geojson', data: empty() },
        tracks: { type: 'geojson', data: empty() },
      },
      layers: [
        { id: 'bg', type: 'background', paint: { 'background-color': '#0e1a24' } },
        { id: 'grat', type: 'line', source: 'grat', paint: { 'line-color': '#27404f', 'line-width': 1 } },
        { id: 'rings', type: 'line', source: 'rings', paint: { 'line-color': '#3f6b57', 'line-width': 1.2, 'line-dasharray': [4, 3] } },
        { id: 'origin', type: 'circle', source: 'origin', paint: { 'circle-radius': 5, 'circle-color': '#0e1a24', 'circle-stroke-color': '#7fd1a8', 'circle-stroke-width': 2 } },
        { id: 'trails', type: 'line', source: 'trails', paint: { 'line-color': ['get', 'color'], 'line-opacity': 0.55, 'line-width': 1.5 } },
        // A velocity leader (where the track will be in LEADER_S at its
        // speed and heading, as on a radar scope) and a dot: cheaper to
        // draw than rotated icons, which matters without a GPU.
        { id: 'leaders', type: 'line', source: 'leaders', paint: { 'line-color': ['get', 'color'], 'line-width': 1.5 } },
        {
          id: 'tracks', type: 'circle', source: 'tracks',
          paint: { 'circle-radius': 4.5, 'circle-color': ['get', 'color'], 'circle-stroke-color': '#000', 'circle-stroke-width': 1 },
        },
      ],
    };
    this.map = new maplibregl.Map({
      container: el,
      style,
      center: this.origin || [0, 0],
      zoom: this.origin ? 8 : 2,
      attributionControl: false,
      fadeDuration: 0,
    });
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: true }), 'top-left');
    this.map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
    this.labels = document.createElement('canvas');
    this.labels.className = 'labels';
    el.appendChild(this.labels);
    this.map.on('load', () => {
      this.ready = true;
      this.#drawGrid();
      this.#drawOrigin();
      if (cfg.tiles) this.#basemap(cfg.tiles).catch((e) => console.warn('basemap', e));
      if (this.store) this.update(true);
    });
    this.map.on('moveend', () => this.#drawGrid());
    this.map.on('render', () => this.#drawLabels());
    // A click picks the nearest track within 10 px: dots are small and move.
    this.map.on('click', (e) => {
      const r = 10;
      const { x, y } = e.point;
      const near = this.map.queryRenderedFeatures([[x - r, y - r], [x + r, y + r]], { layers: ['tracks'] });
      let best = null;
      let bestD = Infinity;
      for (const f of near) {
        const p = this.map.project(f.geometry.coordinates);
        const d = (p.x - x) ** 2 + (p.y - y) ** 2;
        if (d < bestD) [best, bestD] = [f, d];
      }
      if (best) onPick(best.properties.id);
    });
    this.map.on('mouseenter', 'tracks', () => (this.map.getCanvas().style.cursor = 'pointer'));
    this.map.on('mouseleave', 'tracks', () => (this.map.getCanvas().style.cursor = ''));
  }

  async #basemap(url) {
    const pmtiles = window.pmtiles;
    if (!pmtiles) return;
    const protocol = new pmtiles.Protocol();
    maplibregl.addProtocol('pmtiles', protocol.tile);
    const abs = new URL(url, location.href).href;
    const p = new pmtiles.PMTiles(abs);
    protocol.add(p);
    const h = await p.getHeader();
    const src = `pmtiles://${abs}`;
    if (h.tileType === 1) {
      const meta = await p.getMetadata();
      this.map.addSource('base', { type: 'vector', url: src });
      for (const layer of meta.vector_layers || []) {
        this.map.addLayer(
          { id: `base-${layer.id}`, type: 'line', source: 'base', 'source-layer': layer.id,
            paint: { 'line-color': '#4b6a7d', 'line-width': 0.8 } },
          'grat',
        );
      }
    } else {
      this.map.addSource('base', { type: 'raster', url: src, tileSize: 256 });
      this.map.addLayer({ id: 'base', type: 'raster', source: 'base', paint: { 'raster-opacity': 0.8 } }, 'grat');
    }
  }

  /** Frame the first tracks seen (once); without a configured origin
   * their centre becomes the origin of the rings. */
  orientOn(centre, tracks) {
    if (!centre) return;
    if (!this.origin) {
      this.origin = [centre.lon_deg, centre.lat_deg];
      this.#drawOrigin();
    }
    let [w, s, e, n] = [180, 90, -180, -90];
    for (const t of tracks) {
      w = Math.min(w, t.lon_deg); e = Math.max(e, t.lon_deg);
      s = Math.min(s, t.lat_deg); n = Math.max(n, t.lat_deg);
    }
    if (w <= e) this.map.fitBounds([[w, s], [e, n]], { padding: 80, maxZoom: 12, duration: 0 });
  }

  #drawOrigin() {
    if (!this.ready || !this.origin) return;
    const [lon, lat] = this.origin;
    this.map.getSource('origin').setData({
      type: 'Feature', geometry: { type: 'Point', coordinates: this.origin }, properties: {},
    });
    this.map.getSource('rings').setData({
      type: 'FeatureCollection',
      features: (this.cfg.rings_km || []).map((km) => ({
        type: 'Feature', properties: { km },
        geometry: { type: 'LineString', coordinates: ringCoords(lat, lon, km) },
      })),
    });
  }

  #drawGrid() {
    if (!this.ready) return;
    const b = this.map.getBounds();
    const g = graticule(b.getWest(), b.getSouth(), b.getEast(), b.getNorth());
    this.gridStep = g.step;
    this.map.getSource('grat').setData({
      type: 'FeatureCollection',
      features: g.lines.map((l) => ({ type: 'Feature', properties: {}, geometry: { type: 'LineString', coordinates: l.coords } })),
    });
  }

  setUnits(units) {
    this.units = units;
    this.map.triggerRepaint();
  }

  setColor(color) {
    this.color = color;
    this.update(true);
  }

  /** Push the store's tracks (and, at most every 500 ms, trails) to the
   * map. */
  update(trailsToo = false) {
    if (!this.ready || !this.store) return;
    const features = [];
    const leaders = [];
    for (const t of this.store.tracks.values()) {
      const color = t.stale ? STALE_COLOR : this.color;
      features.push({
        type: 'Feature',
        geometry: { type: 'Point', coordinates: [t.lon_deg, t.lat_deg] },
        properties: { id: t.id, color },
      });
      if (t.heading_deg != null && t.speed_mps != null && !t.stale) {
        leaders.push({
          type: 'Feature',
          geometry: { type: 'LineString', coordinates: [[t.lon_deg, t.lat_deg], ahead(t.lon_deg, t.lat_deg, t.speed_mps, t.heading_deg)] },
          properties: { color },
        });
      }
    }
    this.map.getSource('tracks').setData({ type: 'FeatureCollection', features });
    this.map.getSource('leaders').setData({ type: 'FeatureCollection', features: leaders });
    const now = performance.now();
    if (trailsToo || now - this.lastTrailMs >= TRAIL_EVERY_MS) {
      this.lastTrailMs = now;
      const lines = [];
      for (const [id, pts] of this.store.trails) {
        if (pts.length < 2) continue;
        const t = this.store.tracks.get(id);
        lines.push({
          type: 'Feature',
          geometry: { type: 'LineString', coordinates: pts.length > TRAIL_DRAWN ? pts.slice(-TRAIL_DRAWN) : pts },
          properties: { color: t && t.stale ? STALE_COLOR : this.color },
        });
      }
      this.map.getSource('trails').setData({ type: 'FeatureCollection', features: lines });
    }
  }

  #drawLabels() {
    const t0 = performance.now();
    const still = !this.map.isMoving() && !this.map.isZooming() && !this.map.isRotating();
    if (still && t0 - (this.labelsAt || 0) < LABELS_EVERY_MS) {
      if (!this.labelsPending) {
        this.labelsPending = true;
        setTimeout(() => {
          this.labelsPending = false;
          this.#drawLabels();
        }, LABELS_EVERY_MS);
      }
      return;
    }
    this.labelsAt = t0;
    const canvas = this.labels;
    const map = this.map.getCanvas();
    const dpr = window.devicePixelRatio || 1;
    const w = map.clientWidth;
    const h = map.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
    }
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    if (!this.store) return;
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.lineWidth = 3;
    g.strokeStyle = 'rgba(0,0,0,0.75)';
    let n = 0;
    // Decluttered: one label per cell of a coarse grid.
    const taken = new Set();
    for (const t of this.store.tracks.values()) {
      if (n >= LABELS_MAX) break;
      const p = this.map.project([t.lon_deg, t.lat_deg]);
      if (p.x < -50 || p.y < -20 || p.x > w + 50 || p.y > h + 20) continue;
      const cell = `${Math.floor(p.x / 90)}:${Math.floor(p.y / 16)}`;
      if (taken.has(cell)) continue;
      taken.add(cell);
      const text = trackLabel(t, this.units);
      g.fillStyle = t.stale ? STALE_COLOR : '#e8eef2';
      g.strokeText(text, p.x + 12, p.y);
      g.fillText(text, p.x + 12, p.y);
      n++;
    }
    if (this.origin && this.gridStep) {
      g.fillStyle = '#5b8a9c';
      g.textAlign = 'right';
      g.fillText(`graticule ${this.gridStep}° · rings ${(this.cfg.rings_km || []).join(', ')} km`, w - 8, h - 12);
      g.textAlign = 'left';
    }
    this.labelMs.push(performance.now() - t0);
    if (this.labelMs.length > 2000) this.labelMs.splice(0, 1000);
  }
}
