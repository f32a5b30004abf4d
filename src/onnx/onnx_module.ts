/**
 * The module an ONNX import builds (import.ts): the compiled graph's steps run in order over an
 * environment of device tensors and host values; its layers (Conv2d, BatchNorm2d, LayerNorm, Linear, ...)
 * sit in a module tree named after the torch module paths, so parameter names match torch's state_dict.
 */
import { shapeString, Tensor } from "../tensor.ts";
import { Module } from "../nn/module.ts";
import type { Env } from "./import_ops.ts";
import type { Dim, OnnxNode } from "./model.ts";
import type { HostValue } from "./host_ops.ts";
import type { BatchPlan } from "./batch.ts";
import type { HasOpGraph, OpGraph } from "../nn/structure.ts";

/** A namespace node of the module tree ("features", "features.0"): holds layers, never runs. */
export class Container extends Module {
  readonly #kids = new Map<string, Module>();

  attach(name: string, m: Module): void {
    this.addChild(name, m);
    this.#kids.set(name, m);
  }

  has(name: string): Module | undefined {
    return this.#kids.get(name);
  }

  forward(_x: Tensor): Tensor {
    throw new Error("A module namespace of an imported ONNX graph does not run on its own");
  }
}

/**
 * One runtime node of the graph as the structure analysis sees it (src/onnx/structure.ts): its op, the
 * runtime tensors it reads and writes (canonical names; constants and shape arithmetic left out), and the
 * nn layer that holds its parameters, if any.
 */
export interface GraphNode {
  op: string;
  name: string;
  inputs: string[];
  outputs: string[];
  layer: Module | null;
  /** The ONNX node it was built from (attributes, constant inputs). */
  node: OnnxNode;
}

export interface CompiledStep {
  node: OnnxNode;
  /** "host": shape arithmetic on the host; "tensor": device ops. */
  kind: "host" | "tensor";
  run: (env: Env) => Tensor | Tensor[] | HostValue;
  /** Runtime inputs (canonical names of tensors and host values). */
  inputs: string[];
  outputs: string[];
  /** The layer holding the node's parameters, if any. */
  layer: Module | null;
  /** Runtime values whose last use is this step: disposed after it. */
  dies: string[];
}

export class OnnxModule extends Container implements HasOpGraph {
  readonly inputName: string;
  readonly inputShape: Dim[] | null;
  /** The graph output forward() returns (canonical name, after Identity/Dropout aliases). */
  outputName = "";
  /** Runtime nodes in order, with their layers (the structure analysis reads this). */
  readonly graph: GraphNode[] = [];
  /**
   * How the batch dimension can change: `null` batch means any batch runs as exported (a dynamic batch
   * axis, or a fixed one the graph does not bake in); see batch.ts.
   */
  batchPlan: BatchPlan = { fixed: null, rewritable: true, reason: "" };
  readonly #steps: CompiledStep[] = [];
  /** Parameters and buffers loaded from initializers, with the initializer (or alias) name they came from. */
  readonly #sources = new Map<Tensor, string>();
  readonly #materialize: Set<string>;

  constructor(input: { name: string; shape: Dim[] | null }, materialize: Set<string>) {
    super();
    this.inputName = input.name;
    this.inputShape = input.shape;
    this.#materialize = materialize;
  }

  /** @internal Used by importOnnx once every node is built. */
  _setup(output: string, steps: CompiledStep[], sources: Map<Tensor, string>, owned: Tensor[]): void {
    this.outputName = output;
    this.#steps.push(...steps);
    for (const [t, n] of sources) this.#sources.set(t, n);
    for (const t of owned) this.addOwned(t);
  }

  /** The largest batch the model takes (Infinity unless a fixed-batch export bakes its batch in). */
  get maxBatch(): number {
    return this.batchPlan.fixed !== null && !this.batchPlan.rewritable ? this.batchPlan.fixed : Infinity;
  }

  override forward(x: Tensor): Tensor {
    const want = this.inputShape;
    const plan = this.batchPlan;
    const fits = want && x.rank === want.length &&
      want.every((d, i) => typeof d !== "number" || d === x.shape[i] || (i === 0 && plan.rewritable));
    if (want && !fits) {
      if (plan.fixed !== null && !plan.rewritable && x.rank === want.length) {
        throw new Error(
          `ONNX model input ${shapeString(x.shape)} does not fit "${this.inputName}" [${
            want.map((d) => d ?? "?").join(", ")
          }]: the model was exported with a fixed batch of ${plan.fixed} and ${plan.reason}; run batches of ` +
            `${plan.fixed} (--batch ${plan.fixed}) or re-export with torch.onnx.export(..., input_names=["${this.inputName}"], ` +
            `dynamic_axes={"${this.inputName}": {0: "batch"}, "${this.outputName}": {0: "batch"}})`,
        );
      }
      throw new Error(
        `ONNX model input ${shapeString(x.shape)} does not fit "${this.inputName}" [${
          want.map((d) => d ?? "?").join(", ")
        }]`,
      );
    }
    return this.#run(x, this.inputName, 0, this.#steps.length - 1, this.outputName);
  }

