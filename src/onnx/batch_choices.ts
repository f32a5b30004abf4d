/**
 * The batch analysis's choice points (batch.ts): a constant Reshape or Expand target may carry the batch on
 * different axes, and a Slice may cover a whole batch axis. Each candidate comes with the template that
 * rewrites the constant for the runtime batch.
 */
import type { OnnxNode, OnnxTensor } from "./model.ts";
import { evalHost, type HostValue } from "./host_ops.ts";
import {
  batchAxes,
  broadcast,
  type Choice,
  Inconsistent,
  ints,
  norm,
  reshapeTo,
  size,
  type Value,
} from "./batch_rules.ts";
import type { BatchGraph } from "./batch.ts";

const INT_MAX = 2 ** 62;

export function reshapeChoices(
  node: OnnxNode,
  index: number,
  x: Value,
  hostShape: Value | null,
  constShape: OnnxTensor | null,
  b0: number,
  b1: number,
): Choice[] {
  const allowZero = node.attrs.allowzero === 1;
  if (hostShape?.host) {
    const [h0, h1] = hostShape.host;
    return [{
      apply: () => [{ s0: reshapeTo(x.s0, h0.data, allowZero), s1: reshapeTo(x.s1, h1.data, allowZero) }],
    }];
  }
  const t = ints(constShape!);
  const s0 = reshapeTo(x.s0, t, allowZero);
  const key = `${index}:1`;
  const choices: Choice[] = [];
  // The target unchanged: its -1 or 0 may absorb the batch by itself.
  choices.push({ apply: () => [{ s0, s1: reshapeTo(x.s1, t, allowZero) }] });
  if (size(x.s0) === size(x.s1)) return choices;
  // Else one axis carries it: pure-batch axes (the exported batch's value) first, then the others in order.
  const axes = t.map((_, j) => j).filter((j) => t[j] > 0 && t[j] % b0 === 0);
  axes.sort((p, q) => Number(t[q] === b0) - Number(t[p] === b0) || p - q);
  for (const j of axes) {
    const fn = (batch: number) => t.map((d, i) => (i === j ? (d / b0) * batch : d));
    choices.push({
      apply: () => [{ s0, s1: reshapeTo(x.s1, fn(b1), allowZero) }],
      template: { key, fn },
    });
  }
  return choices;
}

export function expandChoices(
  index: number,
  x: Value,
  hostShape: Value | null,
  constShape: OnnxTensor | null,
  b0: number,
  b1: number,
): Choice[] {
  if (hostShape?.host) {
    const [h0, h1] = hostShape.host;
    return [{ apply: () => [{ s0: broadcast(x.s0, h0.data), s1: broadcast(x.s1, h1.data) }] }];
  }
  const t = ints(constShape!);
  const s0 = broadcast(x.s0, t);
  const key = `${index}:1`;
  // Unchanged first; then a size-b0 target axis (over a size-1 input axis) as the batch axis: a class
  // token expanded to the exported batch.
  const choices: Choice[] = [{ apply: () => [{ s0, s1: broadcast(x.s1, t) }] }];
  const lead = t.length - x.s0.length;
  t.forEach((d, j) => {
    if (d !== b0 || (j >= lead && x.s0[j - lead] !== 1)) return;
    const fn = (batch: number) => t.map((v, i) => (i === j ? batch : v));
    choices.push({ apply: () => [{ s0, s1: broadcast(x.s1, fn(b1)) }], template: { key, fn } });
  });
  return choices;
}

export function sliceChoices(
  g: BatchGraph,
  node: OnnxNode,
  index: number,
  inputs: (Value | null)[],
  consts: (OnnxTensor | null)[],
  hostOrConst: (i: number) => [number[], number[]] | null,
): Choice[] {
  const x = inputs[0]!;
  const a = node.attrs;
  const attrs = g.opset < 10;
  const get = (i: number, attr: string): [number[], number[]] | null => {
    if (attrs) return a[attr] ? [a[attr] as number[], a[attr] as number[]] : null;
    return hostOrConst(i);
  };
  const starts = get(1, "starts")!, ends = get(2, "ends")!;
  const axes = get(3, "axes")?.[0] ?? starts[0].map((_, i) => i);
  const steps = attrs ? null : hostOrConst(4)?.[0];
  const f = (s: number[], st: number[], en: number[]) => {
    const h = evalHost(
      { ...node, opType: "Slice", attrs: {} },
      [
        { dims: s, data: new Array(size(s)).fill(0), int: false },
        hv(st),
        hv(en),
        hv(axes),
        steps ? hv(steps) : null,
      ],
      13,
    );
    return h.dims;
  };
  const batch = batchAxes(x);
  const onBatch = axes.map((ax, i) => [norm(ax, x.s0.length), i]).filter(([ax]) => batch.includes(ax));
  if (!onBatch.length) {
    return [{ apply: () => [{ s0: f(x.s0, starts[0], ends[0]), s1: f(x.s1, starts[1], ends[1]) }] }];
  }
  // Slicing the batch axis is fine only when it keeps the whole axis: then its end must follow the batch.
  for (const [ax, i] of onBatch) {
    const whole = starts[0][i] === 0 && ends[0][i] >= x.s0[ax] && (steps?.[i] ?? 1) === 1;
    if (!whole) {
      return [{
        apply: () => {
          throw new Inconsistent(`a slice of the batch axis ${ax}`);
        },
      }];
    }
  }
  const fixedEnds = ends[0].map((e, i) => (onBatch.some(([, k]) => k === i) ? INT_MAX : e));
  const template = consts[2] || attrs ? { key: `${index}:2`, fn: () => fixedEnds } : undefined;
  return [{
    apply: () => [{ s0: f(x.s0, starts[0], fixedEnds), s1: f(x.s1, starts[1], fixedEnds) }],
    template,
  }];
}

function hv(data: number[]): HostValue {
  return { dims: [data.length], data, int: true };
}
