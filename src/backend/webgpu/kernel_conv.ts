/**
 * WebGPU convolutions: conv2d, conv2d_grad_input, conv2d_grad_weight.
 *
 * Paths: a pointwise convolution (1x1, stride 1, no padding) is a GEMM per group (matmul.wgsl): forward
 * W @ X[n] with a per-row bias, input gradient W^T @ dY[n], weight gradient sum_n dY[n] @ X[n]^T. Depthwise
 * convolutions use depthwise.wgsl, the rest the row-tiled implicit GEMM of conv.wgsl (kernel_conv_tiled.ts);
 * the input gradient of both is computed per stride phase. The general weight gradient reduces over images
 * inside conv.wgsl's conv2d_grad_weight, split over image ranges into a scratch and summed when that gives
 * a device more parallel work.
 */
import type { Storage } from "../backend.ts";
import type { Conv2dAttrs } from "../kernels.ts";
import type { GpuContext, GpuKernelTable, UniformsOf } from "./context.ts";
import {
  batchesThatFit,
  bindBatch,
  bindWindow,
  dispatchGrid,
  maxBindingElements,
  pow2ceil,
  type Strided,
} from "./kernel_grid.ts";
import { gemm } from "./kernel_matmul.ts";
import { elementwiseKernels } from "./kernel_elementwise.ts";
import {
  depthwisePass,
  forImageChunks,
  forwardAxis,
  gradAxis,
  type TiledPass,
  tiledPass,
  vec4Source,
} from "./kernel_conv_tiled.ts";

function isPointwise(a: Conv2dAttrs): boolean {
  return a.kh === 1 && a.kw === 1 && a.strideH === 1 && a.strideW === 1 && a.padH === 0 && a.padW === 0 &&
    a.outH === a.h && a.outW === a.w;
}

function isDepthwise(a: Conv2dAttrs): boolean {
  return a.groups === a.cin;
}

function check(what: string, a: Conv2dAttrs, lengths: Record<string, [Storage | undefined, number]>): void {
  if (!(a.groups >= 1) || a.cin % a.groups !== 0 || a.cout % a.groups !== 0) {
    throw new Error(`${what}: groups=${a.groups} must divide cin=${a.cin} and cout=${a.cout}`);
  }
  for (const [name, [s, want]] of Object.entries(lengths)) {
    if (s && s.length < want) {
      throw new Error(`${what}: ${name} holds ${s.length} elements, the attributes need ${want}`);
    }
  }
}

/** Pointwise convolution as one GEMM per group: y[n, g] = W[g] @ x[n, g] (+ bias per row). */
function pointwiseForward(
  ctx: GpuContext,
  x: Storage,
  w: Storage,
  bias: Storage | undefined,
  y: Storage,
  a: Conv2dAttrs,
) {
  const hw = a.h * a.w, cing = a.cin / a.groups, coutg = a.cout / a.groups;
  for (let g = 0; g < a.groups; g++) {
    gemm(ctx, {
      a: w,
      b: x,
      bias,
      biasPer: "row",
      out: y,
      batch: a.n,
      m: coutg,
      n: hw,
      k: cing,
      transA: false,
      transB: false,
      strideA: 0,
      strideB: a.cin * hw,
      strideC: a.cout * hw,
      offA: g * coutg * cing,
      offB: g * cing * hw,
      offC: g * coutg * hw,
      offBias: g * coutg,
      accumulate: false,
    });
  }
}

function pointwiseGradInput(ctx: GpuContext, dy: Storage, w: Storage, dx: Storage, a: Conv2dAttrs) {
  const hw = a.h * a.w, cing = a.cin / a.groups, coutg = a.cout / a.groups;
  for (let g = 0; g < a.groups; g++) {
    // dx[n, g] = W[g]^T @ dy[n, g]; W[g] is stored [coutg, cing], i.e. op(A) = W^T with A stored [K, M].
    gemm(ctx, {
      a: w,
      b: dy,
      out: dx,
      batch: a.n,
      m: cing,
      n: hw,
      k: coutg,
      transA: true,
      transB: false,
      strideA: 0,
      strideB: a.cout * hw,
      strideC: a.cin * hw,
      offA: g * coutg * cing,
      offB: g * coutg * hw,
      offC: g * cing * hw,
      accumulate: false,
    });
  }
}

/** Elements of per-split partial sums a weight gradient may hold in scratch (4 MiB). */
const SPLIT_SCRATCH = 1 << 20;
/** Output elements below which a weight gradient is split over image ranges (too little parallel work). */
const SPLIT_BELOW = 1 << 16;

/**
 * Image ranges whose partial weight gradients are computed in parallel into scratch, then summed: a divisor
 * of n, 1 when the output alone is enough parallel work, and never more scratch than one binding holds.
 */
