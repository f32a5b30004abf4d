/**
 * Shape arithmetic on the host. Exporters compute reshape targets, slice bounds and scales from `Shape` of
 * runtime tensors through small integer subgraphs (Shape -> Gather -> Unsqueeze -> Concat -> Reshape). Those
 * values are tiny, so edgetrain evaluates them here, in plain numbers: once at import when every input is a
 * constant (folding), else at each forward from the runtime shapes (a batch-size-dependent shape stays
 * correct at any batch). Nothing here touches a device.
 */
import type { AttrValue, OnnxNode, OnnxTensor } from "./model.ts";

/** A small host tensor: row-major numbers, and whether its ONNX type is integral (or bool). */
export interface HostValue {
  dims: number[];
  data: number[];
  int: boolean;
}

const FLOAT_TYPES = new Set(["float32", "float64", "float16"]);
/** ONNX TensorProto.DataType codes of the float types (Cast's `to`). */
const FLOAT_CODES = new Set([1, 10, 11, 16]);

export function hostOf(t: OnnxTensor): HostValue {
  return {
    dims: [...t.dims],
    data: Array.from(t.data as ArrayLike<number | bigint>, Number),
    int: !FLOAT_TYPES.has(t.dtype),
  };
}

export function hostToTensor(v: HostValue, name: string): OnnxTensor {
  return v.int
    ? { name, dtype: "int64", dims: v.dims, data: BigInt64Array.from(v.data, (x) => BigInt(Math.trunc(x))) }
    : { name, dtype: "float32", dims: v.dims, data: Float32Array.from(v.data) };
}

const size = (dims: readonly number[]) => dims.reduce((p, d) => p * d, 1);

function strides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let d = dims.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= dims[d];
  }
  return s;
}

