/**
 * One builder per supported ONNX op: it reads the node's attributes and constant inputs once, at import, and
 * returns the step that runs the op on src/ops/* at forward time. Ops with weights become nn layers (Conv2d,
 * BatchNorm2d, LayerNorm, Linear) so that parameter filters such as `bnAffine` and the structure analysis
 * see them as layers of their kind. This file holds the compute ops; import_ops_linear.ts Gemm and MatMul, import_ops_layout.ts the data
 * movement.
 */
import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../tensor.ts";
import { BatchNorm2d, Conv2d, LayerNorm } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { clip, erf, hardsigmoid, hardswish, relu, relu6, sigmoid, unaryMath } from "../ops/activation.ts";
import { add, addScalar, div, equal, mul, pow, scale, sub } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { pad } from "../ops/layout.ts";
import { avgPool2d, maxPool2d, type Pool2dOptions } from "../ops/pool.ts";
import { globalAvgPool, mean, sum } from "../ops/reduce.ts";
import { where } from "../ops/select.ts";
import { logSoftmax, softmax } from "../ops/softmax.ts";
import { flatten, reshape } from "../ops/shape.ts";
import type { HostValue } from "./host_ops.ts";
import type { OnnxNode, OnnxTensor } from "./model.ts";
import { LAYOUT_BUILDERS } from "./import_ops_layout.ts";
import { LINEAR_BUILDERS } from "./import_ops_linear.ts";

/** Values of the graph at forward time. */
export interface Env {
  /** Device tensors by canonical name. */
  tensors: Map<string, Tensor>;
  /** Shape arithmetic computed on the host this forward (host_ops.ts). */
  host: Map<string, HostValue>;
  /** The input's batch size, for the batch templates of fixed-batch exports (batch.ts). */
  batch: number;
}
export type Getter = (env: Env) => Tensor;
export type Step = (env: Env) => Tensor | Tensor[];

export interface BuildContext {
  backend: Backend;
  node: OnnxNode;
  /** Default-domain opset. */
  opset: number;
  /** Input i's constant value (initializer, Constant output, or folded shape arithmetic); null if not constant. */
  constant(i: number): OnnxTensor | null;
  /** Input i at forward time; a constant input becomes a tensor owned by the model. */
  operand(i: number): Getter;
  /**
   * Input i as numbers at forward time (a shape, axes, slice bounds): a constant, or shape arithmetic done
   * on the host. null when the optional input is absent. Throws when it is a runtime tensor.
   */
  ints(i: number, what: string): ((env: Env) => number[]) | null;
  /** Place a layer in the model's module tree; `weightName` (its ONNX weight) suggests a PyTorch-like path. */
  attach(layer: Module, weightName: string): void;
  /** Load a constant input into a parameter or buffer, remembering which initializer it came from (export). */
  load(t: Tensor, i: number): void;
  /** An error naming the op and the node. */
  fail(why: string): Error;
}

/** Parameters of ops that are not an nn layer (a general Gemm, MatMul by a constant). */
export class ParamModule extends Module {
  constructor(readonly kind: string, params: Record<string, Tensor>) {
    super();
    for (const [k, t] of Object.entries(params)) this.addParam(k, t);
  }

  forward(_x: Tensor): Tensor {
    throw new Error(`${this.kind}: runs as a step of its ONNX graph, not on its own`);
  }
}

/** Beyond this a float bound is "no bound": the kernels take +-3.0e38 for an open side of a window. */
const OPEN = 3.0e38;

export function floats(t: OnnxTensor): Float32Array {
  return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>, Number);
}

