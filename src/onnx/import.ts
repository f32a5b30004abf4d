/**
 * ONNX graph -> trainable edgetrain Module. Every node becomes a step over src/ops/* (see import_ops*.ts).
 *
 * Graph values are of three kinds. Constants (initializers, Constant nodes, Identity/Dropout of either, and
 * shape arithmetic over them) are folded at import. Host values are the shape arithmetic that depends on a
 * runtime tensor's shape (Shape -> Gather -> Unsqueeze -> Concat -> Reshape): small integer tensors
 * computed on the host at each forward (host_ops.ts), so a batch-dependent reshape stays right at any batch.
 * Tensors are everything else, on the device. An op that needs a constant (Conv weight, Clip bounds) finds
 * it at import or the import fails naming the node; every op the importer cannot run is listed in one error.
 *
 * Torch's exporter dedupes equal initializers behind Identity nodes; each consuming layer gets its own copy
 * here (untied), since the original model had separate parameters that adaptation may move apart. The
 * imported model starts in eval mode with every parameter frozen; methods choose what trains (setTrainable).
 */
import type { Backend } from "../backend/backend.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { Module } from "../nn/module.ts";
import { BUILDERS, floats } from "./import_ops.ts";
import type { BuildContext, Env, Getter, Step } from "./import_ops.ts";
import type { OnnxModel, OnnxNode, OnnxTensor } from "./model.ts";
import { evalHost, HOST_OPS, hostOf, hostToTensor, type HostValue } from "./host_ops.ts";
import { fuseLayerNorms, fuseLinears } from "./fuse.ts";
import { planBatch } from "./batch.ts";
import { type CompiledStep, Container, OnnxModule } from "./onnx_module.ts";

export { type GraphNode, maxBatch, OnnxModule } from "./onnx_module.ts";

interface Constant {
  tensor: OnnxTensor;
  /** The initializer name an export writes this value back to, or null for Constant-node values. */
  initializer: string | null;
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

/** Shape arithmetic folds/runs on the host when every constant input is integral or tiny (a scale). */
const HOST_FLOAT_LIMIT = 16;

/** Ops handled by the importer itself rather than a builder. */
const KNOWN = new Set(["Constant", "Identity", "Dropout"]);

/**
 * Build an OnnxModule on `backend` from a decoded model. Throws one error listing every node it cannot run
 * (op and node name), so one export-and-retry round shows everything that is missing.
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
  const inputName = g.inputs[0].name;
  const canonical = new Map<string, string>([[inputName, inputName]]);
  const hosts = new Set<string>();
  const graphView = {
    constant: (n: string) => consts.get(n)?.tensor ?? constantNode(g.nodes, n),
    outputs: new Set(g.outputs.map((o) => o.name)),
  };
  const nodes = fuseLinears({ ...graphView, nodes: fuseLayerNorms({ ...graphView, nodes: g.nodes }) });
  const consumed = new Set([...nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);

  const materialize = new Set<string>();
  const root = new OnnxModule(g.inputs[0], materialize);
  const sources = new Map<Tensor, string>();
  const owned = new Map<string, Tensor>();
  const steps: CompiledStep[] = [];
  const lastUse = new Map<string, number>();
  const usedPaths = new Set<string>();
  const problems: string[] = [];
  const poisoned = new Set<string>();
  /** Batch templates for constant shape inputs of a fixed-batch export, by "nodeIndex:inputIndex". */
  const templates = new Map<string, (batch: number) => number[]>();

  /** Attach `layer` at a dotted path ("features.0.1") if every namespace on the way is free or a Container. */
  const tryPath = (layer: Module, path: string): boolean => {
    const segs = path.split(".");
    if (!path || usedPaths.has(path) || !segs.every((s) => /^[A-Za-z0-9_-]+$/.test(s))) return false;
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
    // Layers built before the failure hold backend memory: give it back.
    root.dispose();
    for (const t of owned.values()) t.dispose();
    throw e;
  }
  return root;

  function kindOf(name: string): "const" | "host" | "tensor" | "missing" {
    if (consts.has(name)) return "const";
    const c = canonical.get(name);
    if (c === undefined) return "missing";
    return hosts.has(c) ? "host" : "tensor";
  }

