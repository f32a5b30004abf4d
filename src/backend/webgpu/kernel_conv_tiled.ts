/**
 * Dispatch of the row-tiled convolution kernels (kernels/conv.wgsl conv_tiled, kernels/depthwise.wgsl) for
 * conv2d and conv2d_grad_input. Both compute "positions x output channels" from a gathered source with a
 * stride-1 row segment per kernel row; the input gradient is split into stride phases, each a correlation of
 * dy with the flipped sub-kernel of the taps that reach it (no atomics, no wasted taps).
 */
import type { Storage } from "../backend.ts";
import type { Conv2dAttrs } from "../kernels.ts";
import type { GpuContext } from "./context.ts";
import { elementwiseKernels } from "./kernel_elementwise.ts";
import {
  batchesThatFit,
  bindBatch,
  bindWindow,
  dispatchGrid,
  pow2ceil,
  type Strided,
} from "./kernel_grid.ts";

/** Taps of one axis: source offset of tap 0 at output 0, source step between taps, weight index of tap b. */
export interface AxisPlan {
  /** Output positions along the axis. */
  count: number;
  /** Taps taken (0: the positions are written as zeros). */
  taps: number;
  /** Source index of tap 0 at position 0 (may be negative: padding). */
  offset: number;
  /** Source elements between consecutive taps. */
  step: number;
  /** Source elements between consecutive positions. */
  stride: number;
  /** Weight index of tap b is k0 + b*kStep. */
  k0: number;
  kStep: number;
  /** Position a is written at phase + outStride*a. */
  phase: number;
  outStride: number;
}

/** The forward pass along one axis. */
export function forwardAxis(k: number, stride: number, pad: number, dilation: number, out: number): AxisPlan {
  return {
    count: out,
    taps: k,
    offset: -pad,
    step: dilation,
    stride,
    k0: 0,
    kStep: 1,
    phase: 0,
    outStride: 1,
  };
}

/**
 * Input-gradient phase `ph` (input index = ph + stride*a) along one axis: tap t reaches dy index
 * (ph + pad - t*dilation)/stride + a when that division is exact. Taps are taken in descending t so the dy
 * offset grows with the tap index, as in a forward correlation.
 */
export function gradAxis(
  ph: number,
  k: number,
  stride: number,
  pad: number,
  dilation: number,
  size: number,
): AxisPlan {
  const taps: number[] = [];
  for (let t = k - 1; t >= 0; t--) {
    if ((((ph + pad - t * dilation) % stride) + stride) % stride === 0) taps.push(t);
  }
  const count = ph < size ? Math.ceil((size - ph) / stride) : 0;
  const base = { count, stride: 1, phase: ph, outStride: stride };
  if (taps.length === 0) return { ...base, taps: 0, offset: 0, step: 1, k0: 0, kStep: 1 };
  const kStep = taps.length > 1 ? taps[1] - taps[0] : -1;
  return {
    ...base,
    taps: taps.length,
    offset: (ph + pad - taps[0] * dilation) / stride,
    step: taps.length > 1 ? (-kStep * dilation) / stride : 1,
    k0: taps[0],
    kStep,
  };
}

/** Source elements the windows of `outs` outputs span along a kernel row (the kernels' segment holds 64). */
function segment(wx: AxisPlan, outs: number): number {
  return (outs - 1) * wx.stride + (Math.max(wx.taps, 1) - 1) * wx.step + 1;
}

const MAX_SEGMENT = 64;

/** One tiled pass: gather `src` (dy or x), write positions of `dst`. */
export interface TiledPass {
  /** "x" / "dy" layouts per image: channels, height, width. */
  src: Storage;
  srcShape: [number, number, number];
  dst: Storage;
  dstShape: [number, number, number];
  hy: AxisPlan;
  wx: AxisPlan;
  bias?: Storage;
}

function checkSegment(what: string, a: Conv2dAttrs, wx: AxisPlan, outs: number): void {
  if (segment(wx, outs) > MAX_SEGMENT) {
    throw new Error(
      `${what}: a kernel row of ${a.kw} taps at dilation ${a.dilationW} and stride ${a.strideW} spans ` +
        `${segment(wx, outs)} input columns for ${outs} outputs; at most ${MAX_SEGMENT} are supported`,
    );
  }
}

/**
 * A source the kernels can read as array<vec4<f32>> in full: one whose length is a multiple of 4 (so every
 * binding window of it can be rounded up to whole vec4s). Other sources are copied into zero-padded
 * scratch first; activations rarely need it (n*c*h*w is odd only for odd channel and image counts at odd
 * sizes).
 */