export function ints(t: OnnxTensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

function scalar(ctx: BuildContext, i: number, what: string): number | null {
  if (!ctx.node.inputs[i]) return null;
  const t = ctx.constant(i);
  if (!t) throw ctx.fail(`${what} must be a constant (an initializer or a Constant node)`);
  if (t.data.length !== 1) throw ctx.fail(`${what} must be a scalar, got dims [${t.dims.join(", ")}]`);
  return Number(t.data[0]);
}

export function weightOf(ctx: BuildContext, i: number, what: string): OnnxTensor {
  const t = ctx.constant(i);
  if (!t) {
    throw ctx.fail(
      `${what} "${ctx.node.inputs[i]}" must be an initializer (trainable weights are constants)`,
    );
  }
  return t;
}

export function attrInts(ctx: BuildContext, name: string): number[] {
  return ctx.node.attrs[name] as number[];
}

/** ONNX pads [top, left, bottom, right] of a conv or pool, resolving auto_pad (SAME_* needs the input size). */
function spatialPads(
  ctx: BuildContext,
  kernel: number[],
  strides: number[],
  dilations: number[],
): [number, number, number, number] {
  const autoPad = ctx.node.attrs.auto_pad as string;
  if (autoPad === "VALID") return [0, 0, 0, 0];
  if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") {
    const total = kernel.map((k, i) => dilations[i] * (k - 1));
    if (strides.some((s) => s !== 1)) {
      throw ctx.fail(
        `auto_pad ${autoPad} with strides [${strides}] is not supported (re-export with explicit pads)`,
      );
    }
    const lo = total.map((t) => (autoPad === "SAME_UPPER" ? Math.floor(t / 2) : Math.ceil(t / 2)));
    return [lo[0], lo[1], total[0] - lo[0], total[1] - lo[1]];
  }
  const p = attrInts(ctx, "pads");
  return [p[0], p[1], p[2], p[3]];
}

function conv(ctx: BuildContext): Step {
  const w = weightOf(ctx, 1, "weight");
  if (w.dims.length !== 4) {
    throw ctx.fail(`only 2-D convolutions are supported, weight is [${w.dims.join(", ")}]`);
  }
  const hasBias = Boolean(ctx.node.inputs[2]);
  if (hasBias) weightOf(ctx, 2, "bias");
  const kernel = w.dims.slice(2), strides = attrInts(ctx, "strides"), dilations = attrInts(ctx, "dilations");
  const groups = ctx.node.attrs.group as number;
  const [top, left, bottom, right] = spatialPads(ctx, kernel, strides, dilations);
  // Symmetric padding is the conv kernel's; the rest is a Pad in front of it.
  const [ph, pw] = [Math.min(top, bottom), Math.min(left, right)];
  const extra = [top - ph, left - pw, bottom - ph, right - pw];
  const layer = new Conv2d(ctx.backend, {
    inChannels: w.dims[1] * groups,
    outChannels: w.dims[0],
    kernelSize: [kernel[0], kernel[1]],
    stride: [strides[0], strides[1]],
    padding: [ph, pw],
    dilation: [dilations[0], dilations[1]],
    groups,
    bias: hasBias,
    init: false, // loaded from the initializer below
  });
  ctx.attach(layer, ctx.node.inputs[1]);
  ctx.load(layer.weight, 1);
  if (layer.bias) ctx.load(layer.bias, 2);
  const x = ctx.operand(0);
  if (extra.every((e) => e === 0)) return (env) => layer.call(x(env));
  const pads = [0, 0, extra[0], extra[1], 0, 0, extra[2], extra[3]];
  return (env) => {
    const p = pad(x(env), pads, 0);
    const y = layer.call(p);
    p.dispose();
    return y;
  };
}

function batchNorm(ctx: BuildContext): Step {
  const scaleT = weightOf(ctx, 1, "scale");
  for (let i = 2; i <= 4; i++) weightOf(ctx, i, ["bias", "mean", "var"][i - 2]);
  // ONNX: running = momentum * running + (1 - momentum) * batch; PyTorch's momentum weighs the batch.
  const momentum = 1 - (ctx.node.attrs.momentum as number);
  const layer = new BatchNorm2d(ctx.backend, {
    numFeatures: scaleT.data.length,
    eps: ctx.node.attrs.epsilon as number,
    momentum,
  });
  ctx.attach(layer, ctx.node.inputs[1]);
  ctx.load(layer.weight, 1);
  ctx.load(layer.bias, 2);
  ctx.load(layer.runningMean, 3);
  ctx.load(layer.runningVar, 4);
  const x = ctx.operand(0);
  return (env) => layer.call(x(env));
}

