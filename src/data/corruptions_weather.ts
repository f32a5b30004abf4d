/**
 * Weather-like corruptions (fog, brightness, contrast) with the CIFAR-10-C parameters of Hendrycks &
 * Dietterich (ICLR 2019, github.com/hendrycks/robustness `make_cifar_c.py`).
 */
import type { Rng } from "../random.ts";
import type { FloatImage } from "./corruptions.ts";

/**
 * A `size` x `size` (power of two) plasma fractal in [0, 1] by the diamond-square algorithm on a torus. Each
 * level adds uniform noise of amplitude wibble^2 and divides wibble by `decay`, so a larger decay gives a
 * smoother, cloudier map (the reference's `plasma_fractal`, itself after FLHerne/mapgen).
 */
export function plasmaFractal(size: number, decay: number, rng: Rng): Float64Array {
  if (size < 2 || (size & (size - 1)) !== 0) {
    throw new Error(`plasmaFractal(): size ${size} is not a power of two >= 2`);
  }
  const m = new Float64Array(size * size);
  const at = (y: number, x: number) => m[(((y % size) + size) % size) * size + (((x % size) + size) % size)];
  let wibble = 100;
  const noise = () => wibble * rng.uniform(-wibble, wibble);
  for (let step = size; step >= 2; step /= 2) {
    const half = step / 2;
    // Squares: the centre of each step x step cell is the mean of its four corners plus noise.
    for (let y = 0; y < size; y += step) {
      for (let x = 0; x < size; x += step) {
        const sum = at(y, x) + at(y + step, x) + at(y, x + step) + at(y + step, x + step);
        m[(y + half) * size + x + half] = sum / 4 + noise();
      }
    }
    // Diamonds: each edge midpoint is the mean of its two corners and the two adjacent centres plus noise.
    for (let y = 0; y < size; y += step) {
      for (let x = 0; x < size; x += step) {
        const top = at(y, x) + at(y, x + step) + at(y - half, x + half) + at(y + half, x + half);
        m[y * size + x + half] = top / 4 + noise();
        const left = at(y, x) + at(y + step, x) + at(y + half, x - half) + at(y + half, x + half);
        m[(y + half) * size + x] = left / 4 + noise();
      }
    }
    wibble /= decay;
  }
  let lo = Infinity, hi = -Infinity;
  for (const v of m) lo = Math.min(lo, v), hi = Math.max(hi, v);
  return m.map((v) => (hi > lo ? (v - lo) / (hi - lo) : 0));
}

/** x + c * plasma, rescaled by max / (max + c) so the brightest pixel keeps roughly its level. */
export function fog(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const [c, decay] = [[0.2, 3], [0.5, 3], [0.75, 2.5], [1, 2], [1.5, 1.75]][severity - 1];
  const { channels, height: h, width: w } = img;
  let size = 2;
  while (size < Math.max(h, w)) size *= 2;
  const map = plasmaFractal(size, decay, rng);
  let max = 0;
  for (const v of img.data) max = Math.max(max, v);
  const scale = max / (max + c);
  const data = new Float32Array(img.data.length);
  for (let ch = 0; ch < channels; ch++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (ch * h + y) * w + x;
        data[i] = (img.data[i] + c * map[y * size + x]) * scale;
      }
    }
  }
  return { ...img, data };
}

/**
 * HSV value + c. With hue and saturation fixed every RGB component is linear in V, so this scales the pixel
 * by V'/V (V = max channel) without an explicit HSV round trip; a black pixel becomes gray V'.
 */
export function brightness(img: FloatImage, severity: number): FloatImage {
  const c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1];
  const plane = img.height * img.width, C = img.channels, data = new Float32Array(img.data.length);
  for (let p = 0; p < plane; p++) {
    let v = 0;
    for (let ch = 0; ch < C; ch++) v = Math.max(v, img.data[ch * plane + p]);
    const nv = Math.min(1, v + c);
    for (let ch = 0; ch < C; ch++) data[ch * plane + p] = v > 0 ? (img.data[ch * plane + p] * nv) / v : nv;
  }
  return { ...img, data };
}

/** (x - mean) * c + mean with the mean taken per channel over the image. */
export function contrast(img: FloatImage, severity: number): FloatImage {
  const c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1];
  const plane = img.height * img.width, data = new Float32Array(img.data.length);
  for (let ch = 0; ch < img.channels; ch++) {
    let mean = 0;
    for (let p = 0; p < plane; p++) mean += img.data[ch * plane + p];
    mean /= plane;
    for (let p = 0; p < plane; p++) data[ch * plane + p] = (img.data[ch * plane + p] - mean) * c + mean;
  }
  return { ...img, data };
}
