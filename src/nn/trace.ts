/**
 * The op graph of any Module, traced through the tape: a probe input that requires a gradient makes every
 * op on its path record a node (parameters stay frozen), and the forward hooks say which layer made which
 * node. Ops inside a layer (LayerNorm's mean and subtraction) collapse into that layer's node, so the graph
 * reads like an ONNX export of the same model. src/nn/structure.ts analyses it; ONNX imports provide their
 * graph directly (OnnxModule.opGraph).
 */
import { type GradNode, releaseGraph, topoOrder } from "../autograd/tape.ts";
import { Tensor } from "../tensor.ts";
import { BatchNorm2d, Conv2d, LayerNorm, Linear } from "./layers.ts";
import { type Module, onForward } from "./module.ts";
import {
  analyzeStructure,
  type HasOpGraph,
  nameBlocks,
  type OpGraph,
  type OpNode,
  type Structure,
} from "./structure.ts";

/** Tape op names in the ONNX vocabulary the analysis reads. */
const TAPE_OPS: Record<string, string> = {
  add: "Add",
  addScalar: "Add",
  sub: "Sub",
  mul: "Mul",
  div: "Div",
  scale: "Mul",
  concat: "Concat",
  matmul: "MatMul",
  gemm: "Gemm",
  linear: "Gemm",
  conv2d: "Conv",
  batchNorm2d: "BatchNormalization",
  softmax: "Softmax",
  logSoftmax: "LogSoftmax",
  transpose: "Transpose",
  reshape: "Reshape",
  flatten: "Flatten",
  relu: "Relu",
  relu6: "Clip",
  clip: "Clip",
  hardswish: "HardSwish",
  hardsigmoid: "HardSigmoid",
  sigmoid: "Sigmoid",
  erf: "Erf",
  maxPool2d: "MaxPool",
  avgPool2d: "AveragePool",
  mean: "ReduceMean",
  sum: "ReduceSum",
};

function layerOp(m: Module): string | null {
  if (m instanceof Conv2d) return "Conv";
  if (m instanceof BatchNorm2d) return "BatchNormalization";
  if (m instanceof LayerNorm) return "LayerNormalization";
  if (m instanceof Linear) return "Gemm";
  const kind = (m as { kind?: string }).kind;
  const byKind: Record<string, string> = {
    ReLU: "Relu",
    ReLU6: "Clip",
    Hardswish: "HardSwish",
    Hardsigmoid: "HardSigmoid",
    Sigmoid: "Sigmoid",
    GlobalAvgPool: "GlobalAveragePool",
    Flatten: "Flatten",
  };
  return kind ? byKind[kind] ?? kind : null;
}

/** Trace `model` on `input` (eval mode for the trace; modes are restored). */
export function traceGraph(model: Module, input: Tensor): OpGraph {
  const modes = model.namedModules().map(([, m]) => [m, m.training] as const);
  model.eval();
  input.backend.retain(input.storage);
  const probe = new Tensor(input.backend, input.storage, input.shape, { requiresGrad: true });
  const owners = new Map<GradNode, { module: Module; from: GradNode | null }>();
  const stop = onForward((m, out, x) => {
    if (out.node && m.children().length === 0 && !owners.has(out.node)) {
      owners.set(out.node, { module: m, from: x.node });
    }
  });
  let out: Tensor;
  try {
    out = model.call(probe);
  } finally {
    stop();
    for (const [m, t] of modes) m.training = t;
  }
  try {
    if (!out.node) throw new Error("traceGraph(): the model's output does not depend on its input");
    const order = topoOrder(out.node);
    // Ops inside a layer belong to it: everything between the layer's input node and its output node.
    const owner = new Map<GradNode, GradNode>();
    for (const [node, { from }] of owners) {
      const stack = node.inputs.map((i) => i?.node ?? null).filter((n): n is GradNode => n !== null);
      while (stack.length) {
        const n = stack.pop()!;
        if (n === from || owner.has(n) || owners.has(n)) continue;
        owner.set(n, node);
        for (const i of n.inputs) if (i?.node) stack.push(i.node);
      }
    }
    const index = new Map<GradNode, number>();
    const nodes: OpNode[] = [];
    for (const n of order) {
      if (owner.has(n)) continue;
      const o = owners.get(n);
      const op = (o && layerOp(o.module)) ?? TAPE_OPS[n.op] ?? n.op;
      // A layer's node reads what its input node read; an inner op's inputs resolve to their layer.
      const sources = new Set<number>();
      const visit = (g: GradNode | null) => {
        sources.add(g ? index.get(owner.get(g) ?? g) ?? -1 : -1);
      };
      if (o) visit(o.from);
      else for (const i of n.inputs) if (i) visit(i.node);
      index.set(n, nodes.length);
      nodes.push({ op, inputs: [...sources], layer: o?.module ?? null });
    }
    return { nodes, output: index.get(out.node)! };
  } finally {
    releaseGraph(out);
    out.dispose();
    probe.dispose();
  }
}

const cache = new WeakMap<Module, Structure>();

/**
 * The structure of `model` (structure.ts): from its own op graph when it has one (ONNX imports), else
 * traced on a probe input of `inputShape` (default: one image of the first layer's channels at 32x32, which
 * any conv net with global pooling takes). Cached per model; block names are module paths.
 */
export function structureOf(model: Module, inputShape?: readonly number[]): Structure {
  let s = cache.get(model);
  if (s) return s;
  let graph: OpGraph;
  if ("opGraph" in model && typeof (model as unknown as HasOpGraph).opGraph === "function") {
    graph = (model as unknown as HasOpGraph).opGraph();
  } else {
    const first = model.namedModules().map(([, m]) => m).find((m) =>
      m instanceof Conv2d || m instanceof Linear
    );
    if (!first) throw new Error("structureOf(): the model has no Conv2d or Linear layer to trace from");
    const shape = inputShape ??
      (first instanceof Conv2d
        ? [1, first.weight.shape[1] * first.groups, 32, 32]
        : [1, first.weight.shape[1]]);
    const b = first.weight.backend;
    const x = Tensor.zeros(b, shape);
    try {
      graph = traceGraph(model, x);
    } finally {
      x.dispose();
    }
  }
  s = analyzeStructure(graph);
  nameBlocks(model, s.blocks);
  cache.set(model, s);
  return s;
}