function broadcastDims(a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  return Array.from({ length: r }, (_, i) => {
    const x = a[a.length - r + i] ?? 1, y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a}] and [${b}] do not broadcast`);
    return x === 1 ? y : x;
  });
}

/** Element of v at the (broadcast) output index `idx` of `dims`. */
function at(v: HostValue, dims: readonly number[], idx: readonly number[]): number {
  const lead = dims.length - v.dims.length;
  let o = 0;
  const s = strides(v.dims);
  for (let d = 0; d < v.dims.length; d++) o += (v.dims[d] === 1 ? 0 : idx[lead + d]) * s[d];
  return v.data[o];
}

function indices(dims: readonly number[]): number[][] {
  const out: number[][] = [];
  const n = size(dims), s = strides(dims);
  for (let i = 0; i < n; i++) out.push(dims.map((_, d) => Math.floor(i / s[d]) % dims[d]));
  return out;
}

function elementwise(vs: HostValue[], int: boolean, f: (...xs: number[]) => number): HostValue {
  const dims = vs.map((v) => v.dims).reduce(broadcastDims);
  return { dims, int, data: indices(dims).map((idx) => f(...vs.map((v) => at(v, dims, idx)))) };
}

function axisOf(a: number, rank: number): number {
  if (a < -rank || a >= rank) throw new Error(`axis ${a} is out of range for rank ${rank}`);
  return a < 0 ? a + rank : a;
}

function gather(x: HostValue, idx: HostValue, axis: number): HostValue {
  const a = axisOf(axis, x.dims.length);
  const outer = size(x.dims.slice(0, a)), inner = size(x.dims.slice(a + 1)), d = x.dims[a];
  const data: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const raw of idx.data) {
      const i = raw < 0 ? raw + d : raw;
      if (i < 0 || i >= d) throw new Error(`index ${raw} is out of range for a dim of ${d}`);
      for (let k = 0; k < inner; k++) data.push(x.data[(o * d + i) * inner + k]);
    }
  }
  return { dims: [...x.dims.slice(0, a), ...idx.dims, ...x.dims.slice(a + 1)], data, int: x.int };
}

function slice(x: HostValue, starts: number[], ends: number[], axes: number[], steps: number[]): HostValue {
  const ranges = x.dims.map((d) => ({ start: 0, count: d, step: 1 }));
  axes.forEach((axis, i) => {
    const a = axisOf(axis, x.dims.length), d = x.dims[a], step = steps[i] ?? 1;
    const norm = (v: number) => (v < 0 ? v + d : v);
    let s = norm(starts[i]), e = norm(ends[i]);
    if (step > 0) [s, e] = [Math.min(Math.max(s, 0), d), Math.min(Math.max(e, 0), d)];
    else [s, e] = [Math.min(Math.max(s, 0), d - 1), Math.min(Math.max(e, -1), d - 1)];
    ranges[a] = { start: s, count: Math.max(0, Math.ceil((e - s) / step)), step };
  });
  const dims = ranges.map((r) => r.count), s = strides(x.dims);
  const data = indices(dims).map((idx) =>
    x.data[idx.reduce((o, i, d) => o + (ranges[d].start + i * ranges[d].step) * s[d], 0)]
  );
  return { dims, data, int: x.int };
}

function reshapeDims(x: HostValue, shape: number[], allowZero: boolean): number[] {
  const out = shape.map((d, i) => (d === 0 && !allowZero ? x.dims[i] : d));
  const free = out.indexOf(-1);
  if (free >= 0) out[free] = size(x.dims) / size(out.filter((_, i) => i !== free));
  if (size(out) !== size(x.dims)) throw new Error(`cannot reshape [${x.dims}] to [${shape}]`);
  return out;
}

const ints = (v: AttrValue | undefined) => (v === undefined ? undefined : (v as number[]));

/** The ops this evaluator runs (the shape-arithmetic subset of ONNX). */
export const HOST_OPS = new Set([
  "Shape",
  "Size",
  "Gather",
  "Unsqueeze",
  "Squeeze",
  "Concat",
  "Slice",
  "Cast",
  "ConstantOfShape",
  "Equal",
  "Less",
  "Greater",
  "Not",
  "Where",
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Pow",
  "Max",
  "Min",
  "Sqrt",
  "Neg",
  "Abs",
  "Floor",
  "Ceil",
  "Reciprocal",
  "Reshape",
  "Expand",
  "Identity",
  "Range",
]);

/**
 * Evaluate `node` on host inputs (null for an omitted optional input). `shapeOf(i)` gives the runtime
 * shape of input i for Shape/Size, whose input is a device tensor.
 */
export function evalHost(node: OnnxNode, inputs: (HostValue | null)[], opset: number): HostValue {
  const a = node.attrs;
  const x = inputs[0]!;
  const need = (i: number) => {
    const v = inputs[i];
    if (!v) throw new Error(`input ${i} is missing`);
    return v;
  };
  switch (node.opType) {
    case "Shape": {
      const dims = x.dims, r = dims.length;
      const s = a.start === undefined ? 0 : axisClamp(a.start as number, r);
      const e = a.end === undefined ? r : axisClamp(a.end as number, r);
      return { dims: [Math.max(0, e - s)], data: dims.slice(s, e), int: true };
    }
    case "Size":
      return { dims: [], data: [size(x.dims)], int: true };
    case "Gather":
      return gather(x, need(1), (a.axis as number | undefined) ?? 0);
    case "Unsqueeze": {
      const axes = opset >= 13 ? need(1).data : ints(a.axes)!;
      const rank = x.dims.length + axes.length;
      const set = new Set(axes.map((v) => axisOf(v, rank)));
      const dims: number[] = [];
      let k = 0;
      for (let d = 0; d < rank; d++) dims.push(set.has(d) ? 1 : x.dims[k++]);
      return { ...x, dims };
    }
    case "Squeeze": {
      const axes = opset >= 13 ? inputs[1]?.data : ints(a.axes);
      const drop = new Set(
        axes ? axes.map((v) => axisOf(v, x.dims.length)) : x.dims.flatMap((d, i) => d === 1 ? [i] : []),
      );
      return { ...x, dims: x.dims.filter((_, i) => !drop.has(i)) };
    }
    case "Concat": {
      const parts = inputs.filter((v): v is HostValue => v !== null);
      const axis = axisOf(a.axis as number, parts[0].dims.length);
      const outer = size(parts[0].dims.slice(0, axis));
      const data: number[] = [];
      for (let o = 0; o < outer; o++) {
        for (const p of parts) {
          const chunk = size(p.dims.slice(axis));
          data.push(...p.data.slice(o * chunk, (o + 1) * chunk));
        }
      }
      const dims = [...parts[0].dims];
      dims[axis] = parts.reduce((s, p) => s + p.dims[axis], 0);
      return { dims, data, int: parts.every((p) => p.int) };
    }
    case "Slice": {
      const [starts, ends, axes, steps] = opset >= 10
        ? [need(1).data, need(2).data, inputs[3]?.data, inputs[4]?.data]
        : [ints(a.starts)!, ints(a.ends)!, ints(a.axes), undefined];
      return slice(x, starts, ends, axes ?? starts.map((_, i) => i), steps ?? starts.map(() => 1));
    }
    case "Cast": {
      const toFloat = FLOAT_CODES.has(a.to as number), toBool = a.to === 9;
      return {
        dims: x.dims,
        int: !toFloat,
        data: x.data.map((v) => (toBool ? (v !== 0 ? 1 : 0) : toFloat ? Math.fround(v) : Math.trunc(v))),
      };
    }
    case "ConstantOfShape": {
      const value = a.value ? hostOf(a.value as OnnxTensor) : { dims: [1], data: [0], int: false };
      const dims = x.data.slice();
      return { dims, data: new Array(size(dims)).fill(value.data[0]), int: value.int };
    }
    case "Equal":
      return elementwise([x, need(1)], true, (p, q) => (p === q ? 1 : 0));
    case "Less":
      return elementwise([x, need(1)], true, (p, q) => (p < q ? 1 : 0));
    case "Greater":
      return elementwise([x, need(1)], true, (p, q) => (p > q ? 1 : 0));
    case "Not":
      return elementwise([x], true, (p) => (p ? 0 : 1));
    case "Where":
      return elementwise([x, need(1), need(2)], need(1).int && need(2).int, (c, p, q) => (c ? p : q));
    case "Add":
    case "Sub":
    case "Mul":
    case "Div":
    case "Pow":
    case "Max":
    case "Min": {
      const int = x.int && need(1).int;
      const f = {
        Add: (p: number, q: number) => p + q,
        Sub: (p: number, q: number) => p - q,
        Mul: (p: number, q: number) => p * q,
        // ONNX integer division truncates (as onnxruntime's C++ does).
        Div: (p: number, q: number) => (int ? Math.trunc(p / q) : p / q),
        Pow: (p: number, q: number) => p ** q,
        Max: Math.max,
        Min: Math.min,
      }[node.opType]!;
      return elementwise([x, need(1)], int, f);
    }
    case "Sqrt":
      return elementwise([x], x.int, Math.sqrt);
    case "Neg":
      return elementwise([x], x.int, (p) => -p);
    case "Abs":
      return elementwise([x], x.int, Math.abs);
    case "Floor":
      return elementwise([x], x.int, Math.floor);
    case "Ceil":
      return elementwise([x], x.int, Math.ceil);
    case "Reciprocal":
      return elementwise([x], false, (p) => 1 / p);
    case "Reshape":
      return { ...x, dims: reshapeDims(x, need(1).data, a.allowzero === 1) };
    case "Expand": {
      const dims = broadcastDims(x.dims, need(1).data);
      return { dims, int: x.int, data: indices(dims).map((idx) => at(x, dims, idx)) };
    }
    case "Identity":
      return x;
    case "Range": {
      const [start, limit, delta] = [x.data[0], need(1).data[0], need(2).data[0]];
      const n = Math.max(Math.ceil((limit - start) / delta), 0);
      return { dims: [n], data: Array.from({ length: n }, (_, i) => start + i * delta), int: x.int };
    }
  }
  throw new Error(`no host evaluation for ${node.opType}`);
}

function axisClamp(v: number, r: number): number {
  return Math.min(Math.max(v < 0 ? v + r : v, 0), r);
}
