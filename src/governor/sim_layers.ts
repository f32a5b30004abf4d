/**
 * The memory behaviour of the ops with weights (src/ops/conv.ts, linear.ts, norm.ts) on the symbolic ledger:
 * TinyTL's rule (a conv/linear/matmul saves its data operand only when its weight trains, and keeps a frozen
 * leaf weight by reference), BatchNorm's x-hat only when gamma trains or x needs a gradient in training, its
 * per-channel variance when x needs one, and every temporary their backward allocates. See sim_ops.ts.
 */
import { type Conv2dOptions, conv2dOutputShape } from "../ops/conv.ts";
import type { Sim, SimSaved, SimSavedTensor, SimTensor } from "./sim.ts";
import { reduceAxes } from "./sim_ops.ts";

type T = SimTensor;

// ---- convolution and matrix products (conv.ts, linear.ts) ----

/**
 * The saving rule conv2d and linear share: the data operand is saved when the weight trains, the weight is
 * kept by reference when the data needs a gradient; backward allocates dx, dw and (via `db`) the bias grad.
 */
function recordWeighted(
  s: Sim,
  op: string,
  y: T,
  [x, w, bias]: [T, T, T | null],
  db: (dy: T) => T,
): T {
  const needX = s.needsGrad(x), needW = s.needsGrad(w), needB = s.needsGrad(bias);
  if (!needX && !needW && !needB) return y;
  const savedX = needW ? s.saveFloat(x) : null;
  const keptW = needX ? s.keepOperand(w) : null;
  const xShape = x.shape, wShape = w.shape;
  return s.record(op, y, [x, w, bias], (dy) => {
    let dx: T | null = null, dw: T | null = null;
    if (keptW) {
      const wv = keptW.get();
      dx = s.empty(xShape);
      wv.dispose();
    }
    if (savedX) {
      const xv = savedX.get();
      dw = s.empty(wShape);
      xv.dispose();
    }
    return [dx, dw, needB ? db(dy) : null];
  }, [savedX, keptW].filter((v) => v !== null));
}

export function conv2d(s: Sim, x: T, w: T, bias: T | null, options: Omit<Conv2dOptions, "bias">): T {
  const y = s.empty(conv2dOutputShape(x.shape, w.shape, options));
  const cout = w.shape[0];
  return recordWeighted(s, "conv2d", y, [x, w, bias], (dy) => reduceAxes(s, dy, [0, 2, 3], [cout]));
}

export function linear(s: Sim, x: T, w: T, b: T | null): T {
  const [nOut, nIn] = w.shape;
  const rows = x.size / nIn;
  const y = s.empty([...x.shape.slice(0, -1), nOut]);
  return recordWeighted(
    s,
    "linear",
    y,
    [x, w, b],
    (dy) => reduceAxes(s, s.view(dy, [rows, nOut]), [0], [nOut]),
  );
}

export function matmul(s: Sim, a: T, b: T): T {
  const [m] = a.shape.slice(-2), [, n] = b.shape.slice(-2);
  const y = s.empty([...a.shape.slice(0, -2), m, n]);
  const needA = s.needsGrad(a), needB = s.needsGrad(b);
  if (!needA && !needB) return y;
  const savedA = needB ? s.saveFloat(a) : null;
  const keptB = needA ? s.keepOperand(b) : null;
  const aShape = a.shape, bShape = b.shape;
  return s.record("matmul", y, [a, b], () => {
    let da: T | null = null, db: T | null = null;
    if (keptB) {
      const bv = keptB.get();
      da = s.empty(aShape);
      bv.dispose();
    }
    if (savedA) {
      const av = savedA.get();
      db = s.empty(bShape);
      av.dispose();
    }
    return [da, db];
  }, [savedA, keptB].filter((v) => v !== null));
}

export interface SimGemm {
  c: T | null;
  alpha: number;
  beta: number;
  transA: boolean;
  transB: boolean;
}

