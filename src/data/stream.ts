/**
 * Batches of preprocessed images. The iterator is synchronous (preprocessing is CPU work with nothing to
 * await), which `for await` also accepts; the last batch is partial unless `dropLast`.
 */
import type { ImageSet } from "./images.ts";
import { outputShape, preprocessBatch, type PreprocessOptions } from "./preprocess.ts";
import { Rng } from "../random.ts";

export interface Batch {
  /** Preprocessed images, NCHW float32 with N = indices.length. */
  x: Float32Array;
  shape: [number, number, number, number];
  /** Indices of the images in the set. */
  indices: Int32Array;
  labels?: Int32Array;
  names?: string[];
}

export interface BatchOptions {
  preprocess?: PreprocessOptions;
  /** Visit images in a seeded random order (Fisher-Yates with Rng(seed)); default false. */
  shuffle?: boolean;
  seed?: number;
  /** Drop the last partial batch; default false. */
  dropLast?: boolean;
}

/** The order `batches` visits images in: 0..n-1, or a seeded permutation of it. */
export function visitOrder(n: number, options: { shuffle?: boolean; seed?: number } = {}): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  if (options.shuffle) {
    const rng = new Rng(options.seed ?? 0);
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
  }
  return order;
}

/** Number of batches `batches(set, batchSize, options)` yields. */
export function batchCount(n: number, batchSize: number, options: { dropLast?: boolean } = {}): number {
  return options.dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/** Yields batches of `batchSize` preprocessed images (the last one may be smaller). */
export function* batches(
  set: ImageSet,
  batchSize: number,
  options: BatchOptions = {},
): Generator<Batch, void, undefined> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`batches(): batch size ${batchSize} is not a positive integer`);
  }
  // Validate once up front so a bad option fails before any work, not inside the first batch.
  const shape = outputShape(set, options.preprocess);
  const order = visitOrder(set.n, options);
  const count = batchCount(set.n, batchSize, options);
  for (let b = 0; b < count; b++) {
    const indices = order.slice(b * batchSize, Math.min(set.n, (b + 1) * batchSize));
    const batch: Batch = {
      x: preprocessBatch(set, indices, options.preprocess),
      shape: [indices.length, shape.channels, shape.height, shape.width],
      indices,
    };
    if (set.labels) batch.labels = indices.map((i) => set.labels![i]);
    if (set.names) batch.names = Array.from(indices, (i) => set.names![i]);
    yield batch;
  }
}
