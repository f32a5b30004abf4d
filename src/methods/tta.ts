/**
 * What every test-time adaptation method shares: the method interface, BN discovery and robust BN modes,
 * snapshots of the adapted state for resets, and host-side statistics of a batch's logits (the N x C logits
 * are read back once per batch: predictions and filters are computed on the host, gradients on the device).
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, LayerNorm } from "../nn/layers.ts";
import type { Tensor } from "../tensor.ts";
import type { AdaptMethodName } from "./registry.ts";

export interface StepResult {
  /** Logits [n, classes] of the batch, computed before this batch's update (online prediction). */
  logits: Float32Array;
  classes: number;
  /** Mean softmax entropy of the batch's predictions. */
  entropy: number;
  /** Whether parameters were updated on this batch. */
  updated: boolean;
  /** Samples that took part in the update (after EATA/SAR filtering). */
  used: number;
  /** True when the method restored an earlier state on this batch (SAR's reset, the collapse guard). */
  reset: boolean;
  resetReason?: string;
  /** "collapse" when the collapse guard made the reset. */
  resetCause?: "method" | "collapse";
  /** Learning steps this batch triggered. */
  learned?: number;
  /** The method's memory bank after this batch: frames kept, capacity, device bytes. */
  bank?: { size: number; capacity: number; bytes: number };
}

export interface TtaMethod {
  readonly name: AdaptMethodName;
  readonly model: Module;
  /** Predict on x [n, c, h, w] and adapt on it. */
  step(x: Tensor): Promise<StepResult>;
  /** Every tensor the method trains (the runtime guard snapshots them and clears their gradients). */
  trainables(): Tensor[];
  /** Learn on minibatches of n frames from now on (the runtime guard's back-off). */
  setLearningBatch?(n: number): void;
  /** Back to the source model and a fresh optimizer. */
  reset(): void;
  /** Adapted state (model + optimizer + method counters) for checkpoints. */
  state(): Promise<Record<string, Float32Array>>;
  loadState(state: Record<string, Float32Array>): void;
  dispose(): void;
}

export function batchNorms(model: Module): [string, BatchNorm2d][] {
  return model.namedModules().filter((e): e is [string, BatchNorm2d] => e[1] instanceof BatchNorm2d);
}

/** Every normalisation layer: BatchNorm and LayerNorm (ConvNeXt, ViT: SAR's setting). */
export function normLayers(model: Module): [string, BatchNorm2d | LayerNorm][] {
  return model.namedModules().filter((e): e is [string, BatchNorm2d | LayerNorm] =>
    e[1] instanceof BatchNorm2d || e[1] instanceof LayerNorm
  );
}

/** Why a model has nothing for TENT-style methods to adapt (one line naming the fix). */
export const NO_NORM_LAYERS =
  "The model has no affine BatchNormalization or LayerNormalization layers to adapt. A PyTorch export in eval " +
  "mode folds BatchNorm into the convolutions: re-export with torch.onnx.export(..., " +
  "training=torch.onnx.TrainingMode.PRESERVE) to keep them. A model without normalisation layers can only " +
  "run as --method source";

/**
 * Robust BN (RoTTA's RBN, simplified): every BN keeps target statistics as its running ones, an exponential
 * moving average started from the source statistics. Predictions normalise with them (eval mode: never with
 * the statistics of the frames being predicted, so a batch of one is as good as a batch of 64, and the first
 * frames behave like the source model); learning normalises a minibatch of the memory bank with its own
 * statistics and, when the statistics follow the bank, moves the average by `momentum`.
 */
export function setStatsMomentum(model: Module, momentum: number): void {
  for (const [, bn] of batchNorms(model)) bn.momentum = momentum;
}

/** Predict with the target statistics (see setStatsMomentum). */
export function predictMode(model: Module): void {
  model.eval();
}

/** Learn on a minibatch: batch statistics; `track` moves the target statistics toward the minibatch's. */
export function learnMode(model: Module, track: boolean): void {
  model.train();
  for (const [, bn] of batchNorms(model)) bn.trackRunningStats = track;
}

