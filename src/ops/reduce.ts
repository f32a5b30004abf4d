/**
 * Reductions: sum and mean over any set of axes, and globalAvgPool.
 *
 * Forward collapses the shape into alternating runs of kept and reduced dims and runs one `reduce` kernel
 * per reduced run (largest first, so later passes read little). A mean of means over those passes is the
 * mean over all reduced elements. Backward needs only shapes, so nothing is saved: dy is broadcast back
 * with one `binary` kernel (stride 0 along reduced runs) times 1 for sum or 1/count for mean.
 */
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, sizeOf, Tensor } from "../tensor.ts";

const MAX_RANK = 6; // the binary kernel's limit (kernels.ts)

/** Sorted, de-duplicated, non-negative axes; negative axes count from the end. */
export function normalizeAxes(
  shape: readonly number[],
  axes: readonly number[],
  options: { op?: string } = {},
): number[] {
  const op = options.op ?? "normalizeAxes";
  const out = new Set<number>();
  for (const a of axes) {
    if (!Number.isInteger(a) || a < -shape.length || a >= shape.length) {
      throw new Error(`${op}(): axis ${a} is out of range for input ${shapeString(shape)}`);
    }
    const n = a < 0 ? a + shape.length : a;
    if (out.has(n)) throw new Error(`${op}(): axis ${a} is repeated in [${axes.join(", ")}]`);
    out.add(n);
  }
  return [...out].sort((p, q) => p - q);
}

export interface Run {
  size: number;
  reduced: boolean;
}

/** Adjacent dims merged into runs that are all kept or all reduced; size-1 dims are dropped. */
export function runsOf(shape: readonly number[], axes: readonly number[]): Run[] {
  const runs: Run[] = [];
  shape.forEach((d, i) => {
    if (d === 1) return;
    const reduced = axes.includes(i);
    const last = runs.at(-1);
    if (last && last.reduced === reduced) last.size *= d;
    else runs.push({ size: d, reduced });
  });
  return runs;
}

/**
 * x reduced over `axes` (normalized) with the `reduce` kernel, no autograd: a new dense tensor holding the
 * kept dims in order, with shape `options.shape` (default: the kept dims). For gradients of broadcasts and
 * biases (conv2d's db sums dy over N, H, W).
 */
export function reduceAxes(
  x: Tensor,
  axes: readonly number[],
  options: { op?: "sum" | "mean"; shape?: readonly number[] } = {},
): Tensor {
  const b = x.backend;
  const op = options.op ?? "sum";
  const shape = options.shape ?? x.shape.filter((_, i) => !axes.includes(i));
  const kept = x.shape.reduce((p, d, i) => (axes.includes(i) ? p : p * d), 1);
  if (sizeOf(shape) !== kept) {
    throw new Error(
      `${op}(): ${shapeString(x.shape)} over [${axes}] leaves ${kept} values, not ${shapeString(shape)}`,
    );
  }
  const runs = runsOf(x.shape, axes);
  if (x.size === 0) return Tensor.full(b, shape, op === "mean" ? NaN : 0);
  if (!runs.some((r) => r.reduced)) {
    const out = Tensor.empty(b, shape);
    b.run("copy", { x: x.storage, out: out.storage, attrs: { n: x.size, srcOffset: 0, dstOffset: 0 } });
    return out;
  }
  let cur = x;
  while (runs.some((r) => r.reduced)) {
    let j = -1;
    runs.forEach((r, i) => {
      if (r.reduced && (j < 0 || r.size > runs[j].size)) j = i;
    });
    const outer = runs.slice(0, j).reduce((p, r) => p * r.size, 1);
    const inner = runs.slice(j + 1).reduce((p, r) => p * r.size, 1);
    const last = !runs.some((r, i) => r.reduced && i !== j);
    const next = Tensor.empty(b, last ? shape : [outer * inner]);
    b.run("reduce", { x: cur.storage, out: next.storage, attrs: { op, outer, size: runs[j].size, inner } });
    if (cur !== x) cur.dispose();
    cur = next;
    runs.splice(j, 1);
    // The kept runs on either side of the removed one are now adjacent.
    if (j > 0 && j < runs.length) {
      runs.splice(j - 1, 2, { size: runs[j - 1].size * runs[j].size, reduced: false });
    }
  }
  return cur;
}

/**
 * dy (dense over the kept dims of xShape) broadcast back to xShape, times `scale`: the gradient of a sum
 * (scale 1) or a mean (1/count). No autograd.
 */
export function broadcastBack(
  dy: Tensor,
  xShape: readonly number[],
  options: { axes: readonly number[]; scale?: number },
): Tensor {
  const { axes, scale = 1 } = options;
  const b = dy.backend;
  const runs = runsOf(xShape, axes);
  if (runs.length > MAX_RANK) {
    throw new Error(
      `broadcastBack(): input ${shapeString(xShape)} reduced over [${axes}] needs rank ${runs.length}`,
    );
  }
  const aStrides = new Array<number>(runs.length).fill(0);
  for (let i = runs.length - 1, s = 1; i >= 0; i--) {
    if (runs[i].reduced) continue;
    aStrides[i] = s;
    s *= runs[i].size;
  }
  const out = Tensor.empty(b, xShape);
  if (out.size === 0) return out;
  const k = Tensor.from(b, [scale], [1]);
  const empty = runs.length === 0;
  b.run("binary", {
    a: dy.storage,
    b: k.storage,
    out: out.storage,
    attrs: {
      op: "mul",
      shape: empty ? [1] : runs.map((r) => r.size),
      aStrides: empty ? [0] : aStrides,
      bStrides: empty ? [0] : aStrides.map(() => 0),
    },
  });
  k.dispose();
  return out;
}

function reduceOp(
  name: string,
  op: "sum" | "mean",
  x: Tensor,
  axes: readonly number[],
  keepDims: boolean,
): Tensor {
  const ax = normalizeAxes(x.shape, axes, { op: name });
  const shape = keepDims
    ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d))
    : x.shape.filter((_, i) => !ax.includes(i));
  const out = reduceAxes(x, ax, { op, shape });
  if (!needsGrad(x)) return out;
  const count = ax.reduce((p, a) => p * x.shape[a], 1);
  const xShape = x.shape;
  return record(
    name,
    out,
    [x],
    (dy) => [broadcastBack(dy, xShape, { axes: ax, scale: op === "mean" ? 1 / count : 1 })],
  );
}

/** Sum over `axes` (negative allowed). Without keepDims the reduced dims are dropped; no axes is a copy. */
export function sum(x: Tensor, axes: readonly number[], keepDims = false): Tensor {
  return reduceOp("sum", "sum", x, axes, keepDims);
}

/** Mean over `axes` (negative allowed). Without keepDims the reduced dims are dropped; no axes is a copy. */
export function mean(x: Tensor, axes: readonly number[], keepDims = false): Tensor {
  return reduceOp("mean", "mean", x, axes, keepDims);
}

/** Mean over H and W: [N, C, H, W] -> [N, C, 1, 1] (ONNX GlobalAveragePool). */
export function globalAvgPool(x: Tensor): Tensor {
  if (x.rank !== 4) {
    throw new Error(`globalAvgPool(): input ${shapeString(x.shape)} must be 4-D [N, C, H, W]`);
  }
  return reduceOp("globalAvgPool", "mean", x, [2, 3], true);
}
