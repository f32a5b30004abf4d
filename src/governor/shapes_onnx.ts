/**
 * Shape inference over an imported ONNX graph: the decoded OnnxModel compiled into a symbolic forward exactly
 * as src/onnx/import.ts compiles it (Constant and Identity/Dropout folding, aliases, each runtime value
 * disposed after its last use, dead outputs at once), with every Conv/BatchNormalization/Gemm/MatMul bound to
 * the layer of the imported module that holds its weights, so a method's choice of trainable parameters
 * applies to the graph as it does to the module.
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d, Linear } from "../nn/layers.ts";
import type { OnnxModel, OnnxNode, OnnxTensor } from "../onnx/model.ts";
import { ParamModule } from "../onnx/import_ops.ts";
import { type SimTensor, sizeOf } from "./sim.ts";
import * as op from "./sim_ops.ts";
import * as layers from "./sim_layers.ts";
import { bnLayer, convLayer, type Forward, linearLayer, type SimContext } from "./shapes.ts";

interface Step {
  run: (env: Map<string, SimTensor>, ctx: SimContext) => SimTensor;
  output: string;
  dies: string[];
}

export interface OnnxProgram {
  forward: Forward;
  /** Bytes of the constants the imported module owns as runtime operands (one tensor per name). */
  ownedBytes: number;
}

