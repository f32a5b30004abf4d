/**
 * One builder per supported ONNX op: it reads the node's attributes and constant inputs once, at import, and
 * returns the step that runs the op on src/ops/* at forward time. Ops with weights become nn layers (Conv2d,
 * BatchNorm2d, Linear) so that parameter filters such as `bnAffine` see them as layers of their kind.
 */
import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../tensor.ts";
import { BatchNorm2d, Conv2d, Linear } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { clip, hardsigmoid, hardswish, relu, relu6, sigmoid } from "../ops/activation.ts";
import { add, addScalar, div, mul, scale, sub } from "../ops/elementwise.ts";
import { gemm, matmul } from "../ops/linear.ts";
import { globalAvgPool, mean } from "../ops/reduce.ts";
import { flatten, reshape } from "../ops/shape.ts";
import type { OnnxNode, OnnxTensor } from "./model.ts";

/** Values of the graph at forward time, by (canonical) name. */
export type Env = Map<string, Tensor>;
export type Getter = (env: Env) => Tensor;
export type Step = (env: Env) => Tensor;

export interface BuildContext {
  backend: Backend;
  node: OnnxNode;
  /** Default-domain opset. */
  opset: number;
  /** Input i's constant value (initializer, Constant output, or an Identity of one); null if computed or absent. */
  constant(i: number): OnnxTensor | null;
  /** Input i at forward time; a constant input becomes a tensor owned by the model. */
  operand(i: number): Getter;
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

function ints(t: OnnxTensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

function scalar(ctx: BuildContext, i: number, what: string): number | null {
  if (!ctx.node.inputs[i]) return null;
  const t = ctx.constant(i);
  if (!t) throw ctx.fail(`${what} must be a constant (an initializer or a Constant node)`);
  if (t.data.length !== 1) throw ctx.fail(`${what} must be a scalar, got dims [${t.dims.join(", ")}]`);
  return Number(t.data[0]);
}

function weightOf(ctx: BuildContext, i: number, what: string): OnnxTensor {
  const t = ctx.constant(i);
  if (!t) {
    throw ctx.fail(
      `${what} "${ctx.node.inputs[i]}" must be an initializer (trainable weights are constants)`,
    );
  }
  return t;
}

function attrInts(ctx: BuildContext, name: string): number[] {
  return ctx.node.attrs[name] as number[];
}

/** Symmetric [padH, padW] from ONNX pads [top, left, bottom, right] or auto_pad. */
function convPadding(
  ctx: BuildContext,
  kernel: number[],
  strides: number[],
  dilations: number[],
): [number, number] {
  const autoPad = ctx.node.attrs.auto_pad as string;
  if (autoPad === "VALID") return [0, 0];
  if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") {
    const total = kernel.map((k, i) => dilations[i] * (k - 1));
    if (strides.some((s) => s !== 1) || total.some((t) => t % 2 !== 0)) {
      throw ctx.fail(`auto_pad ${autoPad} with strides [${strides}] and kernel [${kernel}] pads unevenly`);
    }
    return [total[0] / 2, total[1] / 2];
  }
  const [top, left, bottom, right] = attrInts(ctx, "pads");
  if (top !== bottom || left !== right) {
    throw ctx.fail(`asymmetric pads [${top}, ${left}, ${bottom}, ${right}] are not supported`);
  }
  return [top, left];
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
  const layer = new Conv2d(ctx.backend, {
    inChannels: w.dims[1] * groups,
    outChannels: w.dims[0],
    kernelSize: [kernel[0], kernel[1]],
    stride: [strides[0], strides[1]],
    padding: convPadding(ctx, kernel, strides, dilations),
    dilation: [dilations[0], dilations[1]],
    groups,
    bias: hasBias,
  });
  ctx.attach(layer, ctx.node.inputs[1]);
  ctx.load(layer.weight, 1);
  if (layer.bias) ctx.load(layer.bias, 2);
  const x = ctx.operand(0);
  return (env) => layer.call(x(env));
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

function reduceMean(ctx: BuildContext): Step {
  const a = ctx.node.attrs;
  let axes: number[] = [];
  if (a.axes !== undefined) axes = a.axes as number[];
  else if (ctx.node.inputs[1]) {
    const t = ctx.constant(1);
    if (!t) throw ctx.fail("axes must be a constant");
    axes = ints(t);
  }
  const keepDims = a.keepdims === 1;
  const x = ctx.operand(0);
  if (axes.length === 0 && a.noop_with_empty_axes === 1) return (env) => reshape(x(env), x(env).shape);
  return (env) => {
    const v = x(env);
    return mean(v, axes.length ? axes : v.shape.map((_, i) => i), keepDims);
  };
}

function gemmOp(ctx: BuildContext): Step {
  const a = ctx.node.attrs;
  const [alpha, beta] = [a.alpha as number, a.beta as number];
  const [transA, transB] = [a.transA === 1, a.transB === 1];
  const w = ctx.constant(1), c = ctx.node.inputs[2] ? ctx.constant(2) : null;
  if (ctx.node.inputs[2] && !c) throw ctx.fail("C must be a constant");
  const x = ctx.operand(0);
  // torch's nn.Linear: Gemm(x, W [out, in], b [out], transB=1). Keep it a Linear layer.
  const linearForm = w && w.dims.length === 2 && transB && !transA && alpha === 1 &&
    (!c || (beta === 1 && c.data.length === w.dims[0] && c.dims.length <= 2));
  if (linearForm) {
    const layer = new Linear(ctx.backend, {
      inFeatures: w.dims[1],
      outFeatures: w.dims[0],
      bias: c !== null,
    });
    ctx.attach(layer, ctx.node.inputs[1]);
    ctx.load(layer.weight, 1);
    if (layer.bias) ctx.load(layer.bias, 2);
    return (env) => layer.call(x(env));
  }
  const params: Record<string, Tensor> = {};
  if (w) params.weight = Tensor.empty(ctx.backend, w.dims, { category: "weights" });
  if (c) params.bias = Tensor.empty(ctx.backend, c.dims, { category: "weights" });
  if (w || c) ctx.attach(new ParamModule("Gemm", params), ctx.node.inputs[1]);
  if (w) ctx.load(params.weight, 1);
  if (c) ctx.load(params.bias, 2);
  const wT = params.weight, bGet: Getter = wT ? () => wT : ctx.operand(1);
  const cT = params.bias ?? null;
  return (env) => gemm(x(env), bGet(env), { c: cT, alpha, beta, transA, transB });
}

function matMulOp(ctx: BuildContext): Step {
  const a = ctx.operand(0);
  const w = ctx.constant(1);
  if (!w) {
    const b = ctx.operand(1);
    return (env) => matmul(a(env), b(env));
  }
  const t = Tensor.empty(ctx.backend, w.dims, { category: "weights" });
  ctx.attach(new ParamModule("MatMul", { weight: t }), ctx.node.inputs[1]);
  ctx.load(t, 1);
  return (env) => matmul(a(env), t);
}

function flattenOp(ctx: BuildContext): Step {
  const axis = ctx.node.attrs.axis as number;
  const x = ctx.operand(0);
  return (env) => flatten(x(env), axis);
}

function reshapeOp(ctx: BuildContext): Step {
  const s = ctx.constant(1);
  if (!s) throw ctx.fail("shape must be a constant");
  const shape = ints(s);
  const allowZero = ctx.node.attrs.allowzero === 1;
  const x = ctx.operand(0);
  return (env) => {
    const v = x(env);
    // ONNX: 0 copies the input's dim at that index (unless allowzero); -1 is inferred.
    return reshape(v, shape.map((d, i) => (d === 0 && !allowZero ? v.shape[i] : d)));
  };
}

function globalAvgPoolOp(ctx: BuildContext): Step {
  const x = ctx.operand(0);
  return (env) => globalAvgPool(x(env));
}

export const BUILDERS: Record<string, (ctx: BuildContext) => Step> = {
  Conv: conv,
  BatchNormalization: batchNorm,
  Relu: unary(relu),
  Sigmoid: unary(sigmoid),
  HardSwish: unary(hardswish),
  HardSigmoid: hardSigmoidOp,
  Clip: clipOp,
  Add: binary(add),
  Sub: binary(sub),
  Mul: binary(mul),
  Div: binary(div),
  GlobalAveragePool: globalAvgPoolOp,
  ReduceMean: reduceMean,
  Gemm: gemmOp,
  MatMul: matMulOp,
  Flatten: flattenOp,
  Reshape: reshapeOp,
};