export function vec4Source(ctx: GpuContext, s: Storage): Storage {
  if (s.length % 4 === 0 && s.length > 0) return s;
  const padded = Math.max(4, Math.ceil(s.length / 4) * 4);
  const t = ctx.temp(padded);
  elementwiseKernels.fill({ out: t, attrs: { n: padded, value: 0 } }, ctx);
  if (s.length > 0) {
    elementwiseKernels.copy({ x: s, out: t, attrs: { n: s.length, srcOffset: 0, dstOffset: 0 } }, ctx);
  }
  return t;
}

/** Run `body` on chunks of images whose source and destination windows fit a binding. */
export function forImageChunks(
  ctx: GpuContext,
  what: string,
  n: number,
  ops: Strided[],
  body: (b0: number, count: number) => void,
): void {
  for (let b0 = 0; b0 < n;) {
    const count = batchesThatFit(ctx, ops, n - b0);
    if (count === 0) {
      throw new Error(
        `${what}: one image (${ops.map((o) => o.size).join(" and ")} elements) exceeds the ` +
          `${ctx.limits.maxStorageBufferBindingSize}-byte storage binding limit`,
      );
    }
    body(b0, count);
    b0 += count;
  }
}

function perImage(s: Storage, shape: [number, number, number]): Strided {
  const size = shape[0] * shape[1] * shape[2];
  return { storage: s, offset: 0, stride: size, size };
}

/**
 * conv_tiled over all images. `swap` selects the weight view: false for the forward pass (rows are output
 * channels), true for the input gradient (rows are input channels, gathered channels are dy's).
 */
export function tiledPass(
  ctx: GpuContext,
  what: string,
  w: Storage,
  a: Conv2dAttrs,
  pass: TiledPass,
  swap: boolean,
) {
  const { hy, wx } = pass;
  checkSegment(what, a, wx, 4);
  const cing = pass.srcShape[0] / a.groups, rows = pass.dstShape[0] / a.groups;
  const taps = hy.taps > 0 && wx.taps > 0;
  const khe = taps ? hy.taps : 0, kwe = taps ? wx.taps : 1;
  // 4 output channels per invocation: 8 doubles the accumulators and ran 2x slower on llvmpipe.
  const tile = 4;
  const rowsPad = Math.ceil(rows / tile) * tile;
  const total = a.groups * cing * khe * kwe * rowsPad;
  const wt = ctx.temp(Math.max(4, total));
  if (total > 0) {
    const ww = bindWindow(ctx, w, 0, a.cout * (a.cin / a.groups) * a.kh * a.kw);
    ctx.dispatch({
      shader: "conv",
      entry: "conv_weights",
      bindings: [ww.binding, wt],
      uniforms: {
        total,
        rows,
        rows_pad: rowsPad,
        cols: cing,
        khe,
        kwe,
        coutg: a.cout / a.groups,
        cing: a.cin / a.groups,
        kh: a.kh,
        kw: a.kw,
        kh0: hy.k0,
        kh_step: hy.kStep,
        kw0: wx.k0,
        kw_step: wx.kStep,
        swap: swap ? 1 : 0,
        off_w: ww.rem,
      },
      // A grid-stride loop: a few workgroups cover any weight.
      workgroups: [Math.min(256, ctx.limits.maxComputeWorkgroupsPerDimension, Math.ceil(total / 64))],
    });
  }
  const tiles = hy.count * Math.ceil(wx.count / 4);
  if (tiles === 0) return;
  const wgX = Math.min(64, pow2ceil(tiles));
  const src = vec4Source(ctx, pass.src);
  const so = perImage(src, pass.srcShape), dO = perImage(pass.dst, pass.dstShape);
  const bb = pass.bias ? bindWindow(ctx, pass.bias, 0, pass.dstShape[0]) : null;
  forImageChunks(ctx, what, a.n, [so, dO], (b0, count) => {
    const sb = bindBatch(ctx, so, b0, count, true), db = bindBatch(ctx, dO, b0, count);
    const [, sh, sw] = pass.srcShape, [oc, oh, ow] = pass.dstShape;
    dispatchGrid(ctx, [Math.ceil(tiles / wgX), rowsPad / tile, count * a.groups], {
      shader: "conv",
      entry: "conv_tiled",
      constants: { WG_X: wgX, ROWS: tile, KW: kwe, SW: wx.stride, DW: wx.step, BIAS: bb ? 1 : 0 },
      bindings: [sb.binding, wt, bb ? bb.binding : wt, db.binding],
      uniforms: (base) => ({
        src_c: pass.srcShape[0],
        src_h: sh,
        src_w: sw,
        groups: a.groups,
        cing,
        khe,
        dh: hy.step,
        sh: hy.stride,
        off_h: hy.offset,
        off_w: wx.offset,
        rows,
        rows_pad: rowsPad,
        pos_h: hy.count,
        pos_w: wx.count,
        out_c: oc,
        out_h: oh,
        out_w: ow,
        osh: hy.outStride,
        osw: wx.outStride,
        opy: hy.phase,
        opx: wx.phase,
        off_x: sb.rem,
        off_y: db.rem,
        off_bias: bb ? bb.rem : 0,
        base_x: base[0],
        base_y: base[1],
        base_z: base[2],
      }),
    });
  });
}

