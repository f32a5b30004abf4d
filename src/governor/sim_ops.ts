/**
 * The memory behaviour of every op in src/ops/, on the symbolic ledger (sim.ts): which tensors each forward
 * allocates and in what order, what it saves for backward (TinyTL's rule: an input only for a trainable
 * weight; BN's x-hat only when gamma trains or x needs a gradient in training; 1-bit masks for ReLU, ReLU6,
 * Clip; floats through the codec for hard-swish, hard-sigmoid, sigmoid unless step masks are on), and what
 * each backward allocates, decodes and frees. Shapes come from the ops' own shape rules (conv2dOutputShape,
 * broadcastShapes, resolveShape, normalizeAxes), so a shape the real op rejects fails here the same way.
 * Keep each function in step with its op: the estimator test compares against the ledger. Ops with weights
 * (conv, linear, matmul, gemm, batch norm) are in sim_layers.ts.
 */
import { broadcastShapes } from "../ops/elementwise.ts";
import { normalizeAxes, runsOf } from "../ops/reduce.ts";
import { resolveShape } from "../ops/shape.ts";
import { type Sim, type SimSaved, type SimSavedTensor, type SimTensor, sizeOf } from "./sim.ts";

type T = SimTensor;

// ---- reductions (reduce.ts) ----

export function reduceAxes(s: Sim, x: T, axes: readonly number[], shape?: readonly number[]): T {
  const out = shape ?? x.shape.filter((_, i) => !axes.includes(i));
  const runs = runsOf(x.shape, axes);
  if (x.size === 0 || !runs.some((r) => r.reduced)) return s.empty(out);
  let cur = x;
  while (runs.some((r) => r.reduced)) {
    let j = -1;
    runs.forEach((r, i) => {
      if (r.reduced && (j < 0 || r.size > runs[j].size)) j = i;
    });
    const outer = runs.slice(0, j).reduce((p, r) => p * r.size, 1);
    const inner = runs.slice(j + 1).reduce((p, r) => p * r.size, 1);
    const last = !runs.some((r, i) => r.reduced && i !== j);
    const next = s.empty(last ? out : [outer * inner]);
    if (cur !== x) cur.dispose();
    cur = next;
    runs.splice(j, 1);
    if (j > 0 && j < runs.length) {
      runs.splice(j - 1, 2, { size: runs[j - 1].size * runs[j].size, reduced: false });
    }
  }
  return cur;
}

function broadcastBack(s: Sim, xShape: readonly number[]): T {
  const out = s.empty(xShape);
  if (out.size === 0) return out;
  s.empty([1]).dispose(); // the scale constant
  return out;
}

export function reduceOp(s: Sim, x: T, axes: readonly number[], keepDims: boolean): T {
  const ax = normalizeAxes(x.shape, axes, { op: "reduce" });
  const shape = keepDims
    ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d))
    : x.shape.filter((_, i) => !ax.includes(i));
  const out = reduceAxes(s, x, ax, shape);
  if (!s.needsGrad(x)) return out;
  const xShape = x.shape;
  return s.record("reduce", out, [x], () => [broadcastBack(s, xShape)]);
}

export function globalAvgPool(s: Sim, x: T): T {
  if (x.rank !== 4) {
    throw new Error(`globalAvgPool(): input [${x.shape.join(", ")}] must be 4-D [N, C, H, W]`);
  }
  return reduceOp(s, x, [2, 3], true);
}

// ---- shape (shape.ts) ----

export function view(s: Sim, x: T, shape: readonly number[]): T {
  const out = s.view(x, shape);
  if (!s.needsGrad(x)) return out;
  const xShape = x.shape;
  return s.record("view", out, [x], (dy) => [s.view(dy, xShape)]);
}

export function reshape(s: Sim, x: T, shape: readonly number[]): T {
  return view(s, x, resolveShape(x.shape, shape));
}

export function flatten(s: Sim, x: T, axis = 1): T {
  const a = axis < 0 ? axis + x.rank : axis;
  return view(s, x, [sizeOf(x.shape.slice(0, a)), sizeOf(x.shape.slice(a))]);
}

// ---- elementwise (elementwise.ts) ----

function runBinary(s: Sim, a: T, b: T): T {
  return s.empty(broadcastShapes("binary", a.shape, b.shape));
}

export function sumToShape(s: Sim, g: T, shape: readonly number[], alpha = 1): T {
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    const want = d < lead ? 1 : shape[d - lead];
    if (want !== g.shape[d]) axes.push(d);
  }
  const summed = axes.length > 0 ? reduceAxes(s, g, axes, shape) : s.view(g, shape);
  if (alpha === 1) return summed;
  const scaled = s.empty(shape);
  summed.dispose();
  return scaled;
}