  function hostInput(name: string, index: number, shapeOnly: boolean): (env: Env) => HostValue | null {
    if (!name) return () => null;
    const c = consts.get(name);
    if (c) {
      const v = hostOf(c.tensor);
      return () => v;
    }
    const canon = canonical.get(name)!;
    lastUse.set(canon, index);
    if (hosts.has(canon)) return (env) => env.host.get(canon)!;
    if (!shapeOnly) throw new Error(`host input "${name}" is a runtime tensor`);
    // Shape/Size read only the runtime tensor's shape.
    return (env) => ({ dims: [...env.tensors.get(canon)!.shape], data: [], int: false });
  }

  /** Canonical names of a node's runtime inputs (device tensors and host values; constants left out). */
  function runtimeInputs(node: OnnxNode): string[] {
    return node.inputs.filter((n) => n && !consts.has(n)).map((n) => canonical.get(n) ?? n);
  }

  function compile(): void {
    for (const [index, node] of nodes.entries()) {
      const what = `${node.opType} node "${node.name}"`;
      const fail = (why: string) => new Error(`${what}: ${why}`);
      const unsupported = (why: string) => {
        problems.push(why);
        for (const o of node.outputs) poisoned.add(o);
      };
      // Unknown ops are listed even after an earlier failure, so one error names every missing op.
      if (node.domain !== "") {
        unsupported(`unsupported op "${node.domain}.${node.opType}" in node "${node.name}"`);
        continue;
      }
      if (!KNOWN.has(node.opType) && !BUILDERS[node.opType] && !HOST_OPS.has(node.opType)) {
        unsupported(`unsupported ONNX op "${node.opType}" in node "${node.name}"`);
        continue;
      }
      if (node.inputs.some((i) => i && poisoned.has(i))) {
        for (const o of node.outputs) poisoned.add(o);
        continue;
      }
      const missing = node.inputs.find((i) => i && kindOf(i) === "missing");
      if (node.opType === "Constant") {
        try {
          consts.set(node.outputs[0], { tensor: constantValue(node, fail), initializer: null });
        } catch (e) {
          unsupported((e as Error).message);
        }
        continue;
      }
      if (missing !== undefined) {
        unsupported(`${what}: input "${missing}" is not produced by any earlier node`);
        continue;
      }
      const src = node.inputs[0];
      if (node.opType === "Identity" || node.opType === "Dropout") {
        // Dropout runs as inference (identity); its optional mask output is not produced.
        if (node.outputs.slice(1).some((o) => o && consumed.has(o))) {
          unsupported(`${what}: the Dropout mask output is not supported`);
          continue;
        }
        const c = consts.get(src);
        if (c) {
          consts.set(node.outputs[0], { tensor: c.tensor, initializer: c.initializer && node.outputs[0] });
        } else canonical.set(node.outputs[0], canonical.get(src)!);
        continue;
      }
      const kinds = node.inputs.map((i) => (i ? kindOf(i) : "absent"));
      const shapeOp = node.opType === "Shape" || node.opType === "Size";
      const hostable = HOST_OPS.has(node.opType) &&
        kinds.every((k, i) =>
          k === "absent" || k === "host" || (k === "tensor" && shapeOp && i === 0) ||
          (k === "const" &&
            (consts.get(node.inputs[i])!.tensor.dtype !== "float32" &&
                consts.get(node.inputs[i])!.tensor.dtype !== "float64" ||
              consts.get(node.inputs[i])!.tensor.data.length <= HOST_FLOAT_LIMIT))
        );
      if (hostable) {
        const getters = node.inputs.map((n, i) => hostInput(n, index, shapeOp && i === 0));
        const run = (env: Env) => evalHost(node, getters.map((f) => f(env)), model.opset);
        if (kinds.every((k) => k === "const" || k === "absent")) {
          // Every input is known now: fold.
          try {
            const empty: Env = { tensors: new Map(), host: new Map(), batch: 1 };
            consts.set(node.outputs[0], {
              tensor: hostToTensor(run(empty), node.outputs[0]),
              initializer: null,
            });
          } catch (e) {
            unsupported(`${what}: ${(e as Error).message}`);
          }
          continue;
        }
        steps.push({
          node,
          kind: "host",
          run,
          inputs: runtimeInputs(node),
          outputs: [node.outputs[0]],
          layer: null,
          dies: [],
        });
        canonical.set(node.outputs[0], node.outputs[0]);
        hosts.add(node.outputs[0]);
        continue;
      }
      const build = BUILDERS[node.opType];
      if (!build) {
        unsupported(`unsupported ONNX op "${node.opType}" in node "${node.name}"`);
        continue;
      }
      let layer: Module | null = null;
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
          if (hosts.has(canon)) materialize.add(canon);
          lastUse.set(canon, index);
          return (env) => env.tensors.get(canon)!;
        },
        ints: (i, whatInput) => {
          const name = node.inputs[i];
          if (!name) return null;
          const key = `${index}:${i}`;
          const c = consts.get(name);
          if (c) {
            const fixed = Array.from(c.tensor.data as ArrayLike<number | bigint>, Number);
            return (env) => templates.get(key)?.(env.batch) ?? fixed;
          }
          const canon = canonical.get(name)!;
          if (!hosts.has(canon)) {
            throw fail(`${whatInput} must be a constant or computed from shapes, but it is a runtime tensor`);
          }
          lastUse.set(canon, index);
          return (env) => env.host.get(canon)!.data;
        },
        attach: (l, weightName) => {
          layer = l;
          place(l, weightName, node);
        },
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
      let run: Step;
      try {
        run = build(ctx);
      } catch (e) {
        unsupported(
          (e as Error).message.startsWith(what) ? (e as Error).message : `${what}: ${(e as Error).message}`,
        );
        continue;
      }
      const outputs = node.outputs.map((o) => (o && consumed.has(o) ? o : ""));
      steps.push({ node, kind: "tensor", run, inputs: runtimeInputs(node), outputs, layer, dies: [] });
      for (const o of outputs) if (o) canonical.set(o, o);
      root.graph.push({
        op: node.opType,
        name: node.name,
        inputs: node.inputs.filter((n) => n && kindOf(n) === "tensor").map((n) => canonical.get(n)!),
        outputs: outputs.filter(Boolean),
        layer,
        node,
      });
    }
    if (problems.length === 1) throw new Error(`importOnnx(): ${problems[0]}`);
    if (problems.length) {
      // One line (the CLI's error contract), every problem in it.
      throw new Error(`importOnnx(): ${problems.length} nodes cannot run: ${problems.join("; ")}`);
    }

