/**
 * Blur corruptions and the filtering/sampling helpers the other families share. Parameters follow the
 * CIFAR-10-C tables of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
 * and Perturbations" (ICLR 2019), github.com/hendrycks/robustness `make_cifar_c.py`, which were tuned for
 * 32x32 images and so suit MNIST's 28x28 too; the implementation here is our own.
 */
import type { Rng } from "../random.ts";
import type { FloatImage } from "./corruptions.ts";

/** How an index outside 0..n-1 maps back inside. */
export type Border = (i: number, n: number) => number;

/** Repeat the edge pixel (skimage/scipy "nearest", ImageMagick's default "edge"). */
export const clampBorder: Border = (i, n) => (i < 0 ? 0 : i >= n ? n - 1 : i);

/** Mirror without repeating the edge: d c b | a b c d | c b a (OpenCV BORDER_REFLECT_101). */
export const reflect101: Border = (i, n) => {
  if (n === 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
};

/** Mirror repeating the edge: b a | a b c d | d c (scipy "reflect"). */
export const symmetric: Border = (i, n) => {
  while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - 1 - i;
  return i;
};

/** A normalised 1-D Gaussian of standard deviation `sigma`, radius ceil(truncate * sigma). */
export function gaussianKernel(sigma: number, truncate = 4): Float32Array {
  const r = Math.max(0, Math.ceil(truncate * sigma));
  const k = new Float32Array(2 * r + 1);
  let sum = 0;
  for (let i = -r; i <= r; i++) {
    sum += k[i + r] = sigma > 0 ? Math.exp(-(i * i) / (2 * sigma * sigma)) : i === 0 ? 1 : 0;
  }
  for (let i = 0; i < k.length; i++) k[i] /= sum;
  return k;
}

/** Filters one H x W plane with a centred separable kernel along both axes. */
export function separable(
  plane: Float32Array,
  h: number,
  w: number,
  kernel: Float32Array,
  border: Border,
): Float32Array {
  const r = (kernel.length - 1) / 2;
  const tmp = new Float32Array(h * w), out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += kernel[k + r] * plane[y * w + border(x + k, w)];
      tmp[y * w + x] = s;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += kernel[k + r] * tmp[border(y + k, h) * w + x];
      out[y * w + x] = s;
    }
  }
  return out;
}

/** Correlates one plane with a square (2r+1)^2 kernel. */
export function filter2d(
  plane: Float32Array,
  h: number,
  w: number,
  kernel: Float32Array,
  border: Border,
): Float32Array {
  const size = Math.round(Math.sqrt(kernel.length)), r = (size - 1) / 2;
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let ky = -r; ky <= r; ky++) {
        const row = border(y + ky, h) * w;
        for (let kx = -r; kx <= r; kx++) {
          s += kernel[(ky + r) * size + kx + r] * plane[row + border(x + kx, w)];
        }
      }
      out[y * w + x] = s;
    }
  }
  return out;
}

/** Bilinear sample of one plane at (y, x), with `border` for the neighbours outside. */
export function bilinear(
  plane: Float32Array,
  h: number,
  w: number,
  y: number,
  x: number,
  border: Border,
): number {
  const y0 = Math.floor(y), x0 = Math.floor(x), fy = y - y0, fx = x - x0;
  const ya = border(y0, h) * w, yb = border(y0 + 1, h) * w, xa = border(x0, w), xb = border(x0 + 1, w);
  return (plane[ya + xa] * (1 - fx) + plane[ya + xb] * fx) * (1 - fy) +
    (plane[yb + xa] * (1 - fx) + plane[yb + xb] * fx) * fy;
}

/** Applies `f` to every channel plane. */
export function perPlane(img: FloatImage, f: (plane: Float32Array) => Float32Array): FloatImage {
  const plane = img.height * img.width, data = new Float32Array(img.data.length);
  for (let c = 0; c < img.channels; c++) {
    data.set(f(img.data.subarray(c * plane, (c + 1) * plane)), c * plane);
  }
  return { ...img, data };
}

/** skimage.filters.gaussian (truncate 4, mode "nearest"); sigma per severity. */
export function gaussianBlur(img: FloatImage, severity: number): FloatImage {
  const sigma = [0.4, 0.6, 0.7, 0.8, 1][severity - 1];
  const k = gaussianKernel(sigma);
  return perPlane(img, (p) => separable(p, img.height, img.width, k, clampBorder));
}

/**
 * A disk of `radius` (pixel centres within it), normalised, then smoothed by a 3x3 Gaussian of `alias`
 * to anti-alias its rim, as in the reference's `disk()`.
 */
export function diskKernel(radius: number, alias: number): Float32Array {
  const r = Math.max(1, Math.ceil(radius)), size = 2 * r + 1, big = size + 2;
  const disk = new Float32Array(size * size);
  let count = 0;
  for (let y = -r; y <= r; y++) {
    for (let x = -r; x <= r; x++) {
      if (x * x + y * y <= radius * radius) disk[(y + r) * size + x + r] = 1, count++;
    }
  }
  const g = [Math.exp(-1 / (2 * alias * alias)), 1, Math.exp(-1 / (2 * alias * alias))];
  const gs = g[0] + g[1] + g[2];
  const out = new Float32Array(big * big);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = disk[y * size + x] / count;
      if (v === 0) continue;
      for (let dy = 0; dy < 3; dy++) {
        for (let dx = 0; dx < 3; dx++) out[(y + dy) * big + x + dx] += (v * g[dy] * g[dx]) / (gs * gs);
      }
    }
  }
  return out;
}

/** Convolution with an anti-aliased disk (radius, alias sigma) per severity; OpenCV's reflect-101 border. */
export function defocusBlur(img: FloatImage, severity: number): FloatImage {
  const [radius, alias] = [[0.3, 0.4], [0.4, 0.5], [0.5, 0.6], [1, 0.2], [1.5, 0.1]][severity - 1];
  const k = diskKernel(radius, alias);
  return perPlane(img, (p) => filter2d(p, img.height, img.width, k, reflect101));
}

/**
 * ImageMagick's MotionBlurImage as the reference calls it (radius, sigma per severity, angle uniform in
 * [-45, 45] degrees): a one-sided Gaussian of 2*ceil(radius)+1 taps at whole-pixel offsets along the angle,
 * edge pixels repeated. One-sided is the point: it smears the image towards one direction like camera shake.
 */
export function motionBlur(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const [radius, sigma] = [[6, 1], [6, 1.5], [6, 2], [8, 2], [9, 2.5]][severity - 1];
  const angle = (rng.uniform(-45, 45) * Math.PI) / 180;
  const taps = 2 * Math.ceil(radius) + 1;
  const weights: number[] = [], dx: number[] = [], dy: number[] = [];
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const wgt = Math.exp(-(i * i) / (2 * sigma * sigma));
    weights.push(wgt);
    sum += wgt;
    dx.push(Math.round(i * Math.cos(angle)));
    dy.push(Math.round(i * Math.sin(angle)));
  }
  const { height: h, width: w } = img;
  return perPlane(img, (p) => {
    const out = new Float32Array(h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (let i = 0; i < taps; i++) {
          s += weights[i] * p[clampBorder(y + dy[i], h) * w + clampBorder(x + dx[i], w)];
        }
        out[y * w + x] = s / sum;
      }
    }
    return out;
  });
}
