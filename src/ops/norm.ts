/**
 * batchNorm2d over [N, C, H, W] (or [N, C]) with PyTorch's semantics.
 *
 * Saving rule (TENT / TinyTL): xhat is kept only when gamma trains (dgamma = sum dy*xhat) or when x needs a
 * gradient in training mode (the batch-stat terms of dx); the per-channel variance is kept when x needs a
 * gradient. When only beta trains, dbeta = sum dy needs nothing saved at all.
 */
import { codecFor, type SavedTensor, saveFloat } from "../memory/codecs.ts";
import { activeTag, needsGrad, record, type Saved } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { Backend, Storage } from "../backend/backend.ts";

export interface BatchNormParams {
  gamma: Tensor;
  beta: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
}

/**
 * How a BN output can be recomputed in backward: y = gamma[c] * xhat + beta[c] from the exact (fp32) x-hat
 * the BN node keeps anyway. An activation right after the BN (relu6 in every MobileNet block) then needs no
 * mask of its own (activation.ts): the saved x-hat is what TENT keeps, so the masks were duplicate memory.
 */
export interface AffineSource {
  xhat: SavedTensor;
  gamma: Tensor;
  beta: Tensor;
  n: number;
  c: number;
  hw: number;
}

const affineSources = new WeakMap<Tensor, AffineSource>();

/** The recipe of a BN output that keeps its fp32 x-hat for backward, or null. */
export function affineSource(y: Tensor): AffineSource | null {
  return affineSources.get(y) ?? null;
}

export interface BatchNormOptions {
  /** true: normalise with batch statistics; false: with the running statistics. */
  training: boolean;
  /** PyTorch convention: running = (1 - momentum) * running + momentum * batch. Default 0.1. */
  momentum?: number;
  eps?: number;
  /** Update the running statistics in place (default: training). Ignored in eval mode. */
  updateStats?: boolean;
}

/** A per-channel storage held for backward, counted as "saved" (too small to route through a lossy codec). */
function keepStorage(b: Backend, s: Storage): Saved {
  b.recategorize(s, "saved", activeTag());
  let released = false;
  return {
    bytes: s.bytes,
    release: () => {
      if (released) return;
      released = true;
      b.release(s);
    },
  };
}

function dims(x: Tensor, params: BatchNormParams): { n: number; c: number; hw: number } {
  if (x.rank !== 4 && x.rank !== 2) {
    throw new Error(`batchNorm2d(): input ${shapeString(x.shape)} must be [N, C, H, W] or [N, C]`);
  }
  const [n, c] = x.shape;
  const hw = x.rank === 4 ? x.shape[2] * x.shape[3] : 1;
  for (const [k, t] of Object.entries(params)) {
    if (t.size !== c || t.rank !== 1) {
      throw new Error(
        `batchNorm2d(): ${k} ${shapeString(t.shape)} does not match input ${shapeString(x.shape)} (C=${c})`,
      );
    }
  }
  return { n, c, hw };
}

/** running += momentum * (batch * factor - running), i.e. (1-m)*running + m*factor*batch, in place. */
function updateRunning(b: Backend, running: Tensor, batch: Storage, momentum: number, factor: number): void {
  const c = running.size;
  const scaled = b.alloc(c, { category: "workspace" });
  const diff = b.alloc(c, { category: "workspace" });
  b.run("axpy", { x: batch, out: scaled, attrs: { n: c, alpha: factor, accumulate: false } });
  b.run("binary", {
    a: scaled,
    b: running.storage,
    out: diff,
    attrs: { op: "sub", shape: [c], aStrides: [1], bStrides: [1] },
  });
  b.run("axpy", { x: diff, out: running.storage, attrs: { n: c, alpha: momentum, accumulate: true } });
  b.release(scaled);
  b.release(diff);
}

