/**
 * The per-op rules of the batch analysis (batch.ts): each runtime node's output shapes at the exported
 * batch B0 and at B1, the checks that the batch axis is never mixed, and the candidate axes for constant
 * Reshape/Expand targets and batch-covering Slices. A rule throws Inconsistent when the graph cannot run
 * that way at B1.
 */
import type { OnnxNode, OnnxTensor } from "./model.ts";
import { evalHost, hostOf, type HostValue } from "./host_ops.ts";
import { pool2dAttrs } from "../ops/pool.ts";
import type { BatchGraph } from "./batch.ts";
import { expandChoices, reshapeChoices, sliceChoices } from "./batch_choices.ts";

/** Shapes at the two batches, or host values at the two batches. */
export interface Value {
  s0: number[];
  s1: number[];
  host?: [HostValue, HostValue];
}

export class Inconsistent extends Error {}

export const size = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

/** Axes whose size differs between the two batches: where the batch lives. */
export function batchAxes(v: Value): number[] {
  return v.s0.flatMap((d, i) => (d !== v.s1[i] ? [i] : []));
}

export function broadcast(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  return Array.from({ length: r }, (_, i) => {
    const x = a[a.length - r + i] ?? 1, y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Inconsistent(`shapes [${a}] and [${b}] do not broadcast`);
    return x === 1 ? y : x;
  });
}

