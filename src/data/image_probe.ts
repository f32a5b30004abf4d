/**
 * What an image file declares about itself, read from its header without decoding a pixel: the format (by
 * signature, never by name) and the width and height. This is what lets a decompression bomb (a 2 MB PNG that
 * declares 46000 x 46000) be refused before any memory is spent on it.
 */
import { corrupt, ImageDecodeError, unsupported } from "./decode_error.ts";

export type ImageFormat = "png" | "jpeg" | "webp" | "bmp";

export interface ImageProbe {
  format: ImageFormat;
  width: number;
  height: number;
  /** JPEG only: the number of scans (SOS markers); a file with thousands is a CPU bomb. */
  scans?: number;
}

const u16be = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const u32be = (b: Uint8Array, i: number) =>
  ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
const u16le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8);
const u24le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const i32le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
const ascii = (b: Uint8Array, i: number, n: number) => String.fromCharCode(...b.subarray(i, i + n));

export const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function probePng(b: Uint8Array): ImageProbe {
  if (b.length < 33) throw corrupt(`truncated PNG: ${b.length} bytes cannot hold the IHDR chunk`);
  if (ascii(b, 12, 4) !== "IHDR") throw corrupt(`PNG's first chunk is "${ascii(b, 12, 4)}", not IHDR`);
  return { format: "png", width: u32be(b, 16), height: u32be(b, 20) };
}

// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

function probeJpeg(b: Uint8Array): ImageProbe {
  let i = 2, width = 0, height = 0, scans = 0, sof = false;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) throw corrupt(`JPEG marker expected at byte ${i}, found 0x${b[i].toString(16)}`);
    const m = b[i + 1];
    if (m === 0xff) {
      i++; // fill byte
      continue;
    }
    if (m === 0xd9) break; // EOI
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      i += 2;
      continue;
    }
    const len = u16be(b, i + 2);
    if (len < 2 || i + 2 + len > b.length) {
      throw corrupt(`truncated JPEG: segment 0xff${m.toString(16)} runs past the end`);
    }
    if (isSof(m)) {
      if (len < 8) throw corrupt("JPEG frame header (SOF) is too short");
      const precision = b[i + 4];
      height = u16be(b, i + 5);
      width = u16be(b, i + 7);
      if (precision !== 8) throw unsupported(`${precision}-bit JPEG samples are not supported (8-bit only)`);
      if (height === 0) throw unsupported("JPEG with the height in a DNL marker is not supported");
      sof = true;
    }
    i += 2 + len;
    if (m === 0xda) {
      scans++;
      // Skip entropy-coded data: it ends at a 0xff that is neither stuffing (ff 00) nor a restart (ff d0-d7).
      while (
        i + 1 < b.length && !(b[i] === 0xff && b[i + 1] !== 0 && !(b[i + 1] >= 0xd0 && b[i + 1] <= 0xd7))
      ) {
        i++;
      }
    }
  }
  if (!sof) throw corrupt("JPEG has no frame header (SOF) before its end");
  return { format: "jpeg", width, height, scans };
}

function probeWebp(b: Uint8Array): ImageProbe {
  if (b.length < 30) throw corrupt(`truncated WebP: ${b.length} bytes`);
  const chunk = ascii(b, 12, 4);
  if (chunk === "VP8 ") {
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) {
      throw corrupt("WebP VP8 frame has a bad start code");
    }
    return { format: "webp", width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  }
  if (chunk === "VP8L") {
    if (b[20] !== 0x2f) throw corrupt("WebP VP8L stream has a bad signature");
    const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
    return { format: "webp", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === "VP8X") {
    if (b[20] & 0x02) throw unsupported("animated WebP is not supported (one still image per file)");
    return { format: "webp", width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  }
  throw corrupt(`WebP has an unknown first chunk "${chunk}"`);
}

function probeBmp(b: Uint8Array): ImageProbe {
  if (b.length < 26) throw corrupt(`truncated BMP: ${b.length} bytes`);
  const header = i32le(b, 14);
  if (header === 12) return { format: "bmp", width: u16le(b, 18), height: u16le(b, 20) };
  if (header < 40) throw corrupt(`BMP info header of ${header} bytes is not one we know`);
  return { format: "bmp", width: Math.abs(i32le(b, 18)), height: Math.abs(i32le(b, 22)) };
}

/** Formats we recognise but do not decode, so the message can name them. */
function otherFormat(b: Uint8Array): string | null {
  const head = ascii(b, 0, 12);
  if (head.startsWith("GIF8")) return "GIF";
  if (head.startsWith("II*\0") || head.startsWith("MM\0*")) return "TIFF";
  if (/^P[1-7]\s/.test(head)) return "PNM (PPM/PGM)";
  if (head.slice(4, 8) === "ftyp") return /avif|avis/.test(head.slice(8)) ? "AVIF" : "HEIF/HEIC";
  if (b[0] === 0 && b[1] === 0 && b[2] === 0x0c && head.slice(4, 8) === "jP  ") return "JPEG 2000";
  if (b[0] === 0xff && b[1] === 0x0a) return "JPEG XL";
  return null;
}

/** Reads the format and declared size; throws ImageDecodeError (corrupt or unsupported) otherwise. */
export function probeImage(bytes: Uint8Array): ImageProbe {
  if (bytes.length === 0) throw corrupt("the file is empty (0 bytes)");
  try {
    if (PNG_SIGNATURE.every((v, i) => bytes[i] === v)) return probePng(bytes);
    if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return probeJpeg(bytes);
    if (ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "WEBP") return probeWebp(bytes);
    if (bytes[0] === 0x42 && bytes[1] === 0x4d) return probeBmp(bytes);
  } catch (e) {
    if (e instanceof ImageDecodeError) throw e;
    throw corrupt(`unreadable header (${(e as Error).message})`);
  }
  const other = otherFormat(bytes);
  if (other) throw unsupported(`${other} is not a supported format (PNG, JPEG, WebP or BMP)`);
  throw unsupported("unknown format: not a PNG, JPEG, WebP or BMP file (by its first bytes)");
}
