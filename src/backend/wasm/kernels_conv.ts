/**
 * Wrappers of matmul, the convolutions and batch normalisation (native/conv.c, depthwise.c, gemm.c, norm.c):
 * the same checks as the CPU reference (which reads out of range as NaN; here it would read other tensors),
 * then one call into C, which tiles the work over the pool.
 */
import type { Storage } from "../backend.ts";
import type { Conv2dAttrs } from "../kernels.ts";
import { ints, need, type WasmContext, type WasmKernel } from "./context.ts";

export const matmul: WasmKernel<"matmul"> = ({ a, b, bias, out, attrs }, ctx) => {
  const { batch, m, n, k, transA, transB, strideA, strideB, strideC, accumulate } = attrs;
  ints("matmul", { batch, m, n, k, strideA, strideB, strideC });
  if (batch === 0 || m === 0 || n === 0) return;
  need("matmul", "a", a, (batch - 1) * strideA + m * k);
  need("matmul", "b", b, (batch - 1) * strideB + k * n);
  need("matmul", "out", out, (batch - 1) * strideC + m * n);
  if (bias) need("matmul", "bias", bias, n);
  ctx.exports.matmul(
    ctx.addr(a),
    ctx.addr(b),
    ctx.addrOr0(bias),
    ctx.addr(out),
    batch,
    m,
    n,
    k,
    transA ? 1 : 0,
    transB ? 1 : 0,
    strideA,
    strideB,
    strideC,
    accumulate ? 1 : 0,
  );
};

/** The attributes as the C side's Conv, after the CPU reference's checks. */
function convArgs(kernel: string, a: Conv2dAttrs, x: Storage, w: Storage, y: Storage): number[] {
  const { n, cin, h, w: width, cout, kh, kw, strideH, strideW, padH, padW, dilationH, dilationW, groups } = a;
  const { outH, outW } = a;
  ints(kernel, { n, cin, h, w: width, cout, kh, kw, padH, padW, outH, outW });
  ints(kernel, {
    strideH: strideH - 1,
    strideW: strideW - 1,
    dilationH: dilationH - 1,
    dilationW: dilationW - 1,
  });
  if (!(groups >= 1) || cin % groups !== 0 || cout % groups !== 0) {
    throw new Error(`${kernel}: groups=${groups} must divide cin=${cin} and cout=${cout}`);
  }
  // Every window the outputs read starts inside the padded image (C reads padding as zeros, never past it).
  const span = (size: number, pad: number, k: number, d: number, s: number, o: number) =>
    o === 0 || (o - 1) * s + (k - 1) * d < size + 2 * pad;
  if (!span(h, padH, kh, dilationH, strideH, outH) || !span(width, padW, kw, dilationW, strideW, outW)) {
    throw new Error(
      `${kernel}: output ${outH}x${outW} does not fit input ${h}x${width} with kernel ${kh}x${kw}, ` +
        `stride ${strideH}x${strideW}, padding ${padH}x${padW}, dilation ${dilationH}x${dilationW}`,
    );
  }
  need(kernel, "x", x, n * cin * h * width);
  need(kernel, "w", w, cout * (cin / groups) * kh * kw);
  need(kernel, "y", y, n * cout * outH * outW);
  return [
    n,
    cin,
    h,
    width,
    cout,
    kh,
    kw,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
    groups,
    outH,
    outW,
  ];
}

function empty(a: Conv2dAttrs): boolean {
  return a.n === 0 || a.cout === 0 || a.cin === 0;
}

export const conv2d: WasmKernel<"conv2d"> = ({ x, w, bias, out, attrs }, ctx) => {
  const args = convArgs("conv2d", attrs, x, w, out);
  if (bias) need("conv2d", "bias", bias, attrs.cout);
  if (empty(attrs)) return zero(ctx, out, attrs.n * attrs.cout * attrs.outH * attrs.outW);
  ctx.exports.conv2d(ctx.addr(x), ctx.addr(w), ctx.addrOr0(bias), ctx.addr(out), ...args);
};

export const conv2d_grad_input: WasmKernel<"conv2d_grad_input"> = ({ dy, w, out, attrs }, ctx) => {
  const args = convArgs("conv2d_grad_input", attrs, out, w, dy);
  if (empty(attrs)) return zero(ctx, out, attrs.n * attrs.cin * attrs.h * attrs.w);
  ctx.exports.conv2d_grad_input(ctx.addr(dy), ctx.addr(w), ctx.addr(out), ...args);
};

