/**
 * Elementwise arithmetic with numpy broadcasting: add, sub, mul, div, pow, equal, scale, addScalar.
 *
 * Forward is one `binary` kernel whose input strides are 0 along broadcast dims. Backward sums the upstream
 * gradient back over those dims with the `reduce` kernel. mul/div keep an operand only when the OTHER input's
 * gradient needs it (TinyTL rule: a frozen operand's gradient costs nothing).
 */
import { type SavedTensor, saveFloat } from "../memory/codecs.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { BinaryOp } from "../backend/kernels.ts";
import { reduceAxes } from "./reduce.ts";

const MAX_RANK = 6; // the binary kernel's limit (kernels.ts)

/** The numpy broadcast of two shapes; throws naming `op` and both shapes when they do not broadcast. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1, db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(
        `${op}(): shapes ${shapeString(a)} and ${shapeString(b)} are not broadcastable (dim ${
          i - rank
        }: ${da} vs ${db})`,
      );
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Element strides of `inShape` along each dim of `outShape` (right-aligned), 0 where it is broadcast. */
function stridesFor(inShape: readonly number[], outShape: readonly number[]): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  let s = 1;
  for (let i = inShape.length - 1; i >= 0; i--) {
    const d = outShape.length - inShape.length + i;
    strides[d] = inShape[i] === 1 ? 0 : s;
    s *= inShape[i];
  }
  return strides;
}

/**
 * Drop size-1 dims and merge neighbours that are contiguous for every input, so any broadcast fits the
 * kernel's rank limit and the kernel's odometer does the least work.
 */
function compact(op: string, shape: number[], strides: number[][]): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strides.forEach((s, k) => (outStrides[k][last] = s[d]));
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, k) => outStrides[k].push(s[d]));
    }
  }
  if (outShape.length === 0) return { shape: [1], strides: strides.map(() => [0]) };
  if (outShape.length > MAX_RANK) {
    throw new Error(
      `${op}(): broadcast of shape ${shapeString(shape)} needs rank ${outShape.length} > ${MAX_RANK}`,
    );
  }
  return { shape: outShape, strides: outStrides };
}

function runBinary(name: string, op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  if (a.backend !== b.backend) throw new Error(`${name}(): inputs live on different backends`);
  const shape = broadcastShapes(name, a.shape, b.shape);
  const out = Tensor.empty(a.backend, shape);
  if (out.size === 0) return out;
  const c = compact(name, shape, [stridesFor(a.shape, shape), stridesFor(b.shape, shape)]);
  a.backend.run("binary", {
    a: a.storage,
    b: b.storage,
    out: out.storage,
    attrs: { op, shape: c.shape, aStrides: c.strides[0], bStrides: c.strides[1] },
  });
  return out;
}

/**
 * Sum `g` (a broadcast result) back to `shape`, times `alpha`: the gradient of a broadcast input.
 * Returns a new tensor of exactly `shape` (a view of g when nothing was broadcast and alpha is 1).
 */
export function sumToShape(g: Tensor, shape: readonly number[], alpha = 1): Tensor {
  const lead = g.rank - shape.length;
  if (lead < 0) {
    throw new Error(`sumToShape(): cannot reduce ${shapeString(g.shape)} to ${shapeString(shape)}`);
  }
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    const want = d < lead ? 1 : shape[d - lead];
    if (want === g.shape[d]) continue;
    if (want !== 1) {
      throw new Error(`sumToShape(): ${shapeString(g.shape)} does not broadcast from ${shapeString(shape)}`);
    }
    axes.push(d);
  }
  const summed = axes.length > 0 ? reduceAxes(g, axes, { shape }) : g.view(shape);
  if (alpha === 1) return summed;
  const scaled = Tensor.empty(g.backend, shape);
  g.backend.run("axpy", {
    x: summed.storage,
    out: scaled.storage,
    attrs: { n: summed.size, alpha, accumulate: false },
  });
  summed.dispose();
  return scaled;
}

/** a + b, broadcasting. */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = runBinary("add", "add", a, b);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  return record("add", out, [a, b], (dy) => [
    needA ? sumToShape(dy, a.shape) : null,
    needB ? sumToShape(dy, b.shape) : null,
  ]);
}

/** a - b, broadcasting. */
export function sub(a: Tensor, b: Tensor): Tensor {
  const out = runBinary("sub", "sub", a, b);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  return record("sub", out, [a, b], (dy) => [
    needA ? sumToShape(dy, a.shape) : null,
    needB ? sumToShape(dy, b.shape, -1) : null,
  ]);
}