export function norm(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

export function reshapeTo(input: number[], target: number[], allowZero: boolean): number[] {
  const out = target.map((d, i) => (d === 0 && !allowZero ? input[i] : d));
  const free = out.indexOf(-1);
  if (free >= 0) {
    const known = size(out.filter((_, i) => i !== free));
    if (known === 0 || size(input) % known !== 0) {
      throw new Inconsistent(`cannot reshape [${input}] to [${target}]`);
    }
    out[free] = size(input) / known;
  }
  if (size(out) !== size(input)) throw new Inconsistent(`cannot reshape [${input}] to [${target}]`);
  return out;
}

/** Forbid the batch on `axes` of v (a reduction, softmax, window or contraction over them). */
function noBatchOn(v: Value, axes: number[], what: string): void {
  const b = batchAxes(v);
  const bad = axes.map((a) => norm(a, v.s0.length)).filter((a) => b.includes(a));
  if (bad.length) throw new Inconsistent(`${what} would mix samples along axis ${bad[0]}`);
}

export function ints(t: OnnxTensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

export interface Choice {
  apply(): Value[];
  template?: { key: string; fn: (batch: number) => number[] };
}

/**
 * The ways node `index` may run at batch B1: one for most ops, several for a constant target that could
 * carry the batch on different axes.
 */
export function choicesFor(
  g: BatchGraph,
  node: OnnxNode,
  index: number,
  kind: "host" | "tensor",
  values: Map<string, Value>,
  b0: number,
  b1: number,
): Choice[] {
  const a = node.attrs;
  const consts = node.inputs.map((n) => (n ? g.constant(n) : null));
  const inputs = node.inputs.map((n, i) => (n && !consts[i] ? values.get(g.canonical(n)) ?? null : null));
  // A constant operand is the same at both batches.
  const val = (i: number): Value => {
    const v = inputs[i];
    if (v) return v;
    const c = consts[i];
    if (!c) throw new Inconsistent(`input ${i} is unknown`);
    return { s0: c.dims, s1: c.dims };
  };
  const one = (f: () => Value | Value[]): Choice[] => [{ apply: () => [f()].flat() }];
  const same = (v: Value): Value => ({ s0: [...v.s0], s1: [...v.s1] });
  const map = (f: (s: number[], batch: number) => number[]) =>
    one(() => ({ s0: f(val(0).s0, b0), s1: f(val(0).s1, b1) }));
  const hostOrConst = (i: number): [number[], number[]] | null => {
    const v = inputs[i];
    if (v?.host) return [v.host[0].data, v.host[1].data];
    const c = consts[i];
    return c ? [ints(c), ints(c)] : null;
  };

  // Shape arithmetic on the host: evaluate at both batches.
  if (kind === "host") {
    return one(() => {
      const hv = (batch: 0 | 1) =>
        evalHost(
          node,
          node.inputs.map((n, i) => {
            if (!n) return null;
            const v = inputs[i];
            if (v?.host) return v.host[batch];
            if (v) return { dims: batch ? v.s1 : v.s0, data: [], int: false };
            return hostOf(consts[i]!);
          }),
          g.opset,
        );
      const [h0, h1] = [hv(0), hv(1)];
      return { s0: h0.dims, s1: h1.dims, host: [h0, h1] };
    });
  }
  switch (node.opType) {
    case "Identity":
    case "Dropout":
    case "Cast":
    case "Relu":
    case "Sigmoid":
    case "HardSwish":
    case "HardSigmoid":
    case "Clip":
    case "Erf":
    case "Gelu":
    case "Sqrt":
    case "Exp":
    case "Log":
    case "Neg":
    case "Abs":
    case "Reciprocal":
      return one(() => same(val(0)));
    case "Add":
    case "Sub":
    case "Mul":
    case "Div":
    case "Pow":
    case "Equal":
    case "Where":
      return one(() => {
        const vs = node.inputs.map((_, i) => val(i));
        return { s0: vs.map((v) => v.s0).reduce(broadcast), s1: vs.map((v) => v.s1).reduce(broadcast) };
      });
    case "Conv": {
      const w = consts[1]!;
      return one(() => {
        const v = val(0);
        noBatchOn(v, [1, 2, 3], "a convolution");
        if (v.s1[1] !== w.dims[1] * (a.group as number)) {
          throw new Inconsistent(`channels ${v.s1[1]} vs weight [${w.dims}]`);
        }
        const o = convOut(node, v.s0, w.dims), o1 = convOut(node, v.s1, w.dims);
        return { s0: o, s1: o1 };
      });
    }
    case "MaxPool":
    case "AveragePool":
      return one(() => {
        const v = val(0);
        noBatchOn(v, [1, 2, 3], "pooling");
        const f = (s: number[]) => {
          const k = a.kernel_shape as number[], st = a.strides as number[], p = a.pads as number[];
          const at = pool2dAttrs("max", s, {
            kernel: [k[0], k[1]],
            stride: [st[0], st[1]],
            pads: [p[0], p[1], p[2], p[3]],
            dilation: (a.dilations as [number, number]) ?? [1, 1],
            ceilMode: a.ceil_mode === 1,
          });
          return [s[0], s[1], at.outH, at.outW];
        };
        return { s0: f(v.s0), s1: f(v.s1) };
      });
    case "BatchNormalization":
      return one(() => {
        noBatchOn(val(0), [1], "batch norm");
        return same(val(0));
      });
    case "GlobalAveragePool":
      return one(() => {
        noBatchOn(val(0), [1, 2, 3], "global pooling");
        return { s0: [...val(0).s0.slice(0, 2), 1, 1], s1: [...val(0).s1.slice(0, 2), 1, 1] };
      });
    case "LayerNormalization":
      return one(() => {
        const v = val(0), ax = norm((a.axis as number | undefined) ?? -1, v.s0.length);
        noBatchOn(v, v.s0.map((_, i) => i).filter((i) => i >= ax), "layer norm");
        return same(v);
      });
    case "Softmax":
    case "LogSoftmax":
      return one(() => {
        const v = val(0), ax = norm(a.axis as number, v.s0.length);
        noBatchOn(v, g.opset >= 13 ? [ax] : v.s0.map((_, i) => i).filter((i) => i >= ax), "softmax");
        return same(v);
      });
    case "ReduceMean":
    case "ReduceSum": {
      return one(() => {
        const v = val(0);
        const axes = (a.axes as number[] | undefined) ?? hostOrConst(1)?.[0] ?? v.s0.map((_, i) => i);
        const ax = axes.map((d) => norm(d, v.s0.length));
        noBatchOn(v, ax, node.opType);
        const f = (s: number[]) =>
          a.keepdims === 1 ? s.map((d, i) => (ax.includes(i) ? 1 : d)) : s.filter((_, i) => !ax.includes(i));
        return { s0: f(v.s0), s1: f(v.s1) };
      });
    }
    case "Flatten":
      return map((s) => {
        const ax = norm(a.axis as number, s.length);
        return [size(s.slice(0, ax)), size(s.slice(ax))];
      });
    case "Gemm":
      return one(() => {
        const v = val(0), w = val(1);
        const [ta, tb] = [a.transA === 1, a.transB === 1];
        noBatchOn(v, [ta ? 0 : 1], "Gemm");
        const f = (s: number[], ws: number[]) => {
          const [m, k] = ta ? [s[1], s[0]] : s;
          const [k2, n] = tb ? [ws[1], ws[0]] : ws;
          if (k !== k2) throw new Inconsistent(`Gemm inner dims ${k} and ${k2}`);
          return [m, n];
        };
        return { s0: f(v.s0, w.s0), s1: f(v.s1, w.s1) };
      });
    case "FusedLinear":
      return one(() => {
        const v = val(0), w = consts[1]!;
        noBatchOn(v, [v.s0.length - 1], "a linear layer");
        const [k, n] = a.transB === 1 ? [w.dims[1], w.dims[0]] : w.dims;
        const f = (s: number[]) => {
          if (s.at(-1) !== k) throw new Inconsistent(`linear input [${s}] for a weight of ${k} inputs`);
          return [...s.slice(0, -1), n];
        };
        return { s0: f(v.s0), s1: f(v.s1) };
      });
    case "MatMul":
      return one(() => {
        const p = val(0), q = val(1);
        const pr = p.s0.length, qr = q.s0.length;
        noBatchOn(p, [pr - 1], "a matrix product");
        noBatchOn(q, [qr - 2], "a matrix product");
        const pb = batchAxes(p), qb = batchAxes(q);
        if (pb.includes(pr - 2) && (qb.includes(qr - 1) || qb.length)) {
          throw new Inconsistent("a matrix product would pair rows and columns of different samples");
        }
        if (qb.includes(qr - 1) && pb.length) {
          throw new Inconsistent("a matrix product would pair rows and columns of different samples");
        }
        const f = (s: number[], t: number[]) => {
          if (s[s.length - 1] !== t[t.length - 2]) {
            throw new Inconsistent(`inner dims ${s.at(-1)} and ${t.at(-2)}`);
          }
          const lead = broadcast(s.slice(0, -2), t.slice(0, -2));
          return [...lead, s[s.length - 2], t[t.length - 1]];
        };
        return { s0: f(p.s0, q.s0), s1: f(p.s1, q.s1) };
      });
    case "Transpose": {
      return map((s) => {
        const perm = (a.perm as number[] | undefined) ?? s.map((_, i) => s.length - 1 - i);
        return perm.map((p) => s[p]);
      });
    }
    case "Squeeze":
    case "Unsqueeze":
      return one(() => {
        const v = val(0);
        const axes = (a.axes as number[] | undefined) ?? hostOrConst(1)?.[0];
        const f = (s: number[], _batch: 0 | 1) => {
          const h: HostValue = { dims: s, data: [], int: false };
          const ax: HostValue | null = axes ? { dims: [axes.length], data: axes, int: true } : null;
          return evalHost(node, [h, ax], g.opset).dims;
        };
        const o = { s0: f(v.s0, 0), s1: f(v.s1, 1) };
        // Squeezing the (exported size-1) batch axis away loses it: the two batches disagree in rank or size.
        if (o.s0.length !== o.s1.length || size(o.s1) !== size(v.s1)) {
          throw new Inconsistent("a squeeze of the batch axis");
        }
        return o;
      });
    case "Concat":
      return one(() => {
        const vs = node.inputs.map((_, i) => val(i));
        const ax = norm(a.axis as number, vs[0].s0.length);
        const f = (ss: number[][]) => {
          const out = [...ss[0]];
          for (const s of ss.slice(1)) {
            if (s.length !== out.length || s.some((d, i) => i !== ax && d !== out[i])) {
              throw new Inconsistent(`concat of [${ss[0]}] and [${s}] along axis ${ax}`);
            }
            out[ax] += s[ax];
          }
          return out;
        };
        for (const v of vs) noBatchOn(v, [ax], "a concat");
        return { s0: f(vs.map((v) => v.s0)), s1: f(vs.map((v) => v.s1)) };
      });
    case "Split":
      return one(() => {
        const v = val(0), ax = norm((a.axis as number | undefined) ?? 0, v.s0.length);
        noBatchOn(v, [ax], "a split");
        const sizes = (a.split as number[] | undefined) ?? hostOrConst(1)?.[0] ??
          Array.from({ length: node.outputs.length }, () => Math.ceil(v.s0[ax] / node.outputs.length));
        return sizes.map((n) => {
          const part = (s: number[]) => s.map((d, i) => (i === ax ? Math.min(n, d) : d));
          return { s0: part(v.s0), s1: part(v.s1) };
        });
      });
    case "Gather":
      return one(() => {
        const v = val(0), ax = norm((a.axis as number | undefined) ?? 0, v.s0.length);
        noBatchOn(v, [ax], "a gather");
        const idx = consts[1]?.dims ?? inputs[1]?.s0 ?? [];
        const f = (s: number[]) => [...s.slice(0, ax), ...idx, ...s.slice(ax + 1)];
        return { s0: f(v.s0), s1: f(v.s1) };
      });
    case "Pad":
      return one(() => {
        const v = val(0), r = v.s0.length;
        const p = (a.pads as number[] | undefined) ?? hostOrConst(1)?.[0];
        if (!p) throw new Inconsistent("pads unknown");
        if (p.length === 2 * r) {
          for (const b of batchAxes(v)) {
            if (p[b] !== 0 || p[r + b] !== 0) throw new Inconsistent("padding the batch axis");
          }
        }
        const f = (s: number[]) => s.map((d, i) => d + (p.length === 2 * r ? p[i] + p[r + i] : 0));
        return { s0: f(v.s0), s1: f(v.s1) };
      });
    case "Slice":
      return sliceChoices(g, node, index, inputs, consts, hostOrConst);
    case "Reshape":
      return reshapeChoices(node, index, val(0), inputs[1], consts[1], b0, b1);
    case "Expand":
      return expandChoices(index, val(0), inputs[1], consts[1], b0, b1);
  }
  throw new Error(`no batch rule for ${node.opType} node "${node.name}"`);
}

function convOut(node: OnnxNode, s: number[], w: number[]): number[] {
  const a = node.attrs;
  const st = a.strides as number[], d = a.dilations as number[], p = a.pads as number[];
  const out = [0, 1].map((i) =>
    Math.floor((s[2 + i] + p[i] + p[2 + i] - d[i] * (w[2 + i] - 1) - 1) / st[i]) + 1
  );
  if (a.auto_pad === "SAME_UPPER" || a.auto_pad === "SAME_LOWER") return [s[0], w[0], s[2], s[3]];
  return [s[0], w[0], ...out];
}