function ints(t: OnnxTensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

/** Layers of an imported module by the ONNX weight name they were loaded from (import.ts ctx.load). */
function layersByWeight(module: Module): Map<string, Module[]> {
  const out = new Map<string, Module[]>();
  const put = (name: string | undefined, m: Module) => {
    if (name) out.set(name, [...out.get(name) ?? [], m]);
  };
  for (const [, m] of module.namedModules()) {
    if (m instanceof Conv2d || m instanceof BatchNorm2d || m instanceof Linear) put(m.weight.name, m);
    else if (m instanceof ParamModule) put(m.namedParameters()[0]?.[1].name, m);
  }
  return out;
}

/** Compile an ONNX graph into a symbolic forward, mirroring importOnnx (aliases, constants, last uses). */
export function onnxProgram(model: OnnxModel, module: Module): OnnxProgram {
  const g = model.graph;
  const consts = new Map<string, OnnxTensor>(g.initializers);
  const canonical = new Map<string, string>([[g.inputs[0].name, g.inputs[0].name]]);
  const layers = layersByWeight(module);
  const owned = new Map<string, number>();
  const lastUse = new Map<string, number>();
  const steps: (Step & { index: number })[] = [];
  const fail = (n: OnnxNode, why: string) => new Error(`estimate(): ${n.opType} node "${n.name}": ${why}`);
  const layerOf = <L>(n: OnnxNode, kind: abstract new (...a: never[]) => L): L => {
    const queue = layers.get(n.inputs[1]);
    const l = queue?.shift();
    if (!(l instanceof kind)) throw fail(n, `no imported ${kind.name} holds weight "${n.inputs[1]}"`);
    return l;
  };

  for (const [index, n] of g.nodes.entries()) {
    if (n.opType === "Constant") {
      const v = n.attrs.value as OnnxTensor | undefined;
      if (v) consts.set(n.outputs[0], v);
      else if (n.attrs.value_ints !== undefined || n.attrs.value_int !== undefined) {
        const vs = (n.attrs.value_ints ?? [n.attrs.value_int]) as number[];
        consts.set(n.outputs[0], {
          name: n.outputs[0],
          dtype: "int64",
          dims: [vs.length],
          data: BigInt64Array.from(vs, BigInt),
        });
      } else {
        const vs = (n.attrs.value_floats ?? [n.attrs.value_float]) as number[];
        consts.set(n.outputs[0], {
          name: n.outputs[0],
          dtype: "float32",
          dims: [vs.length],
          data: Float32Array.from(vs),
        });
      }
      continue;
    }
    if (n.opType === "Identity" || n.opType === "Dropout") {
      const c = consts.get(n.inputs[0]);
      if (c) consts.set(n.outputs[0], c);
      else canonical.set(n.outputs[0], canonical.get(n.inputs[0]) ?? n.inputs[0]);
      continue;
    }
    const operand = (i: number): (env: Map<string, SimTensor>, ctx: SimContext) => SimTensor => {
      const name = n.inputs[i];
      const c = consts.get(name);
      if (c) {
        owned.set(name, sizeOf(c.dims));
        const dims = c.dims;
        return (_env, ctx) => ctx.constant(dims);
      }
      const canon = canonical.get(name);
      if (canon === undefined) throw fail(n, `input ${i} "${name}" is not produced by any earlier node`);
      lastUse.set(canon, index);
      return (env) => env.get(canon)!;
    };
    const run = compileNode(n, operand, consts, layerOf, fail);
    steps.push({ run, output: n.outputs[0], dies: [], index });
    canonical.set(n.outputs[0], n.outputs[0]);
  }
  const outCanon = canonical.get(g.outputs[0].name)!;
  for (const s of steps) {
    for (const [name, i] of lastUse) {
      if (i === s.index && name !== outCanon && name !== g.inputs[0].name) s.dies.push(name);
    }
    if (!lastUse.has(s.output) && s.output !== outCanon) s.dies.push(s.output);
  }
  const inputName = g.inputs[0].name;
  const forward: Forward = (ctx, x) => {
    const env = new Map<string, SimTensor>([[inputName, x]]);
    for (const s of steps) {
      env.set(s.output, s.run(env, ctx));
      for (const name of s.dies) {
        env.get(name)!.dispose();
        env.delete(name);
      }
    }
    return env.get(outCanon)!;
  };
  return { forward, ownedBytes: 4 * [...owned.values()].reduce((a, b) => a + b, 0) };
}

type Getter = (env: Map<string, SimTensor>, ctx: SimContext) => SimTensor;

function compileNode(
  n: OnnxNode,
  operand: (i: number) => Getter,
  consts: Map<string, OnnxTensor>,
  layerOf: <L>(n: OnnxNode, kind: abstract new (...a: never[]) => L) => L,
  fail: (n: OnnxNode, why: string) => Error,
): Getter {
  const a = n.attrs;
  switch (n.opType) {
    case "Conv": {
      const l = layerOf(n, Conv2d), x = operand(0);
      return (env, ctx) => convLayer(ctx, l, x(env, ctx));
    }
    case "BatchNormalization": {
      const l = layerOf(n, BatchNorm2d), x = operand(0);
      return (env, ctx) => bnLayer(ctx, l, x(env, ctx));
    }
    case "Relu":
    case "Clip": {
      const x = operand(0);
      return (env, ctx) => op.windowed(ctx.sim, x(env, ctx));
    }
    case "HardSwish":
    case "Sigmoid": {
      const x = operand(0), kind = n.opType === "HardSwish" ? "hardswish" : "sigmoid";
      return (env, ctx) => op.smooth(ctx.sim, x(env, ctx), kind);
    }
    case "HardSigmoid": {
      const x = operand(0);
      if (Math.abs((a.alpha as number) - 1 / 6) < 1e-7 && a.beta === 0.5) {
        return (env, ctx) => op.smooth(ctx.sim, x(env, ctx), "hardsigmoid");
      }
      return (env, ctx) => {
        const s = op.scale(ctx.sim, x(env, ctx));
        const t = op.addScalar(ctx.sim, s);
        s.dispose();
        const y = op.windowed(ctx.sim, t);
        t.dispose();
        return y;
      };
    }
    case "Add":
    case "Sub":
    case "Mul":
    case "Div": {
      const fn = { Add: op.add, Sub: op.sub, Mul: op.mul, Div: op.div }[n.opType]!;
      const x = operand(0), y = operand(1);
      return (env, ctx) => fn(ctx.sim, x(env, ctx), y(env, ctx));
    }
    case "GlobalAveragePool": {
      const x = operand(0);
      return (env, ctx) => op.globalAvgPool(ctx.sim, x(env, ctx));
    }
    case "ReduceMean": {
      const c = n.inputs[1] ? consts.get(n.inputs[1]) : undefined;
      const axes = a.axes !== undefined ? a.axes as number[] : c ? ints(c) : [];
      const keep = a.keepdims === 1, x = operand(0);
      if (axes.length === 0 && a.noop_with_empty_axes === 1) {
        return (env, ctx) => op.reshape(ctx.sim, x(env, ctx), x(env, ctx).shape);
      }
      return (env, ctx) => {
        const v = x(env, ctx);
        return op.reduceOp(ctx.sim, v, axes.length ? axes : v.shape.map((_, i) => i), keep);
      };
    }
    case "Gemm": {
      const w = consts.get(n.inputs[1]), c = n.inputs[2] ? consts.get(n.inputs[2]) : undefined;
      const [alpha, beta, transA, transB] = [
        a.alpha as number,
        a.beta as number,
        a.transA === 1,
        a.transB === 1,
      ];
      const x = operand(0);
      const linearForm = w && w.dims.length === 2 && transB && !transA && alpha === 1 &&
        (!c || (beta === 1 && c.data.length === w.dims[0] && c.dims.length <= 2));
      if (linearForm) {
        const l = layerOf(n, Linear);
        return (env, ctx) => linearLayer(ctx, l, x(env, ctx));
      }
      const pm = w || c ? layerOf(n, ParamModule) : null;
      const params = new Map(pm?.namedParameters() ?? []);
      const b = params.get("weight") ? null : operand(1);
      return (env, ctx) =>
        layers.gemm(ctx.sim, x(env, ctx), b ? b(env, ctx) : ctx.param(params.get("weight")!), {
          c: params.get("bias") ? ctx.param(params.get("bias")!) : null,
          alpha,
          beta,
          transA,
          transB,
        });
    }
    case "MatMul": {
      const x = operand(0);
      if (!consts.get(n.inputs[1])) {
        const y = operand(1);
        return (env, ctx) => layers.matmul(ctx.sim, x(env, ctx), y(env, ctx));
      }
      const w = layerOf(n, ParamModule).namedParameters()[0][1];
      return (env, ctx) => layers.matmul(ctx.sim, x(env, ctx), ctx.param(w));
    }
    case "Flatten": {
      const x = operand(0), axis = a.axis as number;
      return (env, ctx) => op.flatten(ctx.sim, x(env, ctx), axis);
    }
    case "Reshape": {
      const sc = consts.get(n.inputs[1]);
      if (!sc) throw fail(n, "shape must be a constant");
      const shape = ints(sc), allowZero = a.allowzero === 1, x = operand(0);
      return (env, ctx) => {
        const v = x(env, ctx);
        return op.reshape(ctx.sim, v, shape.map((d, i) => (d === 0 && !allowZero ? v.shape[i] : d)));
      };
    }
  }
  throw fail(n, "the estimator does not know this op");
}
