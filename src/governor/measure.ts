/**
 * The ledger's measured peak of a (method, batch, store) run, for checking the estimator (tests,
 * tools/governor_table.ts): the real method on a real backend over a few batches of random images.
 *
 * Data-dependent filters are opened so every batch updates (EATA/SAR/EcoTTA entropy margins far above
 * ln C, EATA's redundancy margin above any |cos|, SAR's reset off): a batch that keeps no sample skips
 * backward and would measure less than the estimate, which is the bound for a batch that does update.
 */
import type { Backend } from "../backend/backend.ts";
import type { ImageSet } from "../data/images.ts";
import type { Module } from "../nn/module.ts";
import { type StoreName, withStore } from "../memory/policy.ts";
import { runAdaptation } from "../methods/run.ts";
import { BnAdapt, SourceOnly } from "../methods/bn_adapt.ts";
import { Tent } from "../methods/tent.ts";
import { Eata } from "../methods/eata.ts";
import { Sar } from "../methods/sar.ts";
import { EcoTta } from "../methods/ecotta.ts";
import type { TtaMethod } from "../methods/tta.ts";
import { prepareTransfer } from "../methods/mobiletl.ts";
import { trainSupervised } from "../methods/supervised.ts";
import { Rng } from "../random.ts";
import { type GovernedMethod, isTrainMethod } from "./config.ts";
import type { EcottaOptions } from "./ecotta_sim.ts";

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

// E0 = 1.01 ln C lies above every entropy (at most ln C); EATA's weights 1/exp(E - E0) stay finite.
const OPEN = { entropyMargin: 1.01 };

/** A TTA method whose filters let every sample through (see the module comment). */
export async function openMethod(
  method: GovernedMethod,
  model: Module,
  ecotta: EcottaOptions = {},
): Promise<TtaMethod> {
  switch (method) {
    case "source":
      return new SourceOnly(model);
    case "bn":
      return await BnAdapt.create(model);
    case "tent":
      return await Tent.create(model);
    case "eata":
      return await Eata.create(model, { ...OPEN, redundancyMargin: 2 });
    case "sar":
      return await Sar.create(model, { ...OPEN, resetEntropy: -1 });
    case "ecotta":
      return await EcoTta.create(model, {
        ...OPEN,
        leading: ecotta.leading,
        partitions: ecotta.partitions,
        kernelSize: ecotta.kernelSize,
        lambda: ecotta.lambda,
      });
  }
  throw new Error(`openMethod(): "${method}" is not a TTA method`);
}

export interface MeasureOptions {
  method: GovernedMethod;
  batch: number;
  store: StoreName;
  /** One sample's [C, H, W]. */
  input: readonly number[];
  /** Batches to run (4). */
  batches?: number;
  topBlocks?: number;
  ecotta?: EcottaOptions;
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
  let peak: number;
  if (isTrainMethod(o.method)) {
    const plan = prepareTransfer(model, o.method, { topBlocks: o.topBlocks });
    const report = await withStore(o.store, () =>
      trainSupervised(backend, model, set, {
        epochs: 1,
        batch: o.batch,
        optimizer: { kind: "adam", lr: 1e-3 },
        preprocess: pre,
        progress: false,
        setMode: plan.setMode,
      }), { method: o.method });
    peak = report.peak_bytes;
  } else {
    const m = await openMethod(o.method, model, o.ecotta);
    const report = await withStore(o.store, () =>
      runAdaptation(backend, m, [{ name: "random", set }], {
        batch: o.batch,
        preprocess: pre,
        collapseGuard: false,
        progress: false,
      }), { method: o.method });
    m.dispose();
    peak = report.peak_bytes;
  }
  model.zeroGrad();
  model.loadState(source);
  return { peak_bytes: peak, leaked_bytes: backend.ledger.liveBytes - before };
}