/** a * b, broadcasting. d/da = dy*b is kept only if a needs a gradient, and likewise for b. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = runBinary("mul", "mul", a, b);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  const savedB = needA ? saveFloat(b, "mul", "other") : null;
  const savedA = needB ? saveFloat(a, "mul", "other") : null;
  const saved = [savedA, savedB].filter((s): s is SavedTensor => s !== null);
  return record("mul", out, [a, b], (dy) => [
    savedB ? productGrad(dy, savedB, a.shape) : null,
    savedA ? productGrad(dy, savedA, b.shape) : null,
  ], saved);
}

function productGrad(dy: Tensor, other: SavedTensor, shape: readonly number[]): Tensor {
  const o = other.get();
  const t = runBinary("mul", "mul", dy, o);
  o.dispose();
  const g = sumToShape(t, shape);
  t.dispose();
  return g;
}

/** a / b, broadcasting. da = dy/b; db = -dy*a/b^2. b is kept if either needs a gradient, a only for db. */
export function div(a: Tensor, b: Tensor): Tensor {
  const out = runBinary("div", "div", a, b);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  const savedB = saveFloat(b, "div", "other");
  const savedA = needB ? saveFloat(a, "div", "other") : null;
  return record("div", out, [a, b], (dy) => {
    const bt = savedB.get();
    const q = runBinary("div", "div", dy, bt);
    const da = needA ? sumToShape(q, a.shape) : null;
    let db: Tensor | null = null;
    if (savedA) {
      const at = savedA.get();
      const qa = runBinary("div", "mul", q, at);
      const qab = runBinary("div", "div", qa, bt);
      db = sumToShape(qab, b.shape, -1);
      for (const t of [at, qa, qab]) t.dispose();
    }
    q.dispose();
    bt.dispose();
    return [da, db];
  }, savedA ? [savedB, savedA] : [savedB]);
}

/** x * s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = Tensor.empty(x.backend, x.shape);
  x.backend.run("axpy", {
    x: x.storage,
    out: out.storage,
    attrs: { n: x.size, alpha: s, accumulate: false },
  });
  if (!needsGrad(x)) return out;
  return record("scale", out, [x], (dy) => {
    const dx = Tensor.empty(dy.backend, x.shape);
    dy.backend.run("axpy", {
      x: dy.storage,
      out: dx.storage,
      attrs: { n: dy.size, alpha: s, accumulate: false },
    });
    return [dx];
  });
}

/** x + s for a constant s. */
export function addScalar(x: Tensor, s: number): Tensor {
  const c = Tensor.full(x.backend, [], s); // rank 0, so the output keeps exactly x's shape
  const out = runBinary("addScalar", "add", x, c);
  c.dispose();
  if (!needsGrad(x)) return out;
  return record("addScalar", out, [x], (dy) => [dy.view(x.shape)]);
}

/**
 * a ** b, broadcasting (numpy's real power: kernels.ts BinaryOp pow). da = dy * b * a^(b-1);
 * db = dy * a^b * ln(a), defined for a > 0 (NaN elsewhere, as in PyTorch).
 */
export function pow(a: Tensor, b: Tensor): Tensor {
  const out = runBinary("pow", "pow", a, b);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  const savedA = saveFloat(a, "pow", "other");
  const savedB = saveFloat(b, "pow", "other");
  return record("pow", out, [a, b], (dy) => {
    const at = savedA.get(), bt = savedB.get();
    let da: Tensor | null = null, db: Tensor | null = null;
    if (needA) {
      const one = Tensor.full(at.backend, [], 1);
      const bm1 = runBinary("pow", "sub", bt, one);
      const p = runBinary("pow", "pow", at, bm1);
      const pb = runBinary("pow", "mul", p, bt);
      const g = runBinary("pow", "mul", dy, pb);
      da = sumToShape(g, a.shape);
      for (const t of [one, bm1, p, pb, g]) t.dispose();
    }
    if (needB) {
      const p = runBinary("pow", "pow", at, bt);
      const ln = Tensor.empty(at.backend, at.shape);
      at.backend.run("unary", { x: at.storage, out: ln.storage, attrs: { n: at.size, op: "log" } });
      const pl = runBinary("pow", "mul", p, ln);
      const g = runBinary("pow", "mul", dy, pl);
      db = sumToShape(g, b.shape);
      for (const t of [p, ln, pl, g]) t.dispose();
    }
    at.dispose();
    bt.dispose();
    return [da, db];
  }, [savedA, savedB]);
}

/** 1 where a == b, else 0, broadcasting (ONNX Equal; no gradient). */
export function equal(a: Tensor, b: Tensor): Tensor {
  return runBinary("equal", "eq", a, b);
}

export { compact as compactStrides, stridesFor };
