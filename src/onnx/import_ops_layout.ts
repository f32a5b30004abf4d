/**
 * Builders for ONNX's data-movement ops (src/ops/layout.ts): Reshape, Transpose, Slice, Pad, Expand,
 * Concat, Split, Gather, Squeeze, Unsqueeze, Cast. Their shape-like inputs (target shapes, axes, bounds) are
 * constants or shape arithmetic computed on the host each forward (BuildContext.ints), so a reshape that
 * depends on the batch size follows it.
 */
import type { Tensor } from "../tensor.ts";
import { concat, expand, gather, pad, slice, split, squeeze, transpose, unsqueeze } from "../ops/layout.ts";
import { reshape } from "../ops/shape.ts";
import type { BuildContext, Env, Step } from "./import_ops.ts";

/** A shape-like input from ctx.ints, or (before the opset where it became an input) an attribute. */
function intsOrAttr(
  ctx: BuildContext,
  i: number,
  attr: string,
  what: string,
): ((env: Env) => number[]) | null {
  const v = ctx.node.attrs[attr];
  if (v !== undefined) {
    const fixed = v as number[];
    return () => fixed;
  }
  return ctx.node.inputs[i] ? ctx.ints(i, what) : null;
}

function reshapeOp(ctx: BuildContext): Step {
  const shape = ctx.ints(1, "shape");
  if (!shape) throw ctx.fail("the shape input is missing");
  const allowZero = ctx.node.attrs.allowzero === 1;
  const x = ctx.operand(0);
  return (env) => {
    const v = x(env);
    // ONNX: 0 copies the input's dim at that index (unless allowzero); -1 is inferred.
    return reshape(v, shape(env).map((d, i) => (d === 0 && !allowZero ? v.shape[i] : d)));
  };
}

function transposeOp(ctx: BuildContext): Step {
  const perm = ctx.node.attrs.perm as number[] | undefined;
  const x = ctx.operand(0);
  return (env) => transpose(x(env), perm);
}

function sliceOp(ctx: BuildContext): Step {
  const starts = intsOrAttr(ctx, 1, "starts", "starts"), ends = intsOrAttr(ctx, 2, "ends", "ends");
  if (!starts || !ends) throw ctx.fail("starts and ends are required");
  const axes = intsOrAttr(ctx, 3, "axes", "axes"), steps = ctx.opset >= 10 ? ctx.ints(4, "steps") : null;
  const x = ctx.operand(0);
  return (env) =>
    slice(x(env), { starts: starts(env), ends: ends(env), axes: axes?.(env), steps: steps?.(env) });
}

function padOp(ctx: BuildContext): Step {
  const mode = (ctx.node.attrs.mode as string | undefined) ?? "constant";
  if (mode !== "constant") throw ctx.fail(`mode "${mode}" is not supported (only "constant")`);
  const pads = intsOrAttr(ctx, 1, "pads", "pads");
  if (!pads) throw ctx.fail("pads are required");
  let value = (ctx.node.attrs.value as number | undefined) ?? 0;
  if (ctx.node.inputs[2]) {
    const c = ctx.constant(2);
    if (!c || c.data.length !== 1) throw ctx.fail("constant_value must be a constant scalar");
    value = Number(c.data[0]);
  }
  const axes = ctx.node.inputs[3] ? ctx.ints(3, "axes") : null;
  const x = ctx.operand(0);
  return (env) => {
    const v = x(env);
    let p = pads(env);
    const ax = axes?.(env);
    if (ax) {
      // Pads for the listed axes only (opset 18): spread them over every axis.
      const full = new Array<number>(2 * v.rank).fill(0);
      ax.forEach((a, i) => {
        const d = a < 0 ? a + v.rank : a;
        full[d] = p[i];
        full[v.rank + d] = p[ax.length + i];
      });
      p = full;
    }
    return pad(v, p, value);
  };
}

function expandOp(ctx: BuildContext): Step {
  const shape = ctx.ints(1, "shape");
  if (!shape) throw ctx.fail("the shape input is missing");
  const x = ctx.operand(0);
  return (env) => expand(x(env), shape(env));
}

function concatOp(ctx: BuildContext): Step {
  const axis = ctx.node.attrs.axis as number;
  const xs = ctx.node.inputs.map((_, i) => ctx.operand(i));
  return (env) => concat(xs.map((x) => x(env)), axis);
}

function splitOp(ctx: BuildContext): Step {
  const axis = (ctx.node.attrs.axis as number | undefined) ?? 0;
  const sizes = intsOrAttr(ctx, 1, "split", "split");
  const parts = ctx.node.outputs.length;
  const x = ctx.operand(0);
  return (env) => {
    const v = x(env);
    const a = axis < 0 ? axis + v.rank : axis;
    let s = sizes?.(env);
    if (!s) {
      // Equal parts; the last smaller when the dim does not divide (opset 18's num_outputs rule).
      const each = Math.ceil(v.shape[a] / parts);
      s = Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(each, v.shape[a] - i * each)));
    }
    return split(v, s, a);
  };
}

function gatherOp(ctx: BuildContext): Step {
  const axis = (ctx.node.attrs.axis as number | undefined) ?? 0;
  const indices = ctx.ints(1, "indices");
  const c = ctx.constant(1);
  const x = ctx.operand(0);
  return (env) => {
    const idx = indices!(env);
    // The indices' shape: a constant's dims, else a host value's (a vector, or a scalar when it has one value
    // and the host arithmetic made it rank 0).
    const dims = c ? c.dims : env.host.get(ctx.node.inputs[1])?.dims ?? [idx.length];
    return gather(x(env), idx, dims, axis);
  };
}

function squeezeOp(ctx: BuildContext): Step {
  const axes = intsOrAttr(ctx, 1, "axes", "axes");
  const x = ctx.operand(0);
  return (env) => squeeze(x(env), axes?.(env));
}

function unsqueezeOp(ctx: BuildContext): Step {
  const axes = intsOrAttr(ctx, 1, "axes", "axes");
  if (!axes) throw ctx.fail("axes are required");
  const x = ctx.operand(0);
  return (env) => unsqueeze(x(env), axes(env));
}

/** ONNX TensorProto.DataType codes of float types: a cast between them is the identity on f32 devices. */
const FLOAT_CODES = new Set([1, 10, 11, 16]);

function castOp(ctx: BuildContext): Step {
  const to = ctx.node.attrs.to as number;
  if (!FLOAT_CODES.has(to)) {
    throw ctx.fail(`a cast of a runtime tensor to data type ${to} is not supported (tensors are float32)`);
  }
  const x = ctx.operand(0);
  // A new handle (a view), never the input itself: each graph value is disposed once.
  return (env) => reshape(x(env), x(env).shape);
}

function identity(t: Tensor): Tensor {
  return reshape(t, t.shape);
}

export const LAYOUT_BUILDERS: Record<string, (ctx: BuildContext) => Step> = {
  Reshape: reshapeOp,
  Transpose: transposeOp,
  Slice: sliceOp,
  Pad: padOp,
  Expand: expandOp,
  Concat: concatOp,
  Split: splitOp,
  Gather: gatherOp,
  Squeeze: squeezeOp,
  Unsqueeze: unsqueezeOp,
  Cast: castOp,
  Identity: (ctx) => {
    const x = ctx.operand(0);
    return (env) => identity(x(env));
  },
};