export const conv2d_grad_weight: WasmKernel<"conv2d_grad_weight"> = ({ x, dy, out, attrs }, ctx) => {
  const args = convArgs("conv2d_grad_weight", attrs, x, out, dy);
  if (empty(attrs)) return zero(ctx, out, attrs.cout * (attrs.cin / attrs.groups) * attrs.kh * attrs.kw);
  ctx.exports.conv2d_grad_weight(ctx.addr(x), ctx.addr(dy), ctx.addr(out), ...args);
};

function zero(ctx: WasmContext, s: Storage, n: number): void {
  if (n > 0) ctx.exports.fill(ctx.addr(s), n, 0);
}

function bnShape(kernel: string, attrs: { n: number; c: number; hw: number }): number {
  ints(kernel, { n: attrs.n, c: attrs.c, hw: attrs.hw });
  return attrs.n * attrs.c * attrs.hw;
}

export const bn_stats: WasmKernel<"bn_stats"> = ({ x, mean, variance, attrs }, ctx) => {
  need("bn_stats", "x", x, bnShape("bn_stats", attrs));
  need("bn_stats", "mean", mean, attrs.c);
  need("bn_stats", "variance", variance, attrs.c);
  ctx.exports.bn_stats(ctx.addr(x), ctx.addr(mean), ctx.addr(variance), attrs.n, attrs.c, attrs.hw);
};

export const bn_apply: WasmKernel<"bn_apply"> = (
  { x, mean, variance, gamma, beta, out, xhat, attrs },
  ctx,
) => {
  const size = bnShape("bn_apply", attrs);
  need("bn_apply", "x", x, size);
  need("bn_apply", "out", out, size);
  if (xhat) need("bn_apply", "xhat", xhat, size);
  for (
    const [name, s] of [["mean", mean], ["variance", variance], ["gamma", gamma], ["beta", beta]] as const
  ) {
    need("bn_apply", name, s, attrs.c);
  }
  ctx.exports.bn_apply(
    ctx.addr(x),
    ctx.addr(mean),
    ctx.addr(variance),
    ctx.addr(gamma),
    ctx.addr(beta),
    ctx.addr(out),
    ctx.addrOr0(xhat),
    attrs.n,
    attrs.c,
    attrs.hw,
    attrs.eps,
  );
};

export const bn_grad_reduce: WasmKernel<"bn_grad_reduce"> = ({ dy, xhat, sumDy, sumDyXhat, attrs }, ctx) => {
  const size = bnShape("bn_grad_reduce", attrs);
  need("bn_grad_reduce", "dy", dy, size);
  need("bn_grad_reduce", "xhat", xhat, size);
  need("bn_grad_reduce", "sumDy", sumDy, attrs.c);
  need("bn_grad_reduce", "sumDyXhat", sumDyXhat, attrs.c);
  ctx.exports.bn_grad_reduce(
    ctx.addr(dy),
    ctx.addr(xhat),
    ctx.addr(sumDy),
    ctx.addr(sumDyXhat),
    attrs.n,
    attrs.c,
    attrs.hw,
  );
};

export const bn_grad_input: WasmKernel<"bn_grad_input"> = (
  { dy, xhat, gamma, variance, sumDy, sumDyXhat, out, attrs },
  ctx,
) => {
  const size = bnShape("bn_grad_input", attrs);
  if (attrs.training && (!xhat || !sumDy || !sumDyXhat)) {
    throw new Error("bn_grad_input: training mode needs xhat, sumDy and sumDyXhat");
  }
  need("bn_grad_input", "dy", dy, size);
  need("bn_grad_input", "out", out, size);
  need("bn_grad_input", "gamma", gamma, attrs.c);
  need("bn_grad_input", "variance", variance, attrs.c);
  if (attrs.training) {
    need("bn_grad_input", "xhat", xhat!, size);
    need("bn_grad_input", "sumDy", sumDy!, attrs.c);
    need("bn_grad_input", "sumDyXhat", sumDyXhat!, attrs.c);
  }
  ctx.exports.bn_grad_input(
    ctx.addr(dy),
    attrs.training ? ctx.addr(xhat!) : 0,
    ctx.addr(gamma),
    ctx.addr(variance),
    attrs.training ? ctx.addr(sumDy!) : 0,
    attrs.training ? ctx.addr(sumDyXhat!) : 0,
    ctx.addr(out),
    attrs.n,
    attrs.c,
    attrs.hw,
    attrs.eps,
    attrs.training ? 1 : 0,
  );
};