export function batchNorm2d(x: Tensor, params: BatchNormParams, options: BatchNormOptions): Tensor {
  const { gamma, beta, runningMean, runningVar } = params;
  const { n, c, hw } = dims(x, params);
  const b = x.backend;
  const training = options.training;
  const momentum = options.momentum ?? 0.1;
  const eps = options.eps ?? 1e-5;
  const m = n * hw;
  if (training && m < 2) {
    throw new Error(
      `batchNorm2d(): training needs more than 1 value per channel, input ${shapeString(x.shape)}`,
    );
  }

  const needX = needsGrad(x), needGamma = needsGrad(gamma), needBeta = needsGrad(beta);
  let mean: Storage, variance: Storage;
  if (training) {
    mean = b.alloc(c, { category: "workspace" });
    variance = b.alloc(c, { category: "workspace" });
    b.run("bn_stats", { x: x.storage, mean, variance, attrs: { n, c, hw } });
    if (options.updateStats ?? true) {
      updateRunning(b, runningMean, mean, momentum, 1);
      // PyTorch stores the unbiased batch variance in the running estimate but normalises with the biased one.
      updateRunning(b, runningVar, variance, momentum, m / (m - 1));
    }
  } else if (needX) {
    mean = runningMean.storage;
    // A copy for dx: the running variance may be updated by another forward before this backward runs.
    variance = b.alloc(c, { category: "workspace" });
    b.run("copy", { x: runningVar.storage, out: variance, attrs: { n: c, srcOffset: 0, dstOffset: 0 } });
  } else {
    mean = runningMean.storage;
    variance = runningVar.storage;
    b.retain(variance); // released below like the other branches' own storages
  }

  const keepXhat = needGamma || (needX && training);
  const out = Tensor.empty(b, x.shape);
  const xhat = keepXhat ? Tensor.empty(b, x.shape) : null;
  b.run("bn_apply", {
    x: x.storage,
    mean,
    variance,
    gamma: gamma.storage,
    beta: beta.storage,
    out: out.storage,
    ...(xhat ? { xhat: xhat.storage } : {}),
    attrs: { n, c, hw, eps },
  });
  if (training) b.release(mean);

  if (!needX && !needGamma && !needBeta) {
    b.release(variance);
    return out;
  }
  const saved: Saved[] = [];
  let savedXhat: SavedTensor | null = null;
  if (xhat) {
    const exact = codecFor("batchNorm2d", "xhat") === "fp32";
    savedXhat = saveFloat(xhat, "batchNorm2d", "xhat");
    saved.push(savedXhat);
    xhat.dispose();
    if (exact) affineSources.set(out, { xhat: savedXhat, gamma, beta, n, c, hw });
  }
  if (needX) saved.push(keepStorage(b, variance));
  else b.release(variance);

  const attrs = { n, c, hw };
  return record("batchNorm2d", out, [x, gamma, beta], (dy) => {
    const h = savedXhat?.get() ?? null;
    let sumDy: Tensor | null = null, sumDyXhat: Tensor | null = null;
    if (h) {
      sumDy = Tensor.empty(b, [c]);
      sumDyXhat = Tensor.empty(b, [c]);
      b.run("bn_grad_reduce", {
        dy: dy.storage,
        xhat: h.storage,
        sumDy: sumDy.storage,
        sumDyXhat: sumDyXhat.storage,
        attrs,
      });
    } else if (needBeta) {
      sumDy = channelSum(dy, attrs);
    }
    let dx: Tensor | null = null;
    if (needX) {
      dx = Tensor.empty(b, x.shape);
      b.run("bn_grad_input", {
        dy: dy.storage,
        gamma: gamma.storage,
        variance,
        out: dx.storage,
        ...(training ? { xhat: h!.storage, sumDy: sumDy!.storage, sumDyXhat: sumDyXhat!.storage } : {}),
        attrs: { ...attrs, eps, training },
      });
    }
    h?.dispose();
    const dgamma = needGamma ? sumDyXhat : (sumDyXhat?.dispose(), null);
    const dbeta = needBeta ? sumDy : (sumDy?.dispose(), null);
    return [dx, dgamma, dbeta];
  }, saved);
}

/** sum of dy [n, c, hw] over n and hw, with the reduce kernel (dbeta when nothing else is needed). */
function channelSum(dy: Tensor, attrs: { n: number; c: number; hw: number }): Tensor {
  const b = dy.backend;
  const { n, c, hw } = attrs;
  const perSample = Tensor.empty(b, [n * c]);
  b.run("reduce", {
    x: dy.storage,
    out: perSample.storage,
    attrs: { op: "sum", outer: n * c, size: hw, inner: 1 },
  });
  const out = Tensor.empty(b, [c]);
  b.run("reduce", {
    x: perSample.storage,
    out: out.storage,
    attrs: { op: "sum", outer: 1, size: n, inner: c },
  });
  perSample.dispose();
  return out;
}
