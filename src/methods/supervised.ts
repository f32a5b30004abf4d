/**
 * Supervised training with labels (transfer learning, and the default model's own training): mini-batch
 * cross-entropy on whatever parameters the caller made trainable, with per-epoch validation and the
 * ledger's measured peaks.
 */
import type { Backend } from "../backend/backend.ts";
import { backward } from "../autograd/tape.ts";
import type { ImageSet } from "../data/images.ts";
import { outputShape, preprocessBatch, type PreprocessOptions } from "../data/preprocess.ts";
import { visitOrder } from "../data/stream.ts";
import { Progress } from "../cli/progress.ts";
import type { Module } from "../nn/module.ts";
import { crossEntropy } from "../ops/loss.ts";
import { Tensor } from "../tensor.ts";
import type { Adam, SGD } from "../ops/optim.ts";
import { makeOptimizer, type OptimizerConfig } from "./backprop_method.ts";
import { frozenPredictor } from "./bn_adapt.ts";
import { runAdaptation } from "./run.ts";
import { logitStats } from "./tta.ts";

export interface TrainOptions {
  epochs: number;
  batch: number;
  optimizer: OptimizerConfig;
  preprocess?: PreprocessOptions;
  /** Shuffle seed (each epoch uses seed + epoch). */
  seed?: number;
  /** Cosine decay of the learning rate to 0 over all steps (default false: constant). */
  cosine?: boolean;
  val?: ImageSet;
  progress?: boolean;
  label?: string;
  /**
   * Put the model in its training configuration at the start of every epoch (default: model.train()).
   * Methods that train some BatchNorms with batch statistics and keep others frozen (MobileTL) set it.
   */
  setMode?: (model: Module) => void;
}

export interface TrainReport {
  epochs: number;
  batch: number;
  steps: number;
  train_error: number;
  train_loss: number;
  val_error: number | null;
  val_errors: number[];
  ms_per_batch: number;
  peak_bytes: number;
  peak_saved_bytes: number;
  saved_bytes_by_block: Record<string, number>;
}

function labelsOf(set: ImageSet, what: string): Int32Array {
  if (!set.labels) throw new Error(`${what}: the images have no labels`);
  if (set.labels.length !== set.n) {
    throw new Error(`${what}: ${set.labels.length} labels for ${set.n} images`);
  }
  return set.labels;
}

/** Error (fraction) of `model` in eval mode on a labelled set: a run of the stream loop that adapts nothing. */
export async function evaluate(
  backend: Backend,
  model: Module,
  set: ImageSet,
  options: { batch: number; preprocess?: PreprocessOptions },
): Promise<number> {
  labelsOf(set, "evaluate");
  const wasTraining = model.training;
  model.eval();
  try {
    const report = await runAdaptation(backend, frozenPredictor(model), [{ name: "validation", set }], {
      batch: options.batch,
      preprocess: options.preprocess,
      resetPeak: false,
    });
    return report.error ?? 0;
  } finally {
    model.train(wasTraining);
  }
}

/**
 * One step of cross-entropy training on x (disposed here, as soon as the forward no longer needs it) with
 * labels y: forward, backward, optimizer step. The governor's estimator runs the same function.
 */
export async function supervisedStep(
  model: Module,
  opt: Adam | SGD,
  x: Tensor,
  y: number[],
): Promise<{ loss: number; predictions: Int32Array }> {
  const logits = model.call(x);
  x.dispose();
  const loss = crossEntropy(logits, y);
  backward(loss);
  opt.step();
  opt.zeroGrad();
  const [value] = await loss.data();
  const stats = logitStats(await logits.data(), logits.shape[1]);
  loss.dispose();
  logits.dispose();
  return { loss: value, predictions: stats.predictions };
}

export async function trainSupervised(
  backend: Backend,
  model: Module,
  train: ImageSet,
  options: TrainOptions,
): Promise<TrainReport> {
  const labels = labelsOf(train, "train");
  const params = model.trainableParameters();
  if (!params.length) throw new Error("train: no trainable parameters were selected");
  const opt = makeOptimizer(params, options.optimizer);
  const shape = outputShape(train, options.preprocess);
  const stepsPerEpoch = Math.ceil(train.n / options.batch);
  const totalSteps = stepsPerEpoch * options.epochs;
  const progress = options.progress === false
    ? null
    : new Progress({ label: options.label ?? "train", total: totalSteps });
  backend.ledger.resetPeak();
  const report: TrainReport = {
    epochs: options.epochs,
    batch: options.batch,
    steps: 0,
    train_error: 0,
    train_loss: 0,
    val_error: null,
    val_errors: [],
    ms_per_batch: 0,
    peak_bytes: 0,
    peak_saved_bytes: 0,
    saved_bytes_by_block: {},
  };
  let ms = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    if (options.setMode) options.setMode(model);
    else model.train();
    const order = visitOrder(train.n, { shuffle: true, seed: (options.seed ?? 0) + epoch });
    let wrong = 0, seen = 0, lossSum = 0;
    for (let s = 0; s < train.n; s += options.batch) {
      const idx = order.subarray(s, Math.min(s + options.batch, train.n));
      if (options.cosine) {
        opt.lr = 0.5 * options.optimizer.lr * (1 + Math.cos(Math.PI * report.steps / totalSteps));
      }
      const t0 = performance.now();
      const x = Tensor.from(backend, preprocessBatch(train, idx, options.preprocess), [
        idx.length,
        shape.channels,
        shape.height,
        shape.width,
      ]);
      const y = Array.from(idx, (i) => labels[i]);
      const { loss: lossValue, predictions } = await supervisedStep(model, opt, x, y);
      ms += performance.now() - t0;
      predictions.forEach((p, k) => {
        if (p !== y[k]) wrong++;
      });
      seen += idx.length;
      lossSum += lossValue * idx.length;
      report.steps++;
      progress?.tick(
        1,
        `epoch ${epoch + 1}/${options.epochs} loss ${(lossSum / seen).toFixed(3)} err ${
          (100 * wrong / seen).toFixed(1)
        }%`,
      );
    }
    report.train_error = wrong / seen;
    report.train_loss = lossSum / seen;
    if (options.val) {
      const e = await evaluate(backend, model, options.val, {
        batch: options.batch,
        preprocess: options.preprocess,
      });
      report.val_errors.push(e);
      report.val_error = e;
    }
  }
  progress?.done(report.val_error !== null ? `val err ${(100 * report.val_error).toFixed(2)}%` : "");
  const snap = backend.ledger.snapshot();
  report.ms_per_batch = report.steps ? ms / report.steps : 0;
  report.peak_bytes = snap.peakBytes;
  report.peak_saved_bytes = snap.peak.saved;
  report.saved_bytes_by_block = snap.savedByTag;
  opt.dispose();
  return report;
}