function parallelParts(ctx: GpuContext, n: number, outputs: number): number {
  if (n < 2 || outputs >= SPLIT_BELOW) return 1;
  const fit = maxBindingElements(ctx) - ctx.limits.minStorageBufferOffsetAlignment / 4;
  let s = Math.min(n, Math.ceil(SPLIT_BELOW / outputs), Math.floor(Math.min(SPLIT_SCRATCH, fit) / outputs));
  while (s > 1 && n % s !== 0) s--;
  return Math.max(1, s);
}

/** out[size] = sum of the `parts` rows of scratch [parts, size]: a GEMM with a row of ones. */
function sumParts(ctx: GpuContext, scratch: Storage, out: Storage, parts: number, size: number): void {
  const ones = ctx.temp(parts);
  elementwiseKernels.fill({ out: ones, attrs: { n: parts, value: 1 } }, ctx);
  gemm(ctx, {
    a: ones,
    b: scratch,
    out,
    batch: 1,
    m: 1,
    n: size,
    k: parts,
    transA: false,
    transB: false,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    accumulate: false,
  });
}

/** dw[g] = sum over images of dy[n, g] @ x[n, g]^T (a GEMM whose K runs over hw and the images). */
function pointwiseGradWeight(ctx: GpuContext, x: Storage, dy: Storage, dw: Storage, a: Conv2dAttrs) {
  const hw = a.h * a.w, cing = a.cin / a.groups, coutg = a.cout / a.groups;
  const size = a.cout * cing, xs = a.cin * hw, ys = a.cout * hw;
  const ops: Strided[] = [{ storage: x, offset: 0, stride: xs, size: xs }, {
    storage: dy,
    offset: 0,
    stride: ys,
    size: ys,
  }];
  let parts = parallelParts(ctx, a.n, size);
  const fits = (count: number) => batchesThatFit(ctx, ops, count) === count;
  if (!fits(a.n / parts)) parts = 1;
  const per = a.n / parts;
  const scratch = parts > 1 ? ctx.temp(parts * size) : null;
  // One GEMM per group, batched over parts, sums `count` images per part starting at image img.
  const run = (img: number, count: number, batch: number, accumulate: boolean) => {
    for (let g = 0; g < a.groups; g++) {
      gemm(ctx, {
        a: dy,
        b: x,
        out: scratch ?? dw,
        batch,
        m: coutg,
        n: cing,
        k: hw,
        transA: false,
        transB: true,
        strideA: count * ys,
        strideB: count * xs,
        strideC: size,
        offA: img * ys + g * coutg * hw,
        offB: img * xs + g * cing * hw,
        offC: g * coutg * cing,
        kBatch: count,
        kStrideA: ys,
        kStrideB: xs,
        accumulate,
      });
    }
  };
  if (fits(per)) run(0, per, parts, false);
  else {
    // The images do not fit one binding window: sum them by successive GEMMs that accumulate into dw
    // (queue order makes that safe without atomics).
    let first = true;
    forImageChunks(ctx, "conv2d_grad_weight", a.n, ops, (b0, count) => {
      run(b0, count, 1, !first);
      first = false;
    });
  }
  if (scratch) sumParts(ctx, scratch, dw, parts, size);
}

function convUniforms(
  a: Conv2dAttrs,
  count: number,
  offs: [number, number, number],
  base: [number, number, number],
): UniformsOf<"conv", "conv2d_grad_weight"> {
  return {
    n: count,
    cin: a.cin,
    h: a.h,
    w: a.w,
    cout: a.cout,
    kh: a.kh,
    kw: a.kw,
    sh: a.strideH,
    sw: a.strideW,
    ph: a.padH,
    pw: a.padW,
    dh: a.dilationH,
    dw: a.dilationW,
    groups: a.groups,
    oh: a.outH,
    ow: a.outW,
    off_x: offs[0],
    off_dy: offs[1],
    off_out: offs[2],
    base_x: base[0],
    base_y: base[1],
    base_z: base[2],
  };
}

