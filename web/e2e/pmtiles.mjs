// A tiny PMTiles v3 file for the basemap test: one 256x256 PNG raster tile
// at zoom 0 (overzoomed at every zoom), no compression. Written from the
// specification (github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md):
// a 127-byte header, a root directory of varint columns, metadata, data.
//
//   node web/e2e/pmtiles.mjs OUT.pmtiles [#rrggbb]
import { writeFileSync } from 'node:fs';
import zlib from 'node:zlib';

/** A solid-colour 256x256 RGB PNG. */
export function solidPng(rgb, size = 256) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const row = Buffer.alloc(1 + size * 3);
  for (let x = 0; x < size; x++) row.set(rgb, 1 + x * 3);
  const raw = Buffer.concat(Array.from({ length: size }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function varint(n, out) {
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** PMTiles v3 bytes holding `png` as tile z0/x0/y0. */
export function pmtiles(png) {
  // Root directory: one entry (tile id 0, run length 1, length, offset+1).
  const dir = [];
  varint(1, dir); // entries
  varint(0, dir); // tile id delta
  varint(1, dir); // run length
  varint(png.length, dir); // length
  varint(1, dir); // offset + 1
  const rootDir = Buffer.from(dir);
  const meta = Buffer.from('{"name":"tspi test basemap"}');
  const h = Buffer.alloc(127);
  h.write('PMTiles', 0, 'ascii');
  h[7] = 3;
  const rootOff = 127;
  const metaOff = rootOff + rootDir.length;
  const dataOff = metaOff + meta.length;
  const u64 = (v, at) => h.writeBigUInt64LE(BigInt(v), at);
  u64(rootOff, 8);
  u64(rootDir.length, 16);
  u64(metaOff, 24);
  u64(meta.length, 32);
  u64(dataOff + png.length, 40); // leaf directories: none
  u64(0, 48);
  u64(dataOff, 56);
  u64(png.length, 64);
  u64(1, 72); // addressed tiles
  u64(1, 80); // tile entries
  u64(1, 88); // tile contents
  h[96] = 1; // clustered
  h[97] = 1; // internal compression: none
  h[98] = 1; // tile compression: none
  h[99] = 2; // tile type: png
  h[100] = 0; // min zoom
  h[101] = 0; // max zoom
  h.writeInt32LE(-1800000000, 102);
  h.writeInt32LE(-850000000, 106);
  h.writeInt32LE(1800000000, 110);
  h.writeInt32LE(850000000, 114);
  h[118] = 0;
  h.writeInt32LE(0, 119);
  h.writeInt32LE(0, 123);
  return Buffer.concat([h, rootDir, meta, png]);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  const out = process.argv[2];
  const hex = (process.argv[3] || '#2a5d3c').replace('#', '');
  const rgb = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
  writeFileSync(out, pmtiles(solidPng(rgb)));
  console.log(`wrote ${out}`);
}
