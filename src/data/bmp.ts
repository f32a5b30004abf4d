/**
 * BMP decoding (Windows bitmaps as PIL and most tools write them): 1/4/8-bit palette, 16/24/32-bit direct
 * colour, BI_RGB and BI_BITFIELDS, bottom-up or top-down rows. RLE and embedded JPEG/PNG bitmaps are refused
 * as unsupported. Matches PIL: a palette whose entries are all gray gives one channel ("L"), masked fields
 * scale as PIL's unpackers do (v * 255 / max, truncated), and alpha is dropped.
 */
import { corrupt, unsupported } from "./decode_error.ts";
import type { DecodedImage } from "./images.ts";

const COMPRESSION: Record<number, string> = { 1: "RLE8", 2: "RLE4", 4: "JPEG", 5: "PNG" };

/** Field masks for direct colour: R, G, B. */
function masks(b: DataView, bpp: number, compression: number): number[] {
  if (compression === 3 || compression === 6) {
    // BITFIELDS: the masks follow a 40-byte header, or sit inside a V2+ header at the same place.
    if (b.byteLength < 14 + 40 + 12) throw corrupt("truncated BMP: bit-field masks missing");
    return [b.getUint32(54, true), b.getUint32(58, true), b.getUint32(62, true)];
  }
  if (bpp === 16) return [0x7c00, 0x03e0, 0x001f];
  return [0xff0000, 0x00ff00, 0x0000ff];
}

function field(mask: number): { shift: number; max: number } {
  if (mask === 0) throw corrupt("BMP bit-field mask is 0");
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  return { shift, max: mask >>> shift };
}

/** Decodes BMP bytes (size already checked by the caller) to C x H x W uint8. */
export function decodeBmpBytes(bytes: Uint8Array): DecodedImage {
  const b = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offset = b.getUint32(10, true), header = b.getUint32(14, true);
  const core = header === 12;
  const width = core ? b.getUint16(18, true) : b.getInt32(18, true);
  const rawHeight = core ? b.getUint16(20, true) : b.getInt32(22, true);
  const bpp = core ? b.getUint16(24, true) : b.getUint16(28, true);
  const compression = core ? 0 : b.getUint32(30, true);
  const height = Math.abs(rawHeight), topDown = rawHeight < 0;
  if (width <= 0 || height === 0) throw corrupt(`BMP declares an empty ${width}x${height} image`);
  if (COMPRESSION[compression]) {
    throw unsupported(`${COMPRESSION[compression]}-compressed BMP is not supported`);
  }
  if (![0, 3, 6].includes(compression)) throw corrupt(`BMP compression ${compression} is not valid`);
  if (![1, 4, 8, 16, 24, 32].includes(bpp)) throw unsupported(`${bpp}-bit BMP is not supported`);

  const stride = Math.ceil((width * bpp) / 32) * 4;
  if (offset + stride * height > bytes.length) {
    throw corrupt(
      `truncated BMP: ${width}x${height} at ${bpp} bits needs ${
        offset + stride * height
      } bytes, the file has ${bytes.length}`,
    );
  }
  const plane = width * height;
  const rowStart = (y: number) => offset + (topDown ? y : height - 1 - y) * stride;

  if (bpp <= 8) {
    const entry = core ? 3 : 4;
    const paletteStart = 14 + header;
    const used = core ? 1 << bpp : b.getUint32(46, true) || 1 << bpp;
    const count = Math.min(used, Math.floor((offset - paletteStart) / entry));
    if (count <= 0) throw corrupt("BMP palette is missing");
    const palette = new Uint8Array(count * 3);
    for (let i = 0; i < count; i++) {
      const p = paletteStart + i * entry;
      palette.set([bytes[p + 2], bytes[p + 1], bytes[p]], 3 * i);
    }
    let gray = true;
    for (let i = 0; i < count && gray; i++) {
      gray = palette[3 * i] === palette[3 * i + 1] && palette[3 * i] === palette[3 * i + 2];
    }
    const channels = gray ? 1 : 3;
    const pixels = new Uint8Array(plane * channels);
    const mask = (1 << bpp) - 1;
    for (let y = 0; y < height; y++) {
      const row = rowStart(y);
      for (let x = 0; x < width; x++) {
        const bit = x * bpp;
        const idx = (bytes[row + (bit >> 3)] >> (8 - bpp - (bit & 7))) & mask;
        if (idx >= count) throw corrupt(`BMP pixel uses palette entry ${idx} of ${count}`);
        for (let c = 0; c < channels; c++) pixels[c * plane + y * width + x] = palette[3 * idx + c];
      }
    }
    return { channels, height, width, pixels };
  }

  const pixels = new Uint8Array(plane * 3);
  const fields = masks(b, bpp, compression).map(field);
  const bytesPer = bpp >> 3;
  for (let y = 0; y < height; y++) {
    const row = rowStart(y);
    for (let x = 0; x < width; x++) {
      const at = row + x * bytesPer;
      const v = bpp === 16
        ? b.getUint16(at, true)
        : bpp === 24
        ? bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16)
        : b.getUint32(at, true);
      for (let c = 0; c < 3; c++) {
        const { shift, max } = fields[c];
        const s = (v >>> shift) & max;
        pixels[c * plane + y * width + x] = max === 255 ? s : Math.floor((s * 255) / max);
      }
    }
  }
  return { channels: 3, height, width, pixels };
}
