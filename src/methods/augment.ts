/**
 * The strong augmentation a student learns from (RoTTA, after CoTTA): per frame a random contrast and
 * brightness, then Gaussian noise, in the model's normalised input units. Intensity-only on purpose: it needs
 * no resampling kernel and never flips a digit or a street sign into another class.
 */
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

export interface AugmentOptions {
  /** Contrast factor in [1 - c, 1 + c] (0.2). */
  contrast?: number;
  /** Brightness shift in [-b, b] (0.2). */
  brightness?: number;
  /** Noise standard deviation (0.1). */
  noise?: number;
}

/** x [n, ...] as n independently jittered frames (a new tensor). */
export function augment(x: Tensor, rng: Rng, options: AugmentOptions = {}): Tensor {
  const n = x.shape[0], per = x.size / n, b = x.backend;
  const c = options.contrast ?? 0.2, br = options.brightness ?? 0.2, sd = options.noise ?? 0.1;
  const scale = Tensor.from(b, Float32Array.from({ length: n }, () => rng.uniform(1 - c, 1 + c)), [n]);
  const shift = Tensor.from(b, Float32Array.from({ length: n }, () => rng.uniform(-br, br)), [n]);
  const noise = Tensor.from(b, rng.normals(n * per, sd), x.shape);
  const scaled = Tensor.empty(b, x.shape);
  const rows = { shape: [n, per], aStrides: [per, 1], bStrides: [1, 0] };
  b.run("binary", { a: x.storage, b: scale.storage, out: scaled.storage, attrs: { op: "mul", ...rows } });
  const shifted = Tensor.empty(b, x.shape);
  b.run("binary", {
    a: scaled.storage,
    b: shift.storage,
    out: shifted.storage,
    attrs: { op: "add", ...rows },
  });
  const out = Tensor.empty(b, x.shape);
  b.run("binary", {
    a: shifted.storage,
    b: noise.storage,
    out: out.storage,
    attrs: { op: "add", shape: [n * per], aStrides: [1], bStrides: [1] },
  });
  for (const t of [scale, shift, noise, scaled, shifted]) t.dispose();
  return out;
}
