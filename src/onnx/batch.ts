/**
 * Fixed-batch exports. torch.onnx.export without dynamic_axes writes the example's batch (usually 1) into the
 * input shape, and with constant folding into every Reshape/Expand target computed from it
 * (ShuffleNet's channel shuffle: [1, 2, 24, 8, 8]; ViT's attention: [17, 2, 32], where 2 is batch x heads).
 *
 * planBatch infers every runtime value's shape at the exported batch B0 and at a second batch B1, and chooses
 * for each constant target the axis that carries the batch ("templates": the target as a function of the
 * runtime batch). A choice is kept only if the whole graph then stays consistent at B1 and never mixes
 * samples: no reduction, softmax, normalisation, contraction or convolution window across the batch axis,
 * no concat or gather along it. Choices are searched depth-first with backtracking; the first consistent
 * assignment wins. When none exists the model runs at its exported batch only, and `reason` says which node
 * bakes the batch in (the error then shows the dynamic_axes re-export).
 */
import type { Dim, OnnxNode, OnnxTensor, OnnxValueInfo } from "./model.ts";
import { choicesFor, Inconsistent, type Value } from "./batch_rules.ts";

export interface BatchPlan {
  /** The exported batch when the input's first dim is a number, else null (a dynamic batch axis). */
  fixed: number | null;
  /** True when any batch runs (a dynamic axis, or templates for every constant that bakes the batch). */
  rewritable: boolean;
  /** Why not, naming the node (empty when rewritable). */
  reason: string;
}

export interface BatchGraph {
  input: OnnxValueInfo;
  /** The runtime steps in order: shape arithmetic on the host, or device ops. */
  steps: { node: OnnxNode; index: number; kind: "host" | "tensor" }[];
  /** Constant value of a name at import (initializers, Constant nodes, folded shape arithmetic), or null. */
  constant(name: string): OnnxTensor | null;
  /** The runtime value a name stands for (through Identity/Dropout aliases). */
  canonical(name: string): string;
  opset: number;
  /** Filled with the chosen templates, by "nodeIndex:inputIndex". */
  templates: Map<string, (batch: number) => number[]>;
}

/**
 * The plan for a graph. Only graphs whose input shape is fully numeric are analysed (a fixed-batch export
 * has a static input); a dynamic batch axis needs no plan.
 */
export function planBatch(g: BatchGraph): BatchPlan {
  const dims = g.input.shape;
  const b0 = dims && typeof dims[0] === "number" ? dims[0] : null;
  if (b0 === null) return { fixed: null, rewritable: true, reason: "" };
  if (!dims!.every((d): d is number => typeof d === "number")) {
    return { fixed: b0, rewritable: false, reason: "its input shape is not fully static" };
  }
  const b1 = 2 * b0 + 1;
  const start = new Map<string, Value>([[g.input.name, {
    s0: dims as number[],
    s1: [b1, ...(dims as number[]).slice(1)],
  }]]);
  let budget = 20000;
  let deepest = { at: -1, why: "" };
  const chosen = new Map<string, (batch: number) => number[]>();
  const fail = (at: number, node: OnnxNode, e: unknown) => {
    if (!(e instanceof Inconsistent)) throw e;
    if (at > deepest.at) deepest = { at, why: `${node.opType} node "${node.name}": ${e.message}` };
  };
  const store = (values: Map<string, Value>, node: OnnxNode, outs: Value[]) => {
    node.outputs.forEach((o, i) => {
      if (o && outs[i]) values.set(o, outs[i]);
    });
  };
  // Depth-first over the choices; each branch owns its copy of the values.
  const run = (from: number, values: Map<string, Value>): boolean => {
    for (let k = from; k < g.steps.length; k++) {
      if (--budget < 0) return false;
      const { node, index, kind } = g.steps[k];
      const choices = choicesFor(g, node, index, kind, values, b0, b1);
      if (choices.length === 1 && !choices[0].template) {
        try {
          store(values, node, choices[0].apply());
        } catch (e) {
          fail(k, node, e);
          return false;
        }
        continue;
      }
      for (const choice of choices) {
        const next = new Map(values);
        try {
          store(next, node, choice.apply());
        } catch (e) {
          fail(k, node, e);
          continue;
        }
        if (choice.template) chosen.set(choice.template.key, choice.template.fn);
        if (run(k + 1, next)) return true;
        if (choice.template) chosen.delete(choice.template.key);
      }
      return false;
    }
    return true;
  };
  let ok: boolean;
  try {
    ok = run(0, start);
  } catch (e) {
    return {
      fixed: b0,
      rewritable: false,
      reason: `edgetrain cannot follow the batch through it (${(e as Error).message})`,
    };
  }
  if (!ok) {
    return {
      fixed: b0,
      rewritable: false,
      reason: budget < 0
        ? "its batch-dependent constants are too many to place"
        : `the graph bakes it in (${deepest.why})`,
    };
  }
  for (const [k, f] of chosen) g.templates.set(k, f);
  return { fixed: b0, rewritable: true, reason: "" };
}

/** The largest batch an imported graph runs (Infinity: any). */
export function maxBatchOf(plan: BatchPlan): number {
  return plan.fixed !== null && !plan.rewritable ? plan.fixed : Infinity;
}

export type { Dim };
