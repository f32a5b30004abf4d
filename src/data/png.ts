/**
 * PNG decoding in bounded memory: every chunk's CRC is checked, the zlib stream is inflated in small slices and
 * unfiltered row by row straight into the planar output, so memory is the output image plus two rows and one
 * slice's worth of inflated bytes, whatever the compressed stream claims. Data past the declared image is
 * never inflated (a zlib bomb behind a small IHDR costs nothing).
 *
 * Pixels match PIL's `Image.open(f).convert("RGB" | "L")`: palette expanded, alpha dropped (not composited),
 * 1/2/4-bit gray scaled to 0..255. 16-bit samples keep their high byte, as PIL does for RGB;16B (for 16-bit
 * gray PIL's "I" mode clips at 255 instead, which we do not copy).
 */
import { Unzlib } from "fflate";
import { corrupt, unsupported } from "./decode_error.ts";
import type { DecodedImage } from "./images.ts";
import { PNG_SIGNATURE } from "./image_probe.ts";

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Samples per pixel by colour type, and the bit depths each allows (PNG spec, table 11.1). */
const COLOR_TYPES: Record<number, { samples: number; depths: number[] }> = {
  0: { samples: 1, depths: [1, 2, 4, 8, 16] },
  2: { samples: 3, depths: [8, 16] },
  3: { samples: 1, depths: [1, 2, 4, 8] },
  4: { samples: 2, depths: [8, 16] },
  6: { samples: 4, depths: [8, 16] },
};

// Adam7 passes: x0, y0, dx, dy.
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [
  0,
  1,
  1,
  2,
]];

interface Header {
  width: number;
  height: number;
  depth: number;
  colorType: number;
  interlace: number;
}

function readChunks(b: Uint8Array): { header: Header; palette: Uint8Array | null; idat: Uint8Array[] } {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let header: Header | null = null;
  let palette: Uint8Array | null = null;
  const idat: Uint8Array[] = [];
  let pos = PNG_SIGNATURE.length;
  while (pos < b.length) {
    if (pos + 12 > b.length) throw corrupt(`truncated PNG: chunk header at byte ${pos} runs past the end`);
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...b.subarray(pos + 4, pos + 8));
    if (length > b.length - pos - 12) {
      throw corrupt(`truncated PNG: chunk "${type}" runs past the end of the file`);
    }
    const data = b.subarray(pos + 8, pos + 8 + length);
    const stored = view.getUint32(pos + 8 + length);
    if (crc32(b.subarray(pos + 4, pos + 8 + length)) !== stored) {
      throw corrupt(`PNG chunk "${type}" at byte ${pos} has a bad CRC (the file is damaged)`);
    }
    pos += 12 + length;
    if (type === "IHDR") {
      if (length !== 13) throw corrupt(`PNG IHDR has ${length} bytes, not 13`);
      const d = new DataView(data.buffer, data.byteOffset, 13);
      header = {
        width: d.getUint32(0),
        height: d.getUint32(4),
        depth: data[8],
        colorType: data[9],
        interlace: data[12],
      };
      if (data[10] !== 0 || data[11] !== 0) {
        throw corrupt("PNG IHDR has an unknown compression or filter method");
      }
    } else if (type === "PLTE") palette = data;
    else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    else if (!(b[pos - length - 8] & 0x20) && header) {
      // An unknown critical chunk (first letter upper case) means we cannot decode the image faithfully.
      throw unsupported(`PNG has an unknown critical chunk "${type}"`);
    }
  }
  if (!header) throw corrupt("PNG has no IHDR chunk");
  if (idat.length === 0) throw corrupt("PNG has no image data (IDAT)");
  return { header, palette, idat };
}