function layerNormOp(ctx: BuildContext): Step {
  const a = ctx.node.attrs;
  if (a.stash_type !== undefined && a.stash_type !== 1) {
    throw ctx.fail(`stash_type ${a.stash_type} is not supported`);
  }
  const g = ctx.node.inputs[1] ? weightOf(ctx, 1, "scale") : null;
  const b = ctx.node.inputs[2] ? weightOf(ctx, 2, "bias") : null;
  const axis = (a.axis as number | undefined) ?? -1;
  if (g && axis >= 0) {
    throw ctx.fail(`axis ${axis} counted from the front is not supported (use a negative axis)`);
  }
  const shape = g ? g.dims : null;
  if (shape && shape.length !== -axis) {
    throw ctx.fail(`scale [${shape}] does not cover the ${-axis} normalised axes`);
  }
  const x = ctx.operand(0);
  const eps = (a.epsilon as number | undefined) ?? 1e-5;
  if (!shape) return (env) => layerNorm(x(env), null, null, { axis, eps });
  const layer = new LayerNorm(ctx.backend, { shape, eps, bias: b !== null });
  ctx.attach(layer, ctx.node.inputs[1]);
  ctx.load(layer.weight!, 1);
  if (layer.bias) ctx.load(layer.bias, 2);
  return (env) => layer.call(x(env));
}

function unary(fn: (x: Tensor) => Tensor): (ctx: BuildContext) => Step {
  return (ctx) => {
    const x = ctx.operand(0);
    return (env) => fn(x(env));
  };
}

function clipOp(ctx: BuildContext): Step {
  const a = ctx.node.attrs;
  const lo = ctx.opset < 11 ? a.min as number : scalar(ctx, 1, "min") ?? -OPEN;
  const hi = ctx.opset < 11 ? a.max as number : scalar(ctx, 2, "max") ?? OPEN;
  const [min, max] = [Math.max(lo, -OPEN), Math.min(hi, OPEN)];
  const x = ctx.operand(0);
  if (min === 0 && max === 6) return (env) => relu6(x(env));
  return (env) => clip(x(env), min, max);
}

function hardSigmoidOp(ctx: BuildContext): Step {
  const alpha = ctx.node.attrs.alpha as number, beta = ctx.node.attrs.beta as number;
  const x = ctx.operand(0);
  // PyTorch's hardsigmoid (alpha 1/6, stored as float32) is a kernel; other slopes are composed.
  if (Math.abs(alpha - 1 / 6) < 1e-7 && beta === 0.5) return (env) => hardsigmoid(x(env));
  return (env) => {
    const s = scale(x(env), alpha);
    const t = addScalar(s, beta);
    s.dispose();
    const y = clip(t, 0, 1);
    t.dispose();
    return y;
  };
}

function binary(fn: (a: Tensor, b: Tensor) => Tensor): (ctx: BuildContext) => Step {
  return (ctx) => {
    const a = ctx.operand(0), b = ctx.operand(1);
    return (env) => fn(a(env), b(env));
  };
}

function reduceAxesOf(ctx: BuildContext): ((env: Env) => number[]) | null {
  if (ctx.node.attrs.axes !== undefined) {
    const axes = ctx.node.attrs.axes as number[];
    return () => axes;
  }
  return ctx.ints(1, "axes");
}

function reduceOp(fn: typeof mean): (ctx: BuildContext) => Step {
  return (ctx) => {
    const a = ctx.node.attrs;
    const axes = reduceAxesOf(ctx);
    const keepDims = a.keepdims === 1;
    const x = ctx.operand(0);
    return (env) => {
      const v = x(env);
      const ax = axes?.(env) ?? [];
      if (ax.length === 0 && a.noop_with_empty_axes === 1) return reshape(v, v.shape);
      return fn(v, ax.length ? ax : v.shape.map((_, i) => i), keepDims);
    };
  };
}

function flattenOp(ctx: BuildContext): Step {
  const axis = ctx.node.attrs.axis as number;
  const x = ctx.operand(0);
  return (env) => flatten(x(env), axis);
}

function globalAvgPoolOp(ctx: BuildContext): Step {
  const x = ctx.operand(0);
  return (env) => globalAvgPool(x(env));
}

