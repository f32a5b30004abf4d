/**
 * Digital corruptions (pixelate, JPEG, elastic transform) with the CIFAR-10-C parameters of Hendrycks &
 * Dietterich (ICLR 2019, github.com/hendrycks/robustness `make_cifar_c.py`).
 */
import jpeg from "jpeg-js";
import type { Rng } from "../random.ts";
import type { FloatImage } from "./corruptions.ts";
import { bilinear, gaussianKernel, perPlane, reflect101, separable, symmetric } from "./corruptions_blur.ts";

/** For each output pixel, the source pixels its interval covers and their overlap weights (PIL's BOX shrinking). */
function boxTaps(inSize: number, outSize: number): { idx: number[]; wgt: number[] }[] {
  const scale = inSize / outSize;
  return Array.from({ length: outSize }, (_, o) => {
    const lo = o * scale, hi = (o + 1) * scale;
    const idx: number[] = [], wgt: number[] = [];
    for (let i = Math.floor(lo); i < Math.min(inSize, Math.ceil(hi)); i++) {
      const overlap = Math.min(hi, i + 1) - Math.max(lo, i);
      if (overlap > 0) idx.push(i), wgt.push(overlap / scale);
    }
    return { idx, wgt };
  });
}

/** PIL's BOX filter when growing: the source pixel under each output pixel's centre. */
function nearestTaps(inSize: number, outSize: number): { idx: number[]; wgt: number[] }[] {
  return Array.from(
    { length: outSize },
    (_, o) => ({ idx: [Math.floor(((o + 0.5) * inSize) / outSize)], wgt: [1] }),
  );
}

/** Resizes one plane with PIL's BOX filter: area average when shrinking, nearest when growing. */
function boxResize(p: Float32Array, h: number, w: number, oh: number, ow: number): Float32Array {
  const tapsY = oh <= h ? boxTaps(h, oh) : nearestTaps(h, oh),
    tapsX = ow <= w ? boxTaps(w, ow) : nearestTaps(w, ow);
  const out = new Float32Array(oh * ow);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let s = 0;
      const ty = tapsY[y], tx = tapsX[x];
      for (let a = 0; a < ty.idx.length; a++) {
        for (let b = 0; b < tx.idx.length; b++) s += ty.wgt[a] * tx.wgt[b] * p[ty.idx[a] * w + tx.idx[b]];
      }
      out[y * ow + x] = s;
    }
  }
  return out;
}

/** Shrinks to floor(size * c) with a box filter and grows back: blocky, as a low-resolution camera. */
export function pixelate(img: FloatImage, severity: number): FloatImage {
  const c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1];
  const { height: h, width: w } = img;
  const sh = Math.max(1, Math.floor(h * c)), sw = Math.max(1, Math.floor(w * c));
  return perPlane(img, (p) => boxResize(boxResize(p, h, w, sh, sw), sh, sw, h, w));
}

/**
 * A real JPEG round trip (jpeg-js, baseline, 4:4:4) at the severity's quality, for many images at once.
 * jpeg-js builds its tables on every encode (~15-30 ms, far more than a 28x28 image costs), so the images go
 * into one mosaic per call. That changes nothing: with 4:4:4 every 8x8 block is quantised on its own, tiles
 * are padded to whole blocks by repeating edge pixels exactly as the encoder pads a lone image, and DC
 * prediction across blocks is lossless.
 */
export function jpegBatch(imgs: FloatImage[], severity: number): FloatImage[] {
  const quality = [80, 65, 58, 50, 40][severity - 1];
  if (imgs.length === 0) return [];
  const { channels: C, height: h, width: w } = imgs[0], plane = h * w;
  if (C !== 1 && C !== 3) throw new Error(`jpeg_compression: images need 1 or 3 channels, not ${C}`);
  const th = Math.ceil(h / 8) * 8, tw = Math.ceil(w / 8) * 8;
  const cols = Math.max(1, Math.min(imgs.length, Math.floor(4096 / tw)));
  const rows = Math.ceil(imgs.length / cols);
  const mw = cols * tw, mh = rows * th;
  const rgba = new Uint8Array(mw * mh * 4).fill(255);
  imgs.forEach((img, n) => {
    const oy = Math.floor(n / cols) * th, ox = (n % cols) * tw;
    for (let y = 0; y < th; y++) {
      for (let x = 0; x < tw; x++) {
        const p = Math.min(y, h - 1) * w + Math.min(x, w - 1), o = ((oy + y) * mw + ox + x) * 4;
        for (let k = 0; k < 3; k++) {
          rgba[o + k] = Math.round(Math.min(1, Math.max(0, img.data[(C === 1 ? 0 : k) * plane + p])) * 255);
        }
      }
    }
  });
  const encoded = jpeg.encode({ data: rgba, width: mw, height: mh }, quality);
  const rgb = jpeg.decode(encoded.data, { useTArray: true, formatAsRGBA: false }).data;
  return imgs.map((img, n) => {
    const oy = Math.floor(n / cols) * th, ox = (n % cols) * tw;
    const data = new Float32Array(C * plane);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((oy + y) * mw + ox + x) * 3, p = y * w + x;
        // A gray image has constant chroma, so the three decoded channels agree up to rounding.
        if (C === 1) data[p] = (rgb[o] + rgb[o + 1] + rgb[o + 2]) / (3 * 255);
        else for (let k = 0; k < 3; k++) data[k * plane + p] = rgb[o + k] / 255;
      }
    }
    return { ...img, data };
  });
}