/** Decodes PNG bytes (the caller has already checked the declared size) to C x H x W uint8, C = 1 or 3. */
export function decodePngBytes(bytes: Uint8Array): DecodedImage {
  const { header: h, palette, idat } = readChunks(bytes);
  const kind = COLOR_TYPES[h.colorType];
  if (!kind) throw corrupt(`PNG colour type ${h.colorType} is not valid`);
  if (!kind.depths.includes(h.depth)) {
    throw corrupt(`PNG bit depth ${h.depth} is not valid for colour type ${h.colorType}`);
  }
  if (h.interlace > 1) throw corrupt(`PNG interlace method ${h.interlace} is not valid`);
  if (h.width === 0 || h.height === 0) throw corrupt(`PNG declares an empty ${h.width}x${h.height} image`);
  if (h.colorType === 3 && (!palette || palette.length % 3 !== 0)) {
    throw corrupt("PNG palette (PLTE) is missing or broken");
  }

  const { width, height, depth } = h;
  // Deflate expands at most ~1032:1, so IDAT bytes bound the image they can hold: a tiny file declaring a
  // large image is refused before its output is allocated.
  const passesRaw = (h.interlace ? ADAM7 : [[0, 0, 1, 1]]).reduce((sum, [x0, y0, dx, dy]) => {
    const pw = Math.ceil((width - x0) / dx), ph = Math.ceil((height - y0) / dy);
    return pw > 0 && ph > 0 ? sum + ph * (1 + Math.ceil((pw * kind.samples * depth) / 8)) : sum;
  }, 0);
  const compressed = idat.reduce((sum, part) => sum + part.length, 0);
  if (compressed * 1032 + 64 < passesRaw) {
    throw corrupt(`truncated PNG: ${compressed} bytes of image data cannot hold ${width}x${height} pixels`);
  }
  const channels = h.colorType === 0 || h.colorType === 4 ? 1 : 3;
  const plane = width * height;
  const out = new Uint8Array(plane * channels);
  const bitsPerPixel = kind.samples * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const passes = h.interlace ? ADAM7 : [[0, 0, 1, 1]];
  const maxSample = (1 << Math.min(depth, 8)) - 1;
  const paletteEntries = palette ? palette.length / 3 : 0;

  // The row machine: bytes arrive in arbitrary slices; each full row is unfiltered against the previous one
  // of its pass and its pixels are written out.
  const rowCap = Math.ceil((width * bitsPerPixel) / 8) + 1;
  let prev = new Uint8Array(rowCap), cur = new Uint8Array(rowCap);
  let pass = -1, passW = 0, passH = 0, rowLen = 0, y = 0, fill = 0, done = false;
  const nextPass = () => {
    do {
      pass++;
      if (pass >= passes.length) {
        done = true;
        return;
      }
      const [x0, y0, dx, dy] = passes[pass];
      passW = Math.ceil((width - x0) / dx);
      passH = Math.ceil((height - y0) / dy);
    } while (passW <= 0 || passH <= 0);
    rowLen = Math.ceil((passW * bitsPerPixel) / 8) + 1;
    y = 0;
    prev.fill(0);
  };
  const sample = (row: Uint8Array, index: number): number => {
    if (depth === 8) return row[1 + index];
    if (depth === 16) return row[1 + 2 * index]; // high byte
    const bit = index * depth;
    return (row[1 + (bit >> 3)] >> (8 - depth - (bit & 7))) & maxSample;
  };
  const emitRow = () => {
    const filter = cur[0];
    const n = rowLen - 1;
    for (let i = 1; i <= n; i++) {
      const a = i > bpp ? cur[i - bpp] : 0, up = prev[i], c = i > bpp ? prev[i - bpp] : 0;
      let v = cur[i];
      if (filter === 1) v += a;
      else if (filter === 2) v += up;
      else if (filter === 3) v += (a + up) >> 1;
      else if (filter === 4) {
        const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? up : c;
      } else if (filter !== 0) throw corrupt(`PNG row filter ${filter} is not valid`);
      cur[i] = v;
    }
    const [x0, y0, dx, dy] = passes[pass];
    const base = (y0 + y * dy) * width;
    for (let x = 0; x < passW; x++) {
      const p = base + x0 + x * dx;
      if (h.colorType === 3) {
        const idx = sample(cur, x);
        if (idx >= paletteEntries) throw corrupt(`PNG pixel uses palette entry ${idx} of ${paletteEntries}`);
        for (let c = 0; c < 3; c++) out[c * plane + p] = palette![3 * idx + c];
      } else if (channels === 1) {
        const v = sample(cur, x * kind.samples);
        out[p] = depth < 8 ? (v * 255) / maxSample : v;
      } else {
        for (let c = 0; c < 3; c++) out[c * plane + p] = sample(cur, x * kind.samples + c);
      }
    }
    [prev, cur] = [cur, prev];
    if (++y === passH) nextPass();
  };
  const consume = (data: Uint8Array) => {
    let i = 0;
    while (i < data.length && !done) {
      const take = Math.min(rowLen - fill, data.length - i);
      cur.set(data.subarray(i, i + take), fill);
      fill += take;
      i += take;
      if (fill === rowLen) {
        fill = 0;
        emitRow();
      }
    }
  };
  nextPass();

  // 16 KiB of compressed input inflates to at most ~16 MiB (deflate's ratio is below 1032:1).
  const SLICE = 16 << 10;
  const inflater = new Unzlib((chunk) => consume(chunk));
  try {
    for (const part of idat) {
      for (let i = 0; i < part.length && !done; i += SLICE) inflater.push(part.subarray(i, i + SLICE));
      if (done) break;
    }
    if (!done) inflater.push(new Uint8Array(0), true);
  } catch (e) {
    if (e instanceof Error && e.name === "ImageDecodeError") throw e;
    throw corrupt(`PNG image data does not inflate (${(e as Error).message})`);
  }
  if (!done) throw corrupt(`truncated PNG: image data ends at row ${y} of pass ${pass + 1}`);
  return { channels, height, width, pixels: out };
}