function poolOp(op: "max" | "avg"): (ctx: BuildContext) => Step {
  return (ctx) => {
    const a = ctx.node.attrs;
    if (ctx.node.outputs[1]) throw ctx.fail("the Indices output of MaxPool is not supported");
    const kernel = a.kernel_shape as number[];
    if (!kernel || kernel.length !== 2) throw ctx.fail(`only 2-D pooling is supported, kernel [${kernel}]`);
    const strides = attrInts(ctx, "strides"), dilations = attrInts(ctx, "dilations");
    if (op === "avg" && dilations.some((d) => d !== 1)) {
      throw ctx.fail("dilated average pooling is not supported");
    }
    if (a.storage_order === 1) throw ctx.fail("storage_order 1 (column-major indices) is not supported");
    const o: Pool2dOptions = {
      kernel: [kernel[0], kernel[1]],
      stride: [strides[0], strides[1]],
      pads: spatialPads(ctx, kernel, strides, dilations),
      dilation: [dilations[0], dilations[1]],
      ceilMode: a.ceil_mode === 1,
      countIncludePad: a.count_include_pad === 1,
    };
    const x = ctx.operand(0);
    return op === "max" ? (env) => maxPool2d(x(env), o) : (env) => avgPool2d(x(env), o);
  };
}

function softmaxOp(log: boolean): (ctx: BuildContext) => Step {
  return (ctx) => {
    const axis = ctx.node.attrs.axis as number;
    const x = ctx.operand(0);
    const f = log ? logSoftmax : softmax;
    if (ctx.opset >= 13) return (env) => f(x(env), axis);
    // Before opset 13 the input is coerced to 2-D at `axis` and the softmax runs over the flattened tail.
    return (env) => {
      const v = x(env);
      const flat = flatten(v, axis);
      const y = f(flat, -1);
      flat.dispose();
      const out = reshape(y, v.shape);
      y.dispose();
      return out;
    };
  };
}

function geluOp(ctx: BuildContext): Step {
  const approximate = (ctx.node.attrs.approximate as string | undefined) ?? "none";
  if (approximate !== "none" && approximate !== "tanh") throw ctx.fail(`approximate "${approximate}"`);
  const x = ctx.operand(0);
  return (env) => gelu(x(env), approximate);
}

function reciprocal(x: Tensor): Tensor {
  const one = Tensor.full(x.backend, [], 1);
  const y = div(one, x);
  one.dispose();
  return y;
}

export const BUILDERS: Record<string, (ctx: BuildContext) => Step> = {
  Conv: conv,
  BatchNormalization: batchNorm,
  LayerNormalization: layerNormOp,
  Relu: unary(relu),
  Sigmoid: unary(sigmoid),
  HardSwish: unary(hardswish),
  HardSigmoid: hardSigmoidOp,
  Clip: clipOp,
  Erf: unary(erf),
  Gelu: geluOp,
  Sqrt: unary((x) => unaryMath(x, "sqrt")),
  Exp: unary((x) => unaryMath(x, "exp")),
  Log: unary((x) => unaryMath(x, "log")),
  Neg: unary((x) => unaryMath(x, "neg")),
  Abs: unary((x) => unaryMath(x, "abs")),
  Reciprocal: unary(reciprocal),
  Add: binary(add),
  Sub: binary(sub),
  Mul: binary(mul),
  Div: binary(div),
  Pow: binary(pow),
  Equal: binary(equal),
  Where: (ctx) => {
    const c = ctx.operand(0), a = ctx.operand(1), b = ctx.operand(2);
    return (env) => where(c(env), a(env), b(env));
  },
  GlobalAveragePool: globalAvgPoolOp,
  MaxPool: poolOp("max"),
  AveragePool: poolOp("avg"),
  ReduceMean: reduceOp(mean),
  ReduceSum: reduceOp(sum),
  Softmax: softmaxOp(false),
  LogSoftmax: softmaxOp(true),
  Flatten: flattenOp,
  ...LINEAR_BUILDERS,
  ...LAYOUT_BUILDERS,
};
