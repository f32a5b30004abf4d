/**
 * Graph rewrites at import, before any node is built: opset-13 exports spell LayerNorm as nine nodes
 * (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta). Fusing them into one
 * LayerNormalization node gives the model a LayerNorm layer whose affine parameters methods can find and
 * adapt, and runs one composed op instead of nine. A chain whose intermediates feed anything else is left
 * as it is (it still runs, node by node).
 */
import type { OnnxNode, OnnxTensor } from "./model.ts";

interface Graph {
  nodes: OnnxNode[];
  /** Constant value of a name (initializers and Constant outputs), or null. */
  constant(name: string): OnnxTensor | null;
  /** Names the graph returns: never fused away. */
  outputs: Set<string>;
}

function scalarOf(t: OnnxTensor | null): number | null {
  return t && t.data.length === 1 ? Number(t.data[0]) : null;
}

function axesOf(n: OnnxNode, g: Graph): number[] | null {
  if (n.attrs.axes !== undefined) return n.attrs.axes as number[];
  const t = n.inputs[1] ? g.constant(n.inputs[1]) : null;
  return t ? Array.from(t.data as ArrayLike<number | bigint>, Number) : null;
}

/** The node list with every opset-13 LayerNorm chain replaced by one LayerNormalization node. */
export function fuseLayerNorms(g: Graph): OnnxNode[] {
  const consumers = new Map<string, OnnxNode[]>();
  for (const n of g.nodes) {
    for (const i of n.inputs) if (i) consumers.set(i, [...consumers.get(i) ?? [], n]);
  }
  // The single consumer of `name` if it has exactly one and `name` is not a graph output.
  const only = (name: string, op: string): OnnxNode | null => {
    const c = consumers.get(name) ?? [];
    return c.length === 1 && c[0].opType === op && !g.outputs.has(name) ? c[0] : null;
  };
  const drop = new Set<OnnxNode>();
  const fused = new Map<OnnxNode, OnnxNode>();
  for (const mean1 of g.nodes) {
    if (mean1.opType !== "ReduceMean" || mean1.attrs.keepdims !== 1) continue;
    const x = mean1.inputs[0], axes = axesOf(mean1, g);
    if (!axes || axes.length !== 1 || axes[0] !== -1) continue;
    const sub = only(mean1.outputs[0], "Sub");
    if (!sub || sub.inputs[0] !== x || sub.inputs[1] !== mean1.outputs[0]) continue;
    const subUses = consumers.get(sub.outputs[0]) ?? [];
    const pow = subUses.find((n) => n.opType === "Pow");
    const div = subUses.find((n) => n.opType === "Div");
    if (subUses.length !== 2 || !pow || !div || scalarOf(g.constant(pow.inputs[1])) !== 2) continue;
    const mean2 = only(pow.outputs[0], "ReduceMean");
    const a2 = mean2 && axesOf(mean2, g);
    if (!mean2 || !a2 || a2.length !== 1 || a2[0] !== -1 || mean2.attrs.keepdims !== 1) continue;
    const add = only(mean2.outputs[0], "Add");
    const eps = add && scalarOf(g.constant(add.inputs[1]));
    if (!add || eps === null) continue;
    const sqrt = only(add.outputs[0], "Sqrt");
    if (!sqrt || div.inputs[0] !== sub.outputs[0] || div.inputs[1] !== sqrt.outputs[0]) continue;
    if (only(sqrt.outputs[0], "Div") !== div) continue;
    const chain = [mean1, sub, pow, mean2, add, sqrt, div];
    let last = div;
    const inputs = [x, "", ""];
    const mul = only(div.outputs[0], "Mul");
    if (mul && mul.inputs[0] === div.outputs[0] && g.constant(mul.inputs[1])) {
      inputs[1] = mul.inputs[1];
      chain.push(mul);
      last = mul;
      const bias = only(mul.outputs[0], "Add");
      if (bias && bias.inputs[0] === mul.outputs[0] && g.constant(bias.inputs[1])) {
        inputs[2] = bias.inputs[1];
        chain.push(bias);
        last = bias;
      }
    }
    for (const n of chain) drop.add(n);
    fused.set(last, {
      // The fused node keeps the name of the chain's last node: its scope names the module.
      name: last.name,
      opType: "LayerNormalization",
      domain: "",
      inputs: inputs[1] ? inputs.slice(0, inputs[2] ? 3 : 2) : [x],
      outputs: [last.outputs[0]],
      attrs: { axis: -1, epsilon: eps, stash_type: 1 },
    });
  }
  return g.nodes.flatMap((n) => fused.has(n) ? [fused.get(n)!] : drop.has(n) ? [] : [n]);
}

/**
 * Exports without constant folding (PRESERVE) write nn.Linear on N-D inputs as MatMul(x, Transpose(W)) then
 * Add(b); folded ones as MatMul(x, W^T as a constant) then Add(b). Fusing each into one FusedLinear node
 * (transB = 1: W is [out, in] as torch stores it; 0: [in, out]) makes W and b parameters of one layer that
 * trains, exports back to its initializers, and reads as a linear layer to the structure analysis.
 */
export function fuseLinears(g: Graph): OnnxNode[] {
  const consumers = new Map<string, OnnxNode[]>();
  const producer = new Map<string, OnnxNode>();
  for (const n of g.nodes) {
    for (const i of n.inputs) if (i) consumers.set(i, [...consumers.get(i) ?? [], n]);
    for (const o of n.outputs) producer.set(o, n);
  }
  const single = (name: string) => (consumers.get(name) ?? []).length === 1 && !g.outputs.has(name);
  const drop = new Set<OnnxNode>();
  const fused = new Map<OnnxNode, OnnxNode>();
  for (const m of g.nodes) {
    if (m.opType !== "MatMul" || m.inputs.length !== 2) continue;
    const [x, b] = m.inputs;
    let weight: string, transB: number;
    const t = producer.get(b);
    const direct = g.constant(b);
    if (direct && direct.dims.length === 2 && direct.dtype === "float32") {
      [weight, transB] = [b, 0];
    } else if (
      t?.opType === "Transpose" && single(b) && g.constant(t.inputs[0])?.dims.length === 2 &&
      (!t.attrs.perm || (t.attrs.perm as number[]).join() === "1,0")
    ) {
      [weight, transB] = [t.inputs[0], 1];
      drop.add(t);
    } else continue;
    const w = g.constant(weight)!;
    const out = transB ? w.dims[0] : w.dims[1];
    let last = m;
    const inputs = [x, weight];
    const add = single(m.outputs[0]) ? consumers.get(m.outputs[0])![0] : null;
    if (add?.opType === "Add") {
      const other = add.inputs[0] === m.outputs[0] ? add.inputs[1] : add.inputs[0];
      const bias = g.constant(other);
      if (bias && bias.data.length === out && bias.dims.length === 1) {
        inputs.push(other);
        drop.add(add);
        last = add;
      }
    }
    drop.add(m);
    fused.set(last, {
      name: last.name,
      opType: "FusedLinear",
      domain: "",
      inputs,
      outputs: [last.outputs[0]],
      attrs: { transB },
    });
  }
  return g.nodes.flatMap((n) => fused.has(n) ? [fused.get(n)!] : drop.has(n) ? [] : [n]);
}
