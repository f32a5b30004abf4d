/**
 * The ledger's measured peak of a (method, batch, store) run on a real backend, for checking the estimator
 * (tests, tools/governor_table.ts): the real method on random images through the same driver `adapt` and
 * `train` use.
 *
 * Data-dependent filters are opened with each method's `open` options (its descriptor), so every chunk
 * takes the branch the estimate plans for on real data: a chunk that keeps no sample skips backward and
 * would measure less than the estimate, which is the bound for a chunk that does update.
 */
import type { Backend } from "../backend/backend.ts";
import type { ImageSet } from "../data/images.ts";
import type { Module } from "../nn/module.ts";
import { type StoreName, withStore } from "../memory/policy.ts";
import { type MethodName, methodNamed, resolveStore } from "../methods/registry.ts";
import { runAdaptation } from "../methods/run.ts";
import { trainSupervised } from "../methods/supervised.ts";
import { Rng } from "../random.ts";
import { RuntimeGuard } from "./guard.ts";
import { GuardedBackend } from "./guarded_backend.ts";

/** n random uint8 images of [C, H, W] with random labels of `classes`. */
export function randomImages(
  n: number,
  shape: readonly number[],
  options: { seed?: number; classes?: number } = {},
): ImageSet {
  const [channels, height, width] = shape;
  const rng = new Rng(options.seed ?? 0);
  const pixels = new Uint8Array(n * channels * height * width);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.floor(rng.next() * 256);
  const labels = Int32Array.from({ length: n }, () => Math.floor(rng.next() * (options.classes ?? 10)));
  return { n, channels, height, width, pixels, labels };
}

export interface MeasureOptions {
  method: MethodName;
  batch: number;
  store: StoreName;
  /** One sample's [C, H, W]. */
  input: readonly number[];
  /** Chunks to run (4). */
  batches?: number;
  topBlocks?: number;
  /** Run the steps through the runtime guard (needs a model built on a GuardedBackend). */
  guard?: boolean;
  extra?: Record<string, unknown>;
  seed?: number;
}

export interface Measured {
  /** The ledger's peak over the run, as the run's report gives it. */
  peak_bytes: number;
  /** Bytes still live on the backend after the method was disposed (0 unless something leaks). */
  leaked_bytes: number;
}

/**
 * Run and return the ledger's peak. The model's values are restored after (its flags stay as the method left
 * them).
 */
export async function measurePeak(backend: Backend, model: Module, o: MeasureOptions): Promise<Measured> {
  const set = randomImages(o.batch * (o.batches ?? 4), o.input, { seed: o.seed });
  const pre = { mean: [0.5], std: [0.25] };
  const before = backend.ledger.liveBytes;
  const source = await model.state();
  const d = methodNamed(o.method);
  const store = resolveStore(o.store, o.method);
  let peak: number;
  if (d.task === "train") {
    const plan = d.prepare(model, { topBlocks: o.topBlocks });
    const report = await withStore(store, () =>
      trainSupervised(backend, model, set, {
        epochs: 1,
        batch: o.batch,
        optimizer: d.optimizer ?? { kind: "adam", lr: 1e-3 },
        preprocess: pre,
        progress: false,
        setMode: plan.setMode,
      }));
    peak = report.peak_bytes;
  } else {
    const stream = { capacity: o.batch, every: o.batch, collapseGuard: false };
    const m = await d.create(model, { extra: { ...d.open, ...o.extra }, stream });
    let guard: RuntimeGuard | undefined;
    if (o.guard) {
      if (!(backend instanceof GuardedBackend)) {
        throw new Error("measurePeak(): guard needs a model built on a GuardedBackend");
      }
      guard = new RuntimeGuard(backend, { batch: o.batch, store, backward: d.backward });
    }
    const report = await withStore(store, () =>
      runAdaptation(backend, m, [{ name: "random", set }], {
        batch: o.batch,
        preprocess: pre,
        guard,
      }));
    guard?.dispose();
    m.dispose();
    peak = report.peak_bytes;
  }
  model.zeroGrad();
  model.loadState(source);
  return { peak_bytes: peak, leaked_bytes: backend.ledger.liveBytes - before };
}