function gradWeight(ctx: GpuContext, x: Storage, dy: Storage, dw: Storage, a: Conv2dAttrs) {
  const coutg = a.cout / a.groups;
  const cols = (a.cin / a.groups) * a.kh * a.kw;
  const size = a.cout * cols;
  const rows = coutg >= 32 ? 8 : coutg >= 4 ? 4 : 1;
  const wgX = Math.min(16, pow2ceil(Math.ceil(cols / 4)));
  const wgY = Math.max(1, Math.min(64 / wgX, pow2ceil(Math.ceil(coutg / rows))));
  const xs = a.cin * a.h * a.w, ys = a.cout * a.outH * a.outW;
  const xo: Strided = { storage: x, offset: 0, stride: xs, size: xs };
  const yo: Strided = { storage: dy, offset: 0, stride: ys, size: ys };
  const all = batchesThatFit(ctx, [xo, yo], a.n) === a.n;
  // Parts of the image range reduce in parallel (grid z = groups x parts) into scratch, then get summed.
  const parts = all ? parallelParts(ctx, a.n, size) : 1;
  const out = parts > 1 ? ctx.temp(parts * size) : dw;
  const wb = bindWindow(ctx, out, 0, parts * size);
  const grid = (z: number): [number, number, number] => [
    Math.ceil(cols / 4 / wgX),
    Math.ceil(coutg / rows / wgY),
    z,
  ];
  const dispatch = (b0: number, count: number, accumulate: boolean) => {
    const xb = bindBatch(ctx, xo, b0, count), dyb = bindBatch(ctx, yo, b0, count);
    dispatchGrid(ctx, grid(a.groups * parts), {
      shader: "conv",
      entry: "conv2d_grad_weight",
      constants: { GW_WG_X: wgX, GW_WG_Y: wgY, GW_ROWS: rows, ACCUMULATE: accumulate ? 1 : 0 },
      bindings: [xb.binding, dyb.binding, wb.binding],
      uniforms: (base) => convUniforms(a, count / parts, [xb.rem, dyb.rem, wb.rem], base),
    });
  };
  // No images: dw is a sum of nothing, which one dispatch over zero images writes as zeros.
  if (all || a.n === 0) dispatch(0, a.n, false);
  else {
    // Images beyond one binding window: successive dispatches accumulate into dw (queue-ordered).
    let first = true;
    forImageChunks(ctx, "conv2d_grad_weight", a.n, [xo, yo], (b0, count) => {
      dispatch(b0, count, !first);
      first = false;
    });
  }
  if (parts > 1) sumParts(ctx, out, dw, parts, size);
}

export const convKernels: Pick<GpuKernelTable, "conv2d" | "conv2d_grad_input" | "conv2d_grad_weight"> = {
  conv2d: ({ x, w, bias, out, attrs: a }, ctx) => {
    check("conv2d", a, {
      x: [x, a.n * a.cin * a.h * a.w],
      w: [w, a.cout * (a.cin / a.groups) * a.kh * a.kw],
      bias: [bias, a.cout],
      out: [out, a.n * a.cout * a.outH * a.outW],
    });
    if (a.n === 0) return;
    if (isPointwise(a)) return pointwiseForward(ctx, x, w, bias, out, a);
    const pass: TiledPass = {
      src: x,
      srcShape: [a.cin, a.h, a.w],
      dst: out,
      dstShape: [a.cout, a.outH, a.outW],
      hy: forwardAxis(a.kh, a.strideH, a.padH, a.dilationH, a.outH),
      wx: forwardAxis(a.kw, a.strideW, a.padW, a.dilationW, a.outW),
      bias,
    };
    if (isDepthwise(a)) depthwisePass(ctx, "conv2d", w, a, pass, false);
    else tiledPass(ctx, "conv2d", w, a, pass, false);
  },
  conv2d_grad_input: ({ dy, w, out, attrs: a }, ctx) => {
    check("conv2d_grad_input", a, {
      dy: [dy, a.n * a.cout * a.outH * a.outW],
      w: [w, a.cout * (a.cin / a.groups) * a.kh * a.kw],
      out: [out, a.n * a.cin * a.h * a.w],
    });
    if (a.n === 0) return;
    if (isPointwise(a)) return pointwiseGradInput(ctx, dy, w, out, a);
    const src = vec4Source(ctx, dy); // once for all phases
    for (let py = 0; py < a.strideH; py++) {
      for (let px = 0; px < a.strideW; px++) {
        const pass: TiledPass = {
          src,
          srcShape: [a.cout, a.outH, a.outW],
          dst: out,
          dstShape: [a.cin, a.h, a.w],
          hy: gradAxis(py, a.kh, a.strideH, a.padH, a.dilationH, a.h),
          wx: gradAxis(px, a.kw, a.strideW, a.padW, a.dilationW, a.w),
        };
        if (isDepthwise(a)) depthwisePass(ctx, "conv2d_grad_input", w, a, pass, true);
        else tiledPass(ctx, "conv2d_grad_input", w, a, pass, true);
      }
    }
  },
  conv2d_grad_weight: ({ x, dy, out, attrs: a }, ctx) => {
    check("conv2d_grad_weight", a, {
      x: [x, a.n * a.cin * a.h * a.w],
      dy: [dy, a.n * a.cout * a.outH * a.outW],
      out: [out, a.cout * (a.cin / a.groups) * a.kh * a.kw],
    });
    if (isPointwise(a) && a.n > 0) pointwiseGradWeight(ctx, x, dy, out, a);
    else gradWeight(ctx, x, dy, out, a);
  },
};