export function gemm(s: Sim, a: T, b: T, o: SimGemm): T {
  const { c, alpha, beta, transA, transB } = o;
  const m = transA ? a.shape[1] : a.shape[0];
  const n = transB ? b.shape[0] : b.shape[1];
  const cPad = c ? [...new Array<number>(Math.max(0, 2 - c.rank)).fill(1), ...c.shape] : [];
  const useC = c !== null && beta !== 0;
  let y: T;
  if (useC && alpha === 1 && beta === 1 && cPad[0] === 1 && cPad[1] === n) y = s.empty([m, n]);
  else if (useC) {
    y = s.empty([m, n]);
    s.empty([1]).dispose();
    if (alpha !== 1) s.empty([m, n]).dispose();
  } else {
    y = s.empty([m, n]);
    if (alpha !== 1) {
      const p = y;
      y = s.empty([m, n]);
      p.dispose();
    }
  }
  const needA = s.needsGrad(a), needB = s.needsGrad(b), needC = useC && s.needsGrad(c);
  if (!needA && !needB && !needC) return y;
  const savedA = needB ? s.saveFloat(a) : null;
  const keptB = needA ? s.keepOperand(b) : null;
  const aShape = a.shape, bShape = b.shape, cShape = c?.shape ?? [];
  return s.record("gemm", y, [a, b, c], (dy) => {
    const g = alpha === 1 ? dy : s.empty(dy.shape);
    let da: T | null = null, db: T | null = null, dc: T | null = null;
    if (keptB) {
      const bv = keptB.get();
      da = s.empty(aShape);
      bv.dispose();
    }
    if (savedA) {
      const av = savedA.get();
      db = s.empty(bShape);
      av.dispose();
    }
    if (needC) {
      const summed = reduceAxes(s, dy, [0, 1].filter((i) => cPad[i] === 1), cShape);
      dc = beta === 1 ? summed : s.empty(cShape);
      if (dc !== summed) summed.dispose();
    }
    if (g !== dy) g.dispose();
    return [da, db, dc];
  }, [savedA, keptB].filter((v) => v !== null));
}

// ---- batch normalisation (norm.ts) ----

export interface SimBnParams {
  gamma: T;
  beta: T;
  /** Train mode: batch statistics. */
  training: boolean;
  /** Update the running statistics in train mode (BatchNorm2d.trackRunningStats). */
  updateStats: boolean;
}

export function batchNorm2d(s: Sim, x: T, p: SimBnParams): T {
  const c = x.shape[1];
  const needX = s.needsGrad(x), needGamma = s.needsGrad(p.gamma), needBeta = s.needsGrad(p.beta);
  let mean: T | null = null, variance: T | null = null;
  if (p.training) {
    mean = s.empty([c], "workspace");
    variance = s.empty([c], "workspace");
    if (p.updateStats) {
      for (let k = 0; k < 2; k++) {
        const scaled = s.empty([c], "workspace");
        const diff = s.empty([c], "workspace");
        scaled.dispose();
        diff.dispose();
      }
    }
  } else if (needX) {
    variance = s.empty([c], "workspace");
  }
  const keepXhat = needGamma || (needX && p.training);
  const out = s.empty(x.shape);
  const xhat = keepXhat ? s.empty(x.shape) : null;
  mean?.dispose();
  if (!needX && !needGamma && !needBeta) {
    variance?.dispose();
    return out;
  }
  const saved: SimSaved[] = [];
  let savedXhat: SimSavedTensor | null = null;
  if (xhat) {
    savedXhat = s.saveFloat(xhat);
    saved.push(savedXhat);
    xhat.dispose();
  }
  if (needX) saved.push(s.keepStorage(variance!.storage));
  else variance?.dispose();
  const [n] = x.shape;
  return s.record("batchNorm2d", out, [x, p.gamma, p.beta], () => {
    const h = savedXhat?.get() ?? null;
    let sumDy: T | null = null, sumDyXhat: T | null = null;
    if (h) {
      sumDy = s.empty([c]);
      sumDyXhat = s.empty([c]);
    } else if (needBeta) {
      const perSample = s.empty([n * c]);
      sumDy = s.empty([c]);
      perSample.dispose();
    }
    const dx = needX ? s.empty(x.shape) : null;
    h?.dispose();
    const dgamma = needGamma ? sumDyXhat : (sumDyXhat?.dispose(), null);
    const dbeta = needBeta ? sumDy : (sumDy?.dispose(), null);
    return [dx, dgamma, dbeta];
  }, saved);
}