export function add(s: Sim, a: T, b: T, alphaB = 1): T {
  const out = runBinary(s, a, b);
  const needA = s.needsGrad(a), needB = s.needsGrad(b);
  if (!needA && !needB) return out;
  return s.record("add", out, [a, b], (dy) => [
    needA ? sumToShape(s, dy, a.shape) : null,
    needB ? sumToShape(s, dy, b.shape, alphaB) : null,
  ]);
}

export function sub(s: Sim, a: T, b: T): T {
  return add(s, a, b, -1);
}

function productGrad(s: Sim, dy: T, other: SimSavedTensor, shape: readonly number[]): T {
  const o = other.get();
  const t = runBinary(s, dy, o);
  o.dispose();
  const g = sumToShape(s, t, shape);
  t.dispose();
  return g;
}

export function mul(s: Sim, a: T, b: T): T {
  const out = runBinary(s, a, b);
  const needA = s.needsGrad(a), needB = s.needsGrad(b);
  if (!needA && !needB) return out;
  const savedB = needA ? s.saveFloat(b) : null;
  const savedA = needB ? s.saveFloat(a) : null;
  const saved = [savedA, savedB].filter((x): x is SimSavedTensor => x !== null);
  return s.record("mul", out, [a, b], (dy) => [
    savedB ? productGrad(s, dy, savedB, a.shape) : null,
    savedA ? productGrad(s, dy, savedA, b.shape) : null,
  ], saved);
}

export function div(s: Sim, a: T, b: T): T {
  const out = runBinary(s, a, b);
  const needA = s.needsGrad(a), needB = s.needsGrad(b);
  if (!needA && !needB) return out;
  const savedB = s.saveFloat(b);
  const savedA = needB ? s.saveFloat(a) : null;
  return s.record("div", out, [a, b], (dy) => {
    const bt = savedB.get();
    const q = runBinary(s, dy, bt);
    const da = needA ? sumToShape(s, q, a.shape) : null;
    let db: T | null = null;
    if (savedA) {
      const at = savedA.get();
      const qa = runBinary(s, q, at);
      const qab = runBinary(s, qa, bt);
      db = sumToShape(s, qab, b.shape, -1);
      for (const t of [at, qa, qab]) t.dispose();
    }
    q.dispose();
    bt.dispose();
    return [da, db];
  }, savedA ? [savedB, savedA] : [savedB]);
}

export function scale(s: Sim, x: T): T {
  const out = s.empty(x.shape);
  if (!s.needsGrad(x)) return out;
  return s.record("scale", out, [x], (dy) => [s.empty(dy.shape)]);
}

export function addScalar(s: Sim, x: T): T {
  const c = s.empty([]);
  const out = runBinary(s, x, c);
  c.dispose();
  if (!s.needsGrad(x)) return out;
  return s.record("addScalar", out, [x], (dy) => [s.view(dy, x.shape)]);
}

// ---- activations (activation.ts) ----

function masked(s: Sim, out: T, x: T, mask: SimSaved): T {
  return s.record("masked", out, [x], (dy) => [s.empty(dy.shape)], [mask]);
}

/** relu, relu6, clip: a 1-bit mask. */
export function windowed(s: Sim, x: T): T {
  const out = s.empty(x.shape);
  if (!s.needsGrad(x)) return out;
  return masked(s, out, x, s.saveMask(x));
}

/** hardswish, hardsigmoid (step mask when the store asks for it) and sigmoid (always its input). */
export function smooth(s: Sim, x: T, op: "hardswish" | "hardsigmoid" | "sigmoid"): T {
  const out = s.empty(x.shape);
  if (!s.needsGrad(x)) return out;
  if (op !== "sigmoid" && s.policy.stepMasks) return masked(s, out, x, s.saveMask(x));
  const saved = s.saveFloat(x);
  return s.record(op, out, [x], (dy) => {
    const input = saved.get();
    const dx = s.empty(dy.shape);
    input.dispose();
    return [dx];
  }, [saved]);
}

// ---- softmax (softmax.ts) ----

export function softmax(s: Sim, x: T, log: boolean): T {
  const out = s.empty(x.shape);
  if (!s.needsGrad(x)) return out;
  const rows = x.size / x.shape[x.rank - 1];
  const saved = s.saveFloat(out);
  return s.record(log ? "logSoftmax" : "softmax", out, [x], (dy) => {
    const y = saved.get();
    let dx: T;
    if (!log) {
      const dyy = s.empty(dy.shape);
      const sm = s.empty([rows]);
      const centered = s.empty(dy.shape);
      dx = s.empty(y.shape);
      for (const t of [dyy, sm, centered]) t.dispose();
    } else {
      const sm = s.empty([rows]);
      const p = s.empty(y.shape);
      const ps = s.empty(p.shape);
      dx = s.empty(dy.shape);
      for (const t of [sm, p, ps]) t.dispose();
    }
    y.dispose();
    return [dx];
  }, [saved]);
}
