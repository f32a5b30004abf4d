/**
 * What every test-time adaptation method shares: the method interface, BN discovery, source-state snapshots
 * for resets, and host-side statistics of a batch's logits (the N x C logits are read back once per batch:
 * predictions and filters are computed on the host, gradients on the device).
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d } from "../nn/layers.ts";
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
  /** True when the method restored the source state on this batch (SAR's reset, the collapse guard). */
  reset: boolean;
  resetReason?: string;
}

export interface TtaMethod {
  readonly name: AdaptMethodName;
  readonly model: Module;
  /** Predict on x [n, c, h, w] and adapt on it. */
  step(x: Tensor): Promise<StepResult>;
  /** Every tensor the method trains (the runtime guard snapshots them and clears their gradients). */
  trainables(): Tensor[];
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

/** TENT's configuration: train mode (batch statistics) without updating the running ones. */
export function useBatchStatistics(model: Module): void {
  model.train();
  for (const [, bn] of batchNorms(model)) bn.trackRunningStats = false;
}

/** Make BN affine parameters the only trainable ones (TENT, EATA, SAR); returns them. */
export function trainBnAffine(model: Module): Tensor[] {
  const affine = new Set<Tensor>();
  for (const [, bn] of batchNorms(model)) {
    if (bn.affine) affine.add(bn.weight).add(bn.bias);
  }
  if (affine.size === 0) {
    throw new Error(
      "The model has no affine BatchNormalization layers to adapt (was BN folded into Conv at export?)",
    );
  }
  return model.setTrainable((_name, p) => affine.has(p));
}

/** A host copy of the model's parameters and buffers, to reset to. */
export class SourceState {
  private constructor(readonly state: Record<string, Float32Array>) {}

  static async of(model: Module): Promise<SourceState> {
    return new SourceState(await model.state());
  }

  restore(model: Module): void {
    model.loadState(this.state);
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