export function jpegCompression(img: FloatImage, severity: number): FloatImage {
  return jpegBatch([img], severity)[0];
}

/** The 2x3 affine map taking points `from[i]` to `to[i]` (three [x, y] pairs), solved by Cramer's rule. */
export function affineFrom3(from: number[][], to: number[][]): number[] {
  const [[x0, y0], [x1, y1], [x2, y2]] = from;
  const det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1);
  if (Math.abs(det) < 1e-12) throw new Error("affineFrom3(): the three source points are collinear");
  const solve = (v0: number, v1: number, v2: number) => [
    (v0 * (y1 - y2) - y0 * (v1 - v2) + (v1 * y2 - v2 * y1)) / det,
    (x0 * (v1 - v2) - v0 * (x1 - x2) + (x1 * v2 - x2 * v1)) / det,
    (x0 * (y1 * v2 - y2 * v1) - y0 * (x1 * v2 - x2 * v1) + v0 * (x1 * y2 - x2 * y1)) / det,
  ];
  return [...solve(to[0][0], to[1][0], to[2][0]), ...solve(to[0][1], to[1][1], to[2][1])];
}

/**
 * A small random affine warp (three control points around the centre moved by up to `shift` pixels, OpenCV
 * reflect-101 border) followed by a smooth random displacement field: uniform noise blurred by a Gaussian of
 * `sigma` (truncate 3, scipy "reflect") and scaled by `alpha`, sampled bilinearly (after Simard et al. 2003).
 * All three are fractions of the image size, as in the reference. Its CIFAR table is not monotonic (severity
 * 1 has the largest affine shift, 0.08, and no field; severities 2-3 blur the field to almost nothing), so
 * we keep its form and make both parts grow with severity: severity 5 has the reference's severity-5 field
 * (alpha 0.1, sigma 0.03) and three quarters of its severity-1 affine shift.
 */
const ELASTIC: [alpha: number, sigma: number, shift: number][] = [
  [0.03, 0.05, 0.02],
  [0.05, 0.045, 0.03],
  [0.07, 0.04, 0.04],
  [0.09, 0.035, 0.05],
  [0.11, 0.03, 0.06],
];

export function elasticTransform(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const { height: h, width: w } = img;
  const s = Math.min(h, w);
  const [alpha, sigma, shift] = ELASTIC[severity - 1].map((f) => f * s);
  const cx = Math.floor(w / 2), cy = Math.floor(h / 2), sq = Math.floor(s / 3);
  const src = [[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]];
  const dst = src.map(([x, y]) => [x + rng.uniform(-shift, shift), y + rng.uniform(-shift, shift)]);
  // The warp moves src to dst; sampling needs the inverse, the map from dst back to src.
  const [a, b, c, d, e, f] = affineFrom3(dst, src);
  const warped = perPlane(img, (p) => {
    const out = new Float32Array(h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        out[y * w + x] = bilinear(p, h, w, d * x + e * y + f, a * x + b * y + c, reflect101);
      }
    }
    return out;
  });
  if (alpha === 0) return warped;
  const field = () => {
    const noise = new Float32Array(h * w);
    for (let i = 0; i < noise.length; i++) noise[i] = rng.uniform(-1, 1);
    const smooth = separable(noise, h, w, gaussianKernel(sigma, 3), symmetric);
    return smooth.map((v) => v * alpha);
  };
  const dx = field(), dy = field();
  return perPlane(warped, (p) => {
    const out = new Float32Array(h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        out[y * w + x] = bilinear(p, h, w, y + dy[y * w + x], x + dx[y * w + x], symmetric);
      }
    }
    return out;
  });
}
