/**
 * Noise corruptions, per element (every channel independently), with the CIFAR-10-C parameters of Hendrycks &
 * Dietterich (ICLR 2019, github.com/hendrycks/robustness `make_cifar_c.py`). Values may leave [0, 1]; the
 * caller clips.
 */
import type { Rng } from "../random.ts";
import type { FloatImage } from "./corruptions.ts";

const map = (img: FloatImage, f: (v: number) => number): FloatImage => ({ ...img, data: img.data.map(f) });

/** x + N(0, c^2). */
export function gaussianNoise(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const c = [0.04, 0.06, 0.08, 0.09, 0.1][severity - 1];
  return map(img, (v) => v + c * rng.normal());
}

/** Photon noise: Poisson(x * c) / c, so fewer photons (smaller c) is noisier. */
export function shotNoise(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const c = [500, 250, 100, 75, 50][severity - 1];
  return map(img, (v) => poisson(v * c, rng) / c);
}

/** Salt and pepper: a fraction c of the values become 0 or 1, half each (skimage `random_noise` "s&p"). */
export function impulseNoise(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1];
  return map(img, (v) => (rng.next() < c ? (rng.next() < 0.5 ? 0 : 1) : v));
}

/** Multiplicative noise: x + x * N(0, c^2). */
export function speckleNoise(img: FloatImage, severity: number, rng: Rng): FloatImage {
  const c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1];
  return map(img, (v) => v + v * c * rng.normal());
}

/** log Gamma(x) by Lanczos (g = 7, n = 9), accurate to ~1e-15 for x > 0. */
function logGamma(x: number): number {
  const g = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  x -= 1;
  let a = g[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += g[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/**
 * A Poisson(lambda) sample: Knuth's product of uniforms for small lambda, Hörmann's transformed rejection
 * (PTRS, "The transformed rejection method for generating Poisson random variables", 1993) for lambda >= 10,
 * where Knuth's loop would take ~lambda steps.
 */
export function poisson(lambda: number, rng: Rng): number {
  if (lambda <= 0) return 0;
  if (lambda < 10) {
    const limit = Math.exp(-lambda);
    let k = 0, p = rng.next();
    while (p > limit) {
      k++;
      p *= rng.next();
    }
    return k;
  }
  const slam = Math.sqrt(lambda), loglam = Math.log(lambda);
  const b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
  const invalpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2);
  for (;;) {
    const u = rng.next() - 0.5, v = rng.next();
    const us = 0.5 - Math.abs(u);
    const k = Math.floor(((2 * a) / us + b) * u + lambda + 0.43);
    if (us >= 0.07 && v <= vr) return k;
    if (k < 0 || (us < 0.013 && v > us)) continue;
    if (
      Math.log(v) + Math.log(invalpha) - Math.log(a / (us * us) + b) <= -lambda + k * loglam - logGamma(k + 1)
    ) {
      return k;
    }
  }
}
