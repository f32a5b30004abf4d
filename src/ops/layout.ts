/**
 * Data movement: transpose, slice, pad, expand, concat, split, gather (constant indices), squeeze and
 * unsqueeze. Every op is one or more `strided_copy` kernels (one kernel serves them all, STYLE rule 1);
 * squeeze/unsqueeze are views. Backward moves dy the opposite way (a slice's gradient is a zero tensor with dy
 * copied into the sliced region, an expand's is a sum over the broadcast dims), and needs only shapes:
 * nothing is saved.
 */
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, sizeOf, Tensor } from "../tensor.ts";
import type { StridedView } from "../backend/kernels.ts";
import { broadcastShapes, sumToShape } from "./elementwise.ts";
import { reshape } from "./shape.ts";

/** Row-major element strides of a dense shape. */
export function denseStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

function axisOf(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    throw new Error(`${op}(): axis ${axis} is out of range for rank ${rank}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/** Copy the `shape`-indexed view of src into the view of dst (no autograd). */
function copyInto(
  src: Tensor,
  dst: Tensor,
  shape: readonly number[],
  x: StridedView,
  out: StridedView,
): void {
  if (sizeOf(shape) === 0) return;
  src.backend.run("strided_copy", {
    x: src.storage,
    out: dst.storage,
    attrs: { shape: [...shape], x, out },
  });
}

/** A new dense tensor of `shape` read from x through a view (no autograd). */
function gatherView(x: Tensor, shape: readonly number[], view: StridedView): Tensor {
  const out = Tensor.empty(x.backend, shape);
  copyInto(x, out, shape, view, { offset: 0, strides: denseStrides(shape) });
  return out;
}

/** Zeros of `shape` with src (dense over `region`) copied into the view `at` (no autograd). */
function scatterView(
  src: Tensor,
  shape: readonly number[],
  region: readonly number[],
  at: StridedView,
): Tensor {
  const out = Tensor.zeros(src.backend, shape);
  copyInto(src, out, region, { offset: 0, strides: denseStrides(region) }, at);
  return out;
}

/** x with its dims permuted: out.shape[i] = x.shape[perm[i]] (default: reversed, as ONNX Transpose). */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ? perm.map((a) => axisOf("transpose", a, x.rank)) : x.shape.map((_, i) => x.rank - 1 - i);
  if (p.length !== x.rank || new Set(p).size !== x.rank) {
    throw new Error(
      `transpose(): [${perm}] is not a permutation of the ${x.rank} dims of ${shapeString(x.shape)}`,
    );
  }
  const xs = denseStrides(x.shape);
  const shape = p.map((a) => x.shape[a]);
  const out = gatherView(x, shape, { offset: 0, strides: p.map((a) => xs[a]) });
  if (!needsGrad(x)) return out;
  const inverse = new Array<number>(p.length);
  p.forEach((a, i) => (inverse[a] = i));
  return record("transpose", out, [x], (dy) => [transpose(dy, inverse)]);
}

export interface SliceSpec {
  /** Per axis: first index, end (exclusive), step (negative walks backwards); ONNX Slice clamping applies. */
  starts: readonly number[];
  ends: readonly number[];
  axes?: readonly number[];
  steps?: readonly number[];
}

/** ONNX Slice's effective [start, count, step] per dim of `shape`. */
export function sliceRanges(shape: readonly number[], spec: SliceSpec): [number, number, number][] {
  const ranges: [number, number, number][] = shape.map((d) => [0, d, 1]);
  const axes = spec.axes ?? spec.starts.map((_, i) => i);
  axes.forEach((axis, i) => {
    const a = axisOf("slice", axis, shape.length);
    const d = shape[a], step = spec.steps?.[i] ?? 1;
    if (!Number.isInteger(step) || step === 0) throw new Error(`slice(): step ${step} on axis ${axis}`);
    const norm = (v: number) => (v < 0 ? v + d : v);
    let start = norm(spec.starts[i]), end = norm(spec.ends[i]);
    if (step > 0) {
      start = Math.min(Math.max(start, 0), d);
      end = Math.min(Math.max(end, 0), d);
    } else {
      start = Math.min(Math.max(start, 0), d - 1);
      end = Math.min(Math.max(end, -1), d - 1);
    }
    const count = Math.max(0, Math.ceil((end - start) / step));
    ranges[a] = [start, count, step];
  });
  return ranges;
}

/** The view of a sliced region inside a dense tensor of `shape`. */
function regionView(shape: readonly number[], ranges: readonly [number, number, number][]): StridedView {
  const s = denseStrides(shape);
  return {
    offset: ranges.reduce((o, [start], d) => o + start * s[d], 0),
    strides: ranges.map(([, , step], d) => step * s[d]),
  };
}

/** ONNX Slice. */
export function slice(x: Tensor, spec: SliceSpec): Tensor {
  const ranges = sliceRanges(x.shape, spec);
  const shape = ranges.map(([, count]) => count);
  const view = regionView(x.shape, ranges);
  const out = gatherView(x, shape, view);
  if (!needsGrad(x)) return out;
  const xShape = x.shape;
  return record("slice", out, [x], (dy) => [scatterView(dy, xShape, shape, view)]);
}

/**
 * ONNX Pad, constant mode: pads = [begin_0, ..., begin_r-1, end_0, ..., end_r-1]; negative pads crop.
 */
export function pad(x: Tensor, pads: readonly number[], value = 0): Tensor {
  const r = x.rank;
  if (pads.length !== 2 * r) {
    throw new Error(`pad(): ${pads.length} pads for input ${shapeString(x.shape)} (need ${2 * r})`);
  }
  if (pads.some((p) => p < 0)) {
    const cropped = slice(x, {
      starts: x.shape.map((_, d) => Math.max(0, -pads[d])),
      ends: x.shape.map((s, d) => s - Math.max(0, -pads[r + d])),
    });
    const out = pad(cropped, pads.map((p) => Math.max(p, 0)), value);
    cropped.dispose();
    return out;
  }
  const shape = x.shape.map((d, i) => d + pads[i] + pads[r + i]);
  const out = Tensor.full(x.backend, shape, value);
  const inner: [number, number, number][] = x.shape.map((d, i) => [pads[i], d, 1]);
  const at = regionView(shape, inner);
  copyInto(x, out, x.shape, { offset: 0, strides: denseStrides(x.shape) }, at);
  if (!needsGrad(x)) return out;
  const xShape = x.shape;
  return record("pad", out, [x], (dy) => [gatherView(dy, xShape, at)]);
}

/** ONNX Expand: x broadcast (numpy rules) with `shape`. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const target = broadcastShapes("expand", x.shape, shape);
  const lead = target.length - x.rank;
  const xs = denseStrides(x.shape);
  const strides = target.map((_, d) => (d < lead || x.shape[d - lead] === 1 ? 0 : xs[d - lead]));
  const out = gatherView(x, target, { offset: 0, strides });
  if (!needsGrad(x)) return out;
  const xShape = x.shape;
  return record("expand", out, [x], (dy) => [sumToShape(dy, xShape)]);
}

/** ONNX Concat of tensors equal except along `axis`. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error("concat(): no inputs");
  const a = axisOf("concat", axis, xs[0].rank);
  const first = xs[0].shape;
  for (const t of xs) {
    if (t.rank !== first.length || t.shape.some((d, i) => i !== a && d !== first[i])) {
      throw new Error(
        `concat(): ${shapeString(t.shape)} does not match ${shapeString(first)} outside axis ${axis}`,
      );
    }
  }
  const shape = [...first];
  shape[a] = xs.reduce((s, t) => s + t.shape[a], 0);
  const out = Tensor.empty(xs[0].backend, shape);
  const os = denseStrides(shape);
  const starts: number[] = [];
  let at = 0;
  for (const t of xs) {
    starts.push(at);
    copyInto(t, out, t.shape, { offset: 0, strides: denseStrides(t.shape) }, {
      offset: at * os[a],
      strides: os,
    });
    at += t.shape[a];
  }
  if (!needsGrad(...xs)) return out;
  const shapes = xs.map((t) => t.shape), need = xs.map((t) => needsGrad(t));
  return record(
    "concat",
    out,
    [...xs],
    (dy) =>
      shapes.map((s, i) => need[i] ? gatherView(dy, s, { offset: starts[i] * os[a], strides: os }) : null),
  );
}

/** ONNX Split: consecutive parts of `sizes` along `axis`, each a slice of x. */
export function split(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const a = axisOf("split", axis, x.rank);
  const total = sizes.reduce((s, v) => s + v, 0);
  if (total !== x.shape[a] || sizes.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new Error(`split(): sizes [${sizes}] do not add up to dim ${axis} of ${shapeString(x.shape)}`);
  }
  let at = 0;
  return sizes.map((s) => {
    const part = slice(x, { starts: [at], ends: [at + s], axes: [a] });
    at += s;
    return part;
  });
}

/**
 * ONNX Gather with constant indices along `axis`: out = x.shape[:axis] + indicesShape + x.shape[axis+1:].
 * Runs of indices in arithmetic progression are one copy each (a single index, a range, a reversed range).
 */
export function gather(
  x: Tensor,
  indices: readonly number[],
  indicesShape: readonly number[],
  axis: number,
): Tensor {
  const a = axisOf("gather", axis, x.rank);
  const d = x.shape[a];
  const idx = indices.map((i) => {
    if (!Number.isInteger(i) || i < -d || i >= d) {
      throw new Error(`gather(): index ${i} is out of range for dim ${axis} of size ${d}`);
    }
    return i < 0 ? i + d : i;
  });
  if (sizeOf(indicesShape) !== idx.length) {
    throw new Error(`gather(): ${idx.length} indices do not fill shape ${shapeString(indicesShape)}`);
  }
  const outer = x.shape.slice(0, a), inner = x.shape.slice(a + 1);
  const shape = [...outer, ...indicesShape, ...inner];
  const out = Tensor.empty(x.backend, shape);
  // Work on [outer, k, inner] views of x and out.
  const O = sizeOf(outer), I = sizeOf(inner), K = idx.length;
  const runs = progressions(idx);
  for (const r of runs) {
    copyInto(x, out, [O, r.count, I], { offset: r.first * I, strides: [d * I, r.step * I, 1] }, {
      offset: r.at * I,
      strides: [K * I, I, 1],
    });
  }
  if (!needsGrad(x)) return out;
  if (new Set(idx).size !== idx.length) {
    throw new Error("gather(): the gradient through repeated indices is not supported");
  }
  const xShape = x.shape;
  return record("gather", out, [x], (dy) => {
    const dx = Tensor.zeros(dy.backend, xShape);
    for (const r of runs) {
      copyInto(dy, dx, [O, r.count, I], { offset: r.at * I, strides: [K * I, I, 1] }, {
        offset: r.first * I,
        strides: [d * I, r.step * I, 1],
      });
    }
    return [dx];
  });
}

/** Maximal runs of equally spaced indices: idx[at + j] = first + j * step, j < count. */
function progressions(idx: readonly number[]): { at: number; first: number; step: number; count: number }[] {
  const runs = [];
  for (let at = 0; at < idx.length;) {
    const step = at + 1 < idx.length ? idx[at + 1] - idx[at] : 1;
    let count = 1;
    while (at + count < idx.length && idx[at + count] - idx[at + count - 1] === step) count++;
    runs.push({ at, first: idx[at], step: count > 1 ? step : 1, count });
    at += count;
  }
  return runs;
}

/** ONNX Unsqueeze: size-1 dims inserted at `axes` (of the output rank). A view. */
export function unsqueeze(x: Tensor, axes: readonly number[]): Tensor {
  const rank = x.rank + axes.length;
  const at = new Set(axes.map((a) => axisOf("unsqueeze", a, rank)));
  const shape: number[] = [];
  let k = 0;
  for (let d = 0; d < rank; d++) shape.push(at.has(d) ? 1 : x.shape[k++]);
  return reshape(x, shape);
}

/** ONNX Squeeze: the size-1 dims at `axes` (all of them when omitted) removed. A view. */
export function squeeze(x: Tensor, axes?: readonly number[]): Tensor {
  const drop = new Set(
    axes ? axes.map((a) => axisOf("squeeze", a, x.rank)) : x.shape.flatMap((d, i) => d === 1 ? [i] : []),
  );
  for (const a of drop) {
    if (x.shape[a] !== 1) throw new Error(`squeeze(): dim ${a} of ${shapeString(x.shape)} is not 1`);
  }
  return reshape(x, x.shape.filter((_, i) => !drop.has(i)));
}
