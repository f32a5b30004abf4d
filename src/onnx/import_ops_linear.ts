/**
 * Gemm, MatMul and the import's fused MatMul + Add (fuse.ts). A constant weight in torch's [out, in] layout
 * becomes an nn Linear layer, so that structure analysis and parameter filters see a linear layer whatever
 * op the export used; any other constant weight is a ParamModule's tensor.
 */
import { Linear } from "../nn/layers.ts";
import { add } from "../ops/elementwise.ts";
import { gemm, matmul } from "../ops/linear.ts";
import { Tensor } from "../tensor.ts";
import { type BuildContext, type Getter, ParamModule, type Step, weightOf } from "./import_ops.ts";

/** x W^T + b as a Linear layer, its weight (input 1) [out, in] and bias (input 2) loaded from the graph. */
function linearLayer(ctx: BuildContext, dims: number[], bias: boolean, x: Getter): Step {
  const layer = new Linear(ctx.backend, { inFeatures: dims[1], outFeatures: dims[0], bias, init: false });
  ctx.attach(layer, ctx.node.inputs[1]);
  ctx.load(layer.weight, 1);
  if (layer.bias) ctx.load(layer.bias, 2);
  return (env) => layer.call(x(env));
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
  if (linearForm) return linearLayer(ctx, w.dims, c !== null, x);
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

/** A MatMul (+ Add) of a constant weight, fused at import (fuse.ts): one trainable linear layer. */
function fusedLinear(ctx: BuildContext): Step {
  const w = weightOf(ctx, 1, "weight");
  const hasBias = Boolean(ctx.node.inputs[2]);
  if (hasBias) weightOf(ctx, 2, "bias");
  const x = ctx.operand(0);
  // torch's [out, in] layout: an nn Linear layer, as Gemm's linear form.
  if (ctx.node.attrs.transB === 1) return linearLayer(ctx, w.dims, hasBias, x);
  const params: Record<string, Tensor> = {
    weight: Tensor.empty(ctx.backend, w.dims, { category: "weights" }),
  };
  if (hasBias) params.bias = Tensor.empty(ctx.backend, [w.dims[1]], { category: "weights" });
  ctx.attach(new ParamModule("MatMul", params), ctx.node.inputs[1]);
  ctx.load(params.weight, 1);
  if (params.bias) ctx.load(params.bias, 2);
  return (env) => {
    const y = matmul(x(env), params.weight);
    if (!params.bias) return y;
    const out = add(y, params.bias);
    y.dispose();
    return out;
  };
}

export const LINEAR_BUILDERS: Record<string, (ctx: BuildContext) => Step> = {
  Gemm: gemmOp,
  MatMul: matMulOp,
  FusedLinear: fusedLinear,
};