/**
 * Make the affine parameters of every BN and LayerNorm the only trainable ones (TENT, EATA, SAR, RoTTA; a
 * LayerNorm-only model such as ConvNeXt or ViT adapts its LayerNorms, as SAR does); returns them.
 */
export function trainBnAffine(model: Module): Tensor[] {
  const affine = new Set<Tensor>();
  for (const [, m] of normLayers(model)) {
    if (m instanceof BatchNorm2d) {
      if (m.affine) affine.add(m.weight).add(m.bias);
    } else {
      if (m.weight) affine.add(m.weight);
      if (m.bias) affine.add(m.bias);
    }
  }
  if (affine.size === 0) throw new Error(NO_NORM_LAYERS);
  return model.setTrainable((_name, p) => affine.has(p));
}

/** Names of the state normalisation layers own (affine, BN statistics): all that adaptation changes. */
function bnStateNames(model: Module): Set<string> {
  const names = new Set<string>();
  for (const [prefix, bn] of normLayers(model)) {
    for (const [k] of bn.namedState()) names.add(prefix ? `${prefix}.${k}` : k);
  }
  return names;
}

type State = Record<string, Float32Array>;

/** `part` with every key under `prefix.`: one part of a method's state ("model", "optimizer"). */
export function prefixed(prefix: string, part: State): State {
  return Object.fromEntries(Object.entries(part).map(([k, v]) => [`${prefix}.${k}`, v]));
}

/** The entries of `state` under `prefix.`, the prefix removed: the inverse of prefixed(). */
export function unprefixed(prefix: string, state: State): State {
  const p = `${prefix}.`;
  return Object.fromEntries(
    Object.entries(state).filter(([k]) => k.startsWith(p)).map(([k, v]) => [k.slice(p.length), v]),
  );
}

/** A host copy of the model's BN state (affine and statistics): what adapting methods change. */
export async function bnState(model: Module): Promise<Record<string, Float32Array>> {
  const keep = bnStateNames(model);
  const out: Record<string, Float32Array> = {};
  for (const [k, t] of model.namedState()) {
    if (!keep.has(k)) continue;
    const d = await t.data();
    out[k] = d instanceof Float32Array ? d : Float32Array.from(d);
  }
  return out;
}

/** A host copy of the model's BN state, to reset to (the rest of the model never changes). */
export class SourceState {
  private constructor(readonly state: Record<string, Float32Array>) {}

  static async of(model: Module): Promise<SourceState> {
    return new SourceState(await bnState(model));
  }

  restore(model: Module): void {
    model.loadState(this.state, { strict: false });
  }
}

export interface LogitStats {
  /** argmax per row. */
  predictions: Int32Array;
  /** Softmax entropy per row. */
  entropies: Float64Array;
  /** Softmax probabilities, row-major. */
  probs: Float64Array;
  meanEntropy: number;
}

export function logitStats(logits: ArrayLike<number>, classes: number): LogitStats {
  const n = logits.length / classes;
  const predictions = new Int32Array(n);
  const entropies = new Float64Array(n);
  const probs = new Float64Array(n * classes);
  let total = 0;
  for (let i = 0; i < n; i++) {
    let max = -Infinity, arg = 0;
    for (let c = 0; c < classes; c++) {
      const v = logits[i * classes + c];
      if (v > max) {
        max = v;
        arg = c;
      }
    }
    let z = 0;
    for (let c = 0; c < classes; c++) z += Math.exp(logits[i * classes + c] - max);
    const logZ = Math.log(z) + max;
    let h = 0;
    for (let c = 0; c < classes; c++) {
      const lp = logits[i * classes + c] - logZ;
      const p = Math.exp(lp);
      probs[i * classes + c] = p;
      h -= p * lp;
    }
    predictions[i] = arg;
    entropies[i] = h;
    total += h;
  }
  return { predictions, entropies, probs, meanEntropy: n ? total / n : 0 };
}
