/**
 * ONNX graph -> trainable edgetrain Module. Every node becomes a step over src/ops/* (see import_ops.ts);
 * constants (initializers, Constant nodes, Identity/Dropout of either) are folded at import, so an op that
 * needs a constant (Conv weight, Clip bounds, Reshape shape) finds it there or the import fails naming the
 * node. Unsupported ops fail at import, never at the first forward.
 *
 * Torch's exporter dedupes equal initializers behind Identity nodes; each consuming layer gets its own copy
 * here (untied), since the original model had separate parameters that adaptation may move apart. The
 * imported model starts in eval mode with every parameter frozen; methods choose what trains (setTrainable).
 */
import type { Backend } from "../backend/backend.ts";
import { shapeString, Tensor } from "../tensor.ts";
import { Module } from "../nn/module.ts";
import { BUILDERS, floats } from "./import_ops.ts";
import type { BuildContext, Env, Getter, Step } from "./import_ops.ts";
import type { Dim, OnnxModel, OnnxNode, OnnxTensor } from "./model.ts";

/** A namespace node of the module tree ("features", "features.0"): holds layers, never runs. */
class Container extends Module {
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

interface Constant {
  tensor: OnnxTensor;
  /** The initializer name an export writes this value back to, or null for Constant-node values. */
  initializer: string | null;
}

interface CompiledStep {
  node: OnnxNode;
  run: Step;
  output: string;
  /** Runtime values whose last use is this step: disposed after it. */
  dies: string[];
}

export class OnnxModule extends Container {
  readonly inputName: string;
  readonly inputShape: Dim[] | null;
  /** The graph output forward() returns (canonical name, after Identity/Dropout aliases). */
  outputName = "";
  readonly #steps: CompiledStep[] = [];
  /** Parameters and buffers loaded from initializers, with the initializer (or alias) name they came from. */
  readonly #sources = new Map<Tensor, string>();

  constructor(input: { name: string; shape: Dim[] | null }) {
    super();
    this.inputName = input.name;
    this.inputShape = input.shape;
  }

  /** @internal Used by importOnnx once every node is built. */
  _setup(output: string, steps: CompiledStep[], sources: Map<Tensor, string>, owned: Tensor[]): void {
    this.outputName = output;
    this.#steps.push(...steps);
    for (const [t, n] of sources) this.#sources.set(t, n);
    for (const t of owned) this.addOwned(t);
  }

  override forward(x: Tensor): Tensor {
    const want = this.inputShape;
    if (want && (x.rank !== want.length || want.some((d, i) => typeof d === "number" && d !== x.shape[i]))) {
      throw new Error(
        `ONNX model input ${shapeString(x.shape)} does not fit "${this.inputName}" [${
          want.map((d) => d ?? "?").join(", ")
        }]`,
      );
    }
    const env: Env = new Map([[this.inputName, x]]);
    try {
      for (const step of this.#steps) {
        let out: Tensor;
        try {
          out = step.run(env);
        } catch (e) {
          throw new Error(`${step.node.opType} node "${step.node.name}": ${(e as Error).message}`);
        }
        env.set(step.output, out);
        for (const name of step.dies) {
          env.get(name)!.dispose();
          env.delete(name);
        }
      }
    } catch (e) {
      for (const [name, t] of env) if (name !== this.inputName) t.dispose();
      throw e;
    }
    return env.get(this.outputName)!;
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
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_]/g, "_").replace(/^_+/, "") || "node";
}

/**
 * The module path in a torch node name. Each scope segment either extends the previous one
 * ("features" -> "features.0") or starts a path relative to it ("features.1" -> "conv" -> "conv.0"):
 * "/features/features.1/conv/conv.0/Conv" -> "features.1.conv.0".
 */
function scopePath(nodeName: string): string {
  const segs = nodeName.split("/").slice(1, -1);
  let path = "", prev = "";
  for (const seg of segs) {
    path = prev && seg.startsWith(prev + ".") ? path + seg.slice(prev.length) : path ? `${path}.${seg}` : seg;
    prev = seg;
  }
  return path;
}

