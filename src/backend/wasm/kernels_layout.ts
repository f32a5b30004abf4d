/**
 * Wrappers of strided_copy (native/layout.c) and 2-D pooling (native/pool.c): every element a view or a
 * window can address is checked against its storage before the C code runs.
 */
import type { Storage } from "../backend.ts";
import type { Pool2dAttrs, StridedView } from "../kernels.ts";
import { ints, need, type WasmKernel } from "./context.ts";

/** Lowest and highest element a strided view addresses over `shape`. */
function span(shape: number[], view: StridedView): [number, number] {
  let lo = view.offset, hi = view.offset;
  shape.forEach((d, i) => {
    const reach = (d - 1) * view.strides[i];
    if (reach < 0) lo += reach;
    else hi += reach;
  });
  return [lo, hi];
}

function checkView(kernel: string, name: string, s: Storage, shape: number[], view: StridedView): void {
  if (view.strides.length !== shape.length || !view.strides.every(Number.isInteger)) {
    throw new Error(`${kernel}: ${name} strides [${view.strides}] do not match shape [${shape}]`);
  }
  ints(kernel, { [`${name}.offset`]: view.offset });
  const [lo, hi] = span(shape, view);
  if (lo < 0) throw new Error(`${kernel}: ${name} view reaches element ${lo}, before its storage`);
  need(kernel, name, s, hi + 1);
}

export const strided_copy: WasmKernel<"strided_copy"> = ({ x, out, attrs }, ctx) => {
  const { shape } = attrs;
  if (shape.length > 6) throw new Error(`strided_copy: rank ${shape.length} exceeds 6`);
  shape.forEach((d, i) => ints("strided_copy", { [`shape[${i}]`]: d }));
  if (shape.some((d) => d === 0)) return;
  checkView("strided_copy", "x", x, shape, attrs.x);
  checkView("strided_copy", "out", out, shape, attrs.out);
  const [ps, px, po] = ctx.ints(shape, attrs.x.strides, attrs.out.strides);
  ctx.exports.strided_copy(
    ctx.addr(x),
    ctx.addr(out),
    shape.length,
    ps,
    attrs.x.offset,
    px,
    attrs.out.offset,
    po,
  );
};

function poolArgs(kernel: string, a: Pool2dAttrs): number[] {
  const { n, c, h, w, kh, kw, strideH, strideW, padTop, padLeft, padBottom, padRight, outH, outW } = a;
  ints(kernel, { n, c, h, w, kh, kw, padTop, padLeft, padBottom, padRight, outH, outW });
  ints(kernel, {
    strideH: strideH - 1,
    strideW: strideW - 1,
    dilationH: a.dilationH - 1,
    dilationW: a.dilationW - 1,
  });
  if (a.op !== "max" && a.op !== "avg") throw new Error(`${kernel}: unknown op "${a.op}"`);
  if (a.op === "avg" && (a.dilationH !== 1 || a.dilationW !== 1)) {
    throw new Error(`pool2d(): average pooling with dilation ${a.dilationH}x${a.dilationW} is not supported`);
  }
  return [
    a.op === "max" ? 1 : 0,
    n,
    c,
    h,
    w,
    kh,
    kw,
    strideH,
    strideW,
    padTop,
    padLeft,
    padBottom,
    padRight,
    a.dilationH,
    a.dilationW,
    outH,
    outW,
    a.countIncludePad ? 1 : 0,
  ];
}

export const pool2d: WasmKernel<"pool2d"> = ({ x, out, argmax, attrs }, ctx) => {
  const args = poolArgs("pool2d", attrs);
  const outputs = attrs.n * attrs.c * attrs.outH * attrs.outW;
  need("pool2d", "x", x, attrs.n * attrs.c * attrs.h * attrs.w);
  need("pool2d", "out", out, outputs);
  if (argmax) need("pool2d", "argmax", argmax, outputs);
  ctx.exports.pool2d(ctx.addr(x), ctx.addr(out), attrs.op === "max" ? ctx.addrOr0(argmax) : 0, ...args);
};

export const pool2d_grad: WasmKernel<"pool2d_grad"> = ({ dy, argmax, out, attrs }, ctx) => {
  const args = poolArgs("pool2d_grad", attrs);
  const outputs = attrs.n * attrs.c * attrs.outH * attrs.outW;
  if (attrs.op === "max" && !argmax) throw new Error("pool2d_grad(): max pooling needs argmax");
  need("pool2d_grad", "dy", dy, outputs);
  need("pool2d_grad", "out", out, attrs.n * attrs.c * attrs.h * attrs.w);
  if (attrs.op === "max") {
    need("pool2d_grad", "argmax", argmax!, outputs);
    // argmax indexes a plane: an index past it (corrupt or foreign) would write outside dx.
    const plane = attrs.h * attrs.w;
    const bad = ctx.cpu.u(argmax!).subarray(0, outputs).find((i) => i !== 0xffffffff && i >= plane);
    if (bad !== undefined) {
      throw new Error(`pool2d_grad: argmax ${bad} lies outside a ${attrs.h}x${attrs.w} plane`);
    }
  }
  ctx.exports.pool2d_grad(ctx.addr(dy), attrs.op === "max" ? ctx.addr(argmax!) : 0, ctx.addr(out), ...args);
};