/**
 * depthwise.wgsl over all images. Forward: output channel oc reads source channel oc / multiplier with its
 * own weights. Input gradient: input channel ci gathers dy channels ci*multiplier + m with their weights.
 */
export function depthwisePass(
  ctx: GpuContext,
  what: string,
  w: Storage,
  a: Conv2dAttrs,
  pass: TiledPass,
  grad: boolean,
) {
  const { hy, wx } = pass;
  // More outputs per invocation share weight loads and segment overlap: 8 instead of 4 ran 1.4x faster on
  // llvmpipe, 16 another 1.3x while its segment stays short (stride 1); longer segments stop unrolling.
  const outs = wx.count > 8 && segment(wx, 16) <= 20
    ? 16
    : wx.count > 4 && segment(wx, 8) <= MAX_SEGMENT
    ? 8
    : 4;
  checkSegment(what, a, wx, outs);
  const mult = a.cout / a.cin;
  const taps = hy.taps > 0 && wx.taps > 0;
  const tiles = hy.count * Math.ceil(wx.count / outs);
  if (tiles === 0) return;
  const wgX = Math.min(64, pow2ceil(tiles));
  const src = vec4Source(ctx, pass.src);
  const so = perImage(src, pass.srcShape), dO = perImage(pass.dst, pass.dstShape);
  const wb = bindWindow(ctx, w, 0, a.cout * a.kh * a.kw);
  const bb = pass.bias ? bindWindow(ctx, pass.bias, 0, pass.dstShape[0]) : null;
  forImageChunks(ctx, what, a.n, [so, dO], (b0, count) => {
    const sb = bindBatch(ctx, so, b0, count, true), db = bindBatch(ctx, dO, b0, count);
    const [sc, sh, sw] = pass.srcShape, [oc, oh, ow] = pass.dstShape;
    dispatchGrid(ctx, [Math.ceil(tiles / wgX), 1, count * oc], {
      shader: "depthwise",
      entry: "depthwise",
      constants: {
        WG_X: wgX,
        OUTS: outs,
        KW: taps ? wx.taps : 1,
        SW: wx.stride,
        DW: wx.step,
        BIAS: bb ? 1 : 0,
      },
      bindings: [sb.binding, wb.binding, bb ? bb.binding : wb.binding, db.binding],
      uniforms: (base) => ({
        src_c: sc,
        src_h: sh,
        src_w: sw,
        out_c: oc,
        div: grad ? 1 : mult,
        mul: grad ? mult : 1,
        // cnt = 0 (no source channels) writes zeros: a stride phase that no tap reaches.
        cnt: taps ? (grad ? mult : 1) : 0,
        wsel: grad ? 1 : 0,
        khe: taps ? hy.taps : 0,
        dh: hy.step,
        sh: hy.stride,
        off_h: hy.offset,
        off_w: wx.offset,
        kh0: hy.k0,
        kh_step: hy.kStep,
        kw0: wx.k0,
        kw_step: wx.kStep,
        kh: a.kh,
        kw: a.kw,
        pos_h: hy.count,
        pos_w: wx.count,
        out_h: oh,
        out_w: ow,
        osh: hy.outStride,
        osw: wx.outStride,
        opy: hy.phase,
        opx: wx.phase,
        off_x: sb.rem,
        off_wt: wb.rem,
        off_y: db.rem,
        off_bias: bb ? bb.rem : 0,
        base_x: base[0],
        base_y: base[1],
        base_z: base[2],
      }),
    });
  });
}