  /**
   * Run steps [from, to] (op graph indices, OpGraph from opGraph()) on x, which stands for the value that
   * step `from` reads from before the range; returns the output of step `to`. For ranges between cut points
   * (src/nn/structure.ts), where that one tensor is all that crosses: EcoTTA runs a model block by block.
   */
  runRange(x: Tensor, from: number, to: number): Tensor {
    const steps = this.#steps;
    if (!(from >= 0 && to < steps.length && from <= to)) {
      throw new Error(`runRange(): [${from}, ${to}] is not a range of the ${steps.length} steps`);
    }
    const seed = from === 0 ? this.inputName : steps[from - 1].outputs.find(Boolean)!;
    return this.#run(x, seed, from, to, steps[to].outputs.find(Boolean)!);
  }

  /** The runtime graph: one node per step (host shape arithmetic and device ops), for structure.ts. */
  opGraph(): OpGraph {
    const producer = new Map<string, number>([[this.inputName, -1]]);
    const nodes = this.#steps.map((s, i) => {
      for (const o of s.outputs) if (o) producer.set(o, i);
      return {
        op: s.node.opType,
        inputs: [
          ...new Set(s.inputs.map((n) => producer.get(n)).filter((j): j is number => j !== undefined)),
        ],
        layer: s.layer,
        shape: s.kind === "host",
      };
    });
    return { nodes, output: producer.get(this.outputName) ?? nodes.length - 1 };
  }

  #run(x: Tensor, seed: string, from: number, to: number, result: string): Tensor {
    const env: Env = { tensors: new Map([[seed, x]]), host: new Map(), batch: x.shape[0] ?? 1 };
    try {
      for (let k = from; k <= to; k++) {
        const step = this.#steps[k];
        let out: Tensor | Tensor[] | HostValue;
        try {
          out = step.run(env);
        } catch (e) {
          throw new Error(`${step.node.opType} node "${step.node.name}": ${(e as Error).message}`);
        }
        if (step.kind === "host") {
          const v = out as HostValue;
          env.host.set(step.outputs[0], v);
          if (this.#materialize.has(step.outputs[0])) {
            env.tensors.set(step.outputs[0], Tensor.from(x.backend, v.data, v.dims));
          }
        } else {
          const outs = Array.isArray(out) ? out : [out as Tensor];
          step.outputs.forEach((name, i) => {
            if (name) env.tensors.set(name, outs[i]);
            else outs[i]?.dispose(); // an output the graph never reads
          });
          // Outputs the step made but the graph does not name (an unused Split part) go right away.
          for (let i = step.outputs.length; i < outs.length; i++) outs[i].dispose();
        }
        for (const name of step.dies) {
          if (name === seed || name === result) continue; // the caller's input; the range's result
          env.tensors.get(name)?.dispose();
          env.tensors.delete(name);
        }
      }
    } catch (e) {
      for (const [name, t] of env.tensors) if (name !== seed) t.dispose();
      throw e;
    }
    const y = env.tensors.get(result);
    for (const [name, t] of env.tensors) if (name !== seed && name !== result) t.dispose();
    if (!y) throw new Error(`ONNX graph value "${result}" was not computed`);
    return y;
  }

  /** Current values of every loaded parameter/buffer, by the ONNX initializer name it came from. */
  async initializerValues(): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    const from: Record<string, Tensor> = {};
    for (const [t, name] of this.#sources) {
      const d = await t.data();
      const v = d instanceof Float32Array ? d : Float32Array.from(d);
      const prev = out[name];
      if (prev && prev.some((p, i) => p !== v[i])) {
        throw new Error(
          `Cannot export: initializer "${name}" is shared by ${
            from[name].name
          } and ${t.name}, which now differ`,
        );
      }
      out[name] = v;
      from[name] = t;
    }
    return out;
  }

  /** Dims of every loaded parameter/buffer by initializer name (a new classifier changes some). */
  initializerDims(): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [t, name] of this.#sources) out[name] = [...t.shape];
    return out;
  }

  /** @internal Point a new parameter at the initializer an old one came from (export writes it there). */
  _replaceSource(old: Tensor, replacement: Tensor): void {
    const name = this.#sources.get(old);
    if (name === undefined) return;
    this.#sources.delete(old);
    this.#sources.set(replacement, name);
  }
}

/**
 * The largest batch `model` takes: Infinity, except for an ONNX export with a fixed batch that its graph
 * bakes in (batch.ts), which runs only at its exported batch. The governor caps its plans with this, so
 * `plan` never recommends a batch the model cannot take.
 */
export function maxBatch(model: Module): number {
  return model instanceof OnnxModule ? model.maxBatch : Infinity;
}