function constantValue(node: OnnxNode, fail: (why: string) => Error): OnnxTensor {
  const a = node.attrs;
  const name = node.outputs[0];
  if (a.value !== undefined) return { ...(a.value as OnnxTensor), name };
  if (a.value_float !== undefined) {
    return { name, dtype: "float32", dims: [], data: Float32Array.of(a.value_float as number) };
  }
  if (a.value_floats !== undefined) {
    const v = a.value_floats as number[];
    return { name, dtype: "float32", dims: [v.length], data: Float32Array.from(v) };
  }
  if (a.value_int !== undefined) {
    return { name, dtype: "int64", dims: [], data: BigInt64Array.of(BigInt(a.value_int as number)) };
  }
  if (a.value_ints !== undefined) {
    const v = a.value_ints as number[];
    return { name, dtype: "int64", dims: [v.length], data: BigInt64Array.from(v, BigInt) };
  }
  throw fail(`has no value attribute edgetrain reads (${Object.keys(a).join(", ") || "none"})`);
}

/**
 * Build an OnnxModule on `backend` from a decoded model. Throws one line naming the op and node for
 * anything it cannot run exactly.
 */
export function importOnnx(backend: Backend, model: OnnxModel): OnnxModule {
  const g = model.graph;
  if (g.inputs.length !== 1) {
    throw new Error(
      `importOnnx(): the graph has ${g.inputs.length} runtime inputs; edgetrain runs models with one`,
    );
  }
  if (g.outputs.length < 1) throw new Error("importOnnx(): the graph has no outputs");
  const consts = new Map<string, Constant>();
  for (const [name, t] of g.initializers) consts.set(name, { tensor: t, initializer: name });
  const canonical = new Map<string, string>([[g.inputs[0].name, g.inputs[0].name]]);
  const consumed = new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);

  const root = new OnnxModule(g.inputs[0]);
  const sources = new Map<Tensor, string>();
  const owned = new Map<string, Tensor>();
  const steps: CompiledStep[] = [];
  const lastUse = new Map<string, number>();
  const usedPaths = new Set<string>();

  /** Attach `layer` at a dotted path ("features.0.1") if every namespace on the way is free or a Container. */
  const tryPath = (layer: Module, path: string): boolean => {
    const segs = path.split(".");
    if (!path || usedPaths.has(path) || !segs.every((s) => /^[A-Za-z0-9_]+$/.test(s))) return false;
    let parent: Container = root;
    for (const s of segs.slice(0, -1)) {
      const child = parent.has(s);
      if (child === undefined) {
        const c = new Container();
        parent.attach(s, c);
        parent = c;
      } else if (child instanceof Container) parent = child;
      else return false;
    }
    if (parent.has(segs.at(-1)!) !== undefined) return false;
    parent.attach(segs.at(-1)!, layer);
    usedPaths.add(path);
    return true;
  };
  const place = (layer: Module, weightName: string, node: OnnxNode) => {
    // PyTorch names give the layer its torch path, so state keys equal torch's state_dict keys: from the
    // weight ("features.0.1.weight" -> "features.0.1"), else from the node's scope, which torch's exporter
    // writes as "/features/features.0/features.0.0/Conv" (folded eval exports name weights "onnx::Conv_123").
    if (tryPath(layer, weightName.split(".").slice(0, -1).join("."))) return;
    if (tryPath(layer, scopePath(node.name))) return;
    let name = safeName(node.name);
    for (let k = 1; root.has(name) !== undefined; k++) name = `${safeName(node.name)}_${k}`;
    root.attach(name, layer);
  };

  try {
    compile();
  } catch (e) {
    // Layers built before the failing node hold backend memory: give it back.
    root.dispose();
    for (const t of owned.values()) t.dispose();
    throw e;
  }
  return root;

  function compile(): void {
    for (const [index, node] of g.nodes.entries()) {
      const what = `${node.opType} node "${node.name}"`;
      const fail = (why: string) => new Error(`importOnnx(): ${what}: ${why}`);
      if (node.domain !== "") {
        throw new Error(
          `importOnnx(): unsupported ONNX op "${node.domain}.${node.opType}" in node "${node.name}"`,
        );
      }
      const src = node.inputs[0];
      if (node.opType === "Constant") {
        consts.set(node.outputs[0], { tensor: constantValue(node, fail), initializer: null });
        continue;
      }
      if (node.opType === "Identity" || node.opType === "Dropout") {
        // Dropout runs as inference (identity); its optional mask output is not produced.
        if (node.outputs.slice(1).some((o) => o && consumed.has(o))) {
          throw fail("the mask output is not supported");
        }
        const c = consts.get(src);
        if (c) {
          consts.set(node.outputs[0], { tensor: c.tensor, initializer: c.initializer && node.outputs[0] });
        } else if (canonical.has(src)) canonical.set(node.outputs[0], canonical.get(src)!);
        else throw fail(`input "${src}" is not produced by any earlier node`);
        continue;
      }
      const build = BUILDERS[node.opType];
      if (!build) {
        throw new Error(`importOnnx(): unsupported ONNX op "${node.opType}" in node "${node.name}"`);
      }
      if (node.outputs.slice(1).some((o) => o && consumed.has(o))) {
        throw fail(`only the first output is supported, but "${node.outputs.slice(1).join('", "')}" is used`);
      }
      const ctx: BuildContext = {
        backend,
        node,
        opset: model.opset,
        constant: (i) => (node.inputs[i] ? consts.get(node.inputs[i])?.tensor ?? null : null),
        operand: (i): Getter => {
          const name = node.inputs[i];
          const c = name ? consts.get(name) : undefined;
          if (c) {
            let t = owned.get(name);
            if (!t) {
              t = Tensor.from(backend, floats(c.tensor), c.tensor.dims, { category: "weights", name });
              owned.set(name, t);
            }
            const fixed = t;
            return () => fixed;
          }
          const canon = name ? canonical.get(name) : undefined;
          if (canon === undefined) throw fail(`input ${i} "${name}" is not produced by any earlier node`);
          lastUse.set(canon, index);
          return (env) => env.get(canon)!;
        },
        attach: (layer, weightName) => place(layer, weightName, node),
        load: (t, i) => {
          const c = consts.get(node.inputs[i])!;
          const data = floats(c.tensor);
          if (data.length !== t.size) {
            throw fail(
              `input "${node.inputs[i]}" has ${data.length} values, expected ${shapeString(t.shape)}`,
            );
          }
          backend.write(t.storage, data);
          t.name = node.inputs[i];
          if (c.initializer) sources.set(t, c.initializer);
        },
        fail,
      };
      steps.push({ node, run: build(ctx), output: node.outputs[0], dies: [] });
      canonical.set(node.outputs[0], node.outputs[0]);
    }

    const output = g.outputs[0].name;
    const outCanon = canonical.get(output);
    if (outCanon === undefined) {
      throw new Error(`importOnnx(): graph output "${output}" is not computed from the input`);
    }
    const byStep = new Map<number, string[]>();
    for (const [name, i] of lastUse) {
      if (name === outCanon || name === g.inputs[0].name) continue;
      byStep.set(i, [...byStep.get(i) ?? [], name]);
    }
    const stepIndex = new Map(g.nodes.map((n, i) => [n, i]));
    for (const s of steps) {
      s.dies = byStep.get(stepIndex.get(s.node)!) ?? [];
      // A value nothing reads (a dead branch) is freed as soon as it is made.
      if (!lastUse.has(s.output) && s.output !== outCanon) s.dies.push(s.output);
    }
    root._setup(outCanon, steps, sources, [...owned.values()]);
    root.setTrainable(() => false);
    root.eval();
  }
}