    const output = g.outputs[0].name;
    const outCanon = canonical.get(output);
    if (outCanon === undefined || hosts.has(outCanon)) {
      throw new Error(`importOnnx(): graph output "${output}" is not computed from the input`);
    }
    const byStep = new Map<number, string[]>();
    for (const [name, i] of lastUse) {
      if (name === outCanon || name === inputName) continue;
      byStep.set(i, [...byStep.get(i) ?? [], name]);
    }
    const stepIndex = new Map(nodes.map((n, i) => [n, i]));
    for (const s of steps) {
      s.dies = byStep.get(stepIndex.get(s.node)!) ?? [];
      // A value nothing reads (a dead branch) is freed as soon as it is made.
      for (const o of s.outputs) if (o && !lastUse.has(o) && o !== outCanon) s.dies.push(o);
    }
    root._setup(outCanon, steps, sources, [...owned.values()]);
    root.batchPlan = planBatch({
      input: g.inputs[0],
      steps: steps.map((s) => ({ node: s.node, index: stepIndex.get(s.node)!, kind: s.kind })),
      constant: (n) => consts.get(n)?.tensor ?? null,
      canonical: (n) => canonical.get(n) ?? n,
      opset: model.opset,
      templates,
    });
    root.setTrainable(() => false);
    root.eval();
  }
}

/** The value of a Constant node named `name` (for the fusion pass, which runs before constants are read). */
function constantNode(nodes: OnnxNode[], name: string): OnnxTensor | null {
  const n = nodes.find((x) => x.opType === "Constant" && x.outputs[0] === name);
  if (!n) return null;
  try {
    return constantValue(n, (why) => new Error(why));
  } catch {
    return null;
  }
}
