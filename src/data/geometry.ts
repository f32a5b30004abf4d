/**
 * torchvision's `Resize(N)` / `Resize((H, W))` and `CenterCrop(M)` as they run on PIL images (what ImageFolder
 * pipelines do), reproduced to the pixel:
 * - the output size is torchvision's: N is the shorter side, the longer is `int(N * long / short)` (truncated);
 * - the resampling is PIL's ImagingResample with the BILINEAR (triangle) filter, antialiased: the filter
 *   widens by the scale when shrinking; coefficients are normalised, then rounded to 22-bit fixed point;
 *   a horizontal pass (rounded and clipped to uint8) and then a vertical one;
 * - the crop offset is `int(round((in - out) / 2))` with Python's round-half-to-even, and a crop larger than
 *   the image pads with zeros first ((out - in) // 2 before, the rest after).
 * This runs on uint8 images when they are read, before the float preprocessing of preprocess.ts.
 */
import type { DecodedImage } from "./images.ts";

/** A size: one number (Resize: the shorter side; CenterCrop: a square) or [height, width]. */
export type SizeSpec = number | [number, number];

export interface Geometry {
  resize?: SizeSpec;
  centerCrop?: SizeSpec;
}

/** torchvision's output size for Resize(spec) of an H x W image: [height, width]. */
export function resizedSize(height: number, width: number, spec: SizeSpec): [number, number] {
  if (Array.isArray(spec)) return spec;
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((spec * long) / short);
  return width <= height ? [newLong, spec] : [spec, newLong];
}

/** The size an H x W image has after `g`. */
export function geometrySize(height: number, width: number, g: Geometry): [number, number] {
  let size: [number, number] = [height, width];
  if (g.resize !== undefined) size = resizedSize(size[0], size[1], g.resize);
  if (g.centerCrop !== undefined) {
    size = typeof g.centerCrop === "number" ? [g.centerCrop, g.centerCrop] : g.centerCrop;
  }
  return size;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1). */
function coefficients(
  inSize: number,
  outSize: number,
): { bounds: Int32Array; kk: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2), kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

/** One separable pass over a planar uint8 image along x (horizontal) or y. */
function pass(
  src: Uint8Array,
  channels: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
  horizontal: boolean,
): Uint8Array {
  const { bounds, kk, ksize } = coefficients(horizontal ? inW : inH, horizontal ? outW : outH);
  const out = new Uint8Array(channels * outH * outW);
  const half = ONE / 2;
  for (let c = 0; c < channels; c++) {
    const si = c * inH * inW, so = c * outH * outW;
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        const o = horizontal ? x : y;
        const min = bounds[2 * o], n = bounds[2 * o + 1], kb = o * ksize;
        let ss = half;
        if (horizontal) {
          const row = si + y * inW + min;
          for (let t = 0; t < n; t++) ss += src[row + t] * kk[kb + t];
        } else {
          const col = si + min * inW + x;
          for (let t = 0; t < n; t++) ss += src[col + t * inW] * kk[kb + t];
        }
        out[so + y * outW + x] = clip8(ss);
      }
    }
  }
  return out;
}

/** PIL's `img.resize((width, height), Image.BILINEAR)` on a planar uint8 image. */
export function resizeBilinear(img: DecodedImage, height: number, width: number): DecodedImage {
  if (!(Number.isInteger(height) && Number.isInteger(width) && height >= 1 && width >= 1)) {
    throw new Error(`resize: output size ${height}x${width} is not two positive integers`);
  }
  let pixels = img.pixels, w = img.width;
  if (width !== img.width) {
    pixels = pass(pixels, img.channels, img.height, img.width, img.height, width, true);
    w = width;
  }
  if (height !== img.height) pixels = pass(pixels, img.channels, img.height, w, height, w, false);
  return { channels: img.channels, height, width, pixels: pixels === img.pixels ? pixels.slice() : pixels };
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision's CenterCrop on a planar uint8 image (zero padding when the crop is larger). */
export function centerCrop(img: DecodedImage, height: number, width: number): DecodedImage {
  const padTop = height > img.height ? Math.floor((height - img.height) / 2) : 0;
  const padLeft = width > img.width ? Math.floor((width - img.width) / 2) : 0;
  const paddedH = Math.max(img.height, height), paddedW = Math.max(img.width, width);
  const top = roundHalfEven((paddedH - height) / 2) - padTop;
  const left = roundHalfEven((paddedW - width) / 2) - padLeft;
  const out = new Uint8Array(img.channels * height * width);
  for (let c = 0; c < img.channels; c++) {
    for (let y = 0; y < height; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= img.height) continue;
      for (let x = 0; x < width; x++) {
        const sx = x + left;
        if (sx >= 0 && sx < img.width) {
          out[(c * height + y) * width + x] = img.pixels[(c * img.height + sy) * img.width + sx];
        }
      }
    }
  }
  return { channels: img.channels, height, width, pixels: out };
}

/** Resize then center-crop, as `transforms.Compose([Resize(r), CenterCrop(c)])`; either may be absent. */
export function applyGeometry(img: DecodedImage, g: Geometry): DecodedImage {
  let out = img;
  if (g.resize !== undefined) {
    const [h, w] = resizedSize(out.height, out.width, g.resize);
    if (h !== out.height || w !== out.width) out = resizeBilinear(out, h, w);
  }
  if (g.centerCrop !== undefined) {
    const [h, w] = typeof g.centerCrop === "number" ? [g.centerCrop, g.centerCrop] : g.centerCrop;
    if (h !== out.height || w !== out.width) out = centerCrop(out, h, w);
  }
  return out;
}
