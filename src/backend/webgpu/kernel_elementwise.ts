/**
 * WebGPU elementwise kernels (kernels/elementwise.wgsl, kernels/mask.wgsl): fill, copy, unary, unary_grad,
 * mask_pack, mask_grad, binary, axpy. Storages over the binding limit run in chunks over n.
 */
import type { Storage } from "../backend.ts";
import type { BinaryOp, UnaryOp } from "../kernels.ts";
import type { GpuContext, GpuKernelTable, SameKeys } from "./context.ts";
import { OP_CODES } from "./_kernels_gen.ts";
import { bindWindow, maxBindingElements, type Window } from "./kernel_grid.ts";
import { chunkLimit, elementChunks, strideGroups, WG } from "./kernel_chunks.ts";

/** Op codes of elementwise.wgsl's OP override, keyed by kernels.ts's op names (generated from the WGSL). */
export const UNARY_OPS: Readonly<Record<UnaryOp, number>> = OP_CODES.UNARY;
export const BINARY_OPS: Readonly<Record<BinaryOp, number>> = OP_CODES.BINARY;
// Both directions: an op kernels.ts names but the WGSL lacks, or a WGSL code kernels.ts does not name, fails
// to compile here.
const _unaryTotal: SameKeys<UnaryOp, keyof typeof OP_CODES.UNARY> = true;
const _binaryTotal: SameKeys<BinaryOp, keyof typeof OP_CODES.BINARY> = true;
void _unaryTotal, _binaryTotal;

function opCode<T extends string>(table: Record<T, number>, op: T, kernel: string): number {
  const code = table[op];
  if (code === undefined) throw new Error(`${kernel}(): unknown op "${op}"`);
  return code;
}

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);

/** Run `fn` over element chunks, binding each listed storage's window [offset + start, + length). */
function chunked(
  ctx: GpuContext,
  kernel: string,
  n: number,
  views: { s: Storage; offset?: number }[],
  fn: (len: number, wins: Window[]) => void,
): void {
  for (const v of views) checkLength(kernel, `storage ${v.s.id}`, v.s, (v.offset ?? 0) + n);
  for (const [start, len] of elementChunks(ctx, n, views.map((v) => v.s))) {
    fn(len, views.map((v) => bindWindow(ctx, v.s, (v.offset ?? 0) + start, (v.offset ?? 0) + start + len)));
  }
}

function checkLength(kernel: string, name: string, s: Storage, need: number): void {
  if (s.length < need) throw new Error(`${kernel}(): ${name} has ${s.length} elements, ${need} needed`);
}

export const elementwiseKernels: Pick<
  GpuKernelTable,
  "fill" | "copy" | "unary" | "unary_grad" | "mask_pack" | "mask_grad" | "binary" | "axpy"
> = {
  fill: ({ out, attrs }, ctx) => {
    f32Bits[0] = attrs.value;
    const bits = out.dtype === "u32" ? attrs.value >>> 0 : u32Bits[0];
    chunked(ctx, "fill", attrs.n, [{ s: out }], (len, [o]) => {
      ctx.dispatch({
        shader: "elementwise",
        entry: "fill",
        constants: { WG },
        bindings: [o.binding],
        uniforms: { n: len, out_off: o.rem, bits },
        workgroups: [strideGroups(ctx, len)],
      });
    });
  },

  copy: ({ x, out, attrs }, ctx) => {
    const { n, srcOffset, dstOffset } = attrs;
    chunked(ctx, "copy", n, [{ s: x, offset: srcOffset }, { s: out, offset: dstOffset }], (len, [wx, wo]) => {
      ctx.dispatch({
        shader: "elementwise",
        entry: "copy",
        constants: { WG },
        bindings: [wx.binding, wo.binding],
        uniforms: { n: len, x_off: wx.rem, out_off: wo.rem },
        workgroups: [strideGroups(ctx, len)],
      });
    });
  },

  unary: ({ x, out, attrs }, ctx) => {
    const OP = opCode(UNARY_OPS, attrs.op, "unary");
    chunked(ctx, "unary", attrs.n, [{ s: x }, { s: out }], (len, [wx, wo]) => {
      ctx.dispatch({
        shader: "elementwise",
        entry: "unary",
        constants: { WG, OP },
        bindings: [wx.binding, wo.binding],
        uniforms: { n: len, x_off: wx.rem, out_off: wo.rem, alpha: attrs.alpha ?? 0, beta: attrs.beta ?? 0 },
        workgroups: [strideGroups(ctx, len)],
      });
    });
  },

  unary_grad: ({ x, dy, out, attrs }, ctx) => {
    const OP = opCode(UNARY_OPS, attrs.op, "unary_grad");
    chunked(ctx, "unary_grad", attrs.n, [{ s: x }, { s: dy }, { s: out }], (len, [wx, wd, wo]) => {
      ctx.dispatch({
        shader: "elementwise",
        entry: "unary_grad",
        constants: { WG, OP },
        bindings: [wx.binding, wd.binding, wo.binding],
        uniforms: {
          n: len,
          x_off: wx.rem,
          dy_off: wd.rem,
          out_off: wo.rem,
          alpha: attrs.alpha ?? 0,
          beta: attrs.beta ?? 0,
        },
        workgroups: [strideGroups(ctx, len)],
      });
    });
  },

  mask_pack: ({ x, out, attrs }, ctx) => {
    const { n, lo, hi } = attrs;
    checkLength("mask_pack", "out", out, Math.ceil(n / 32));
    // Chunks start at multiples of 32 elements so each owns whole words.
    for (const [start, len] of elementChunks(ctx, n, [x, out], 32)) {
      const wx = bindWindow(ctx, x, start, start + len);
      const words = Math.ceil(len / 32);
      const wo = bindWindow(ctx, out, start / 32, start / 32 + words);
      ctx.dispatch({
        shader: "mask",
        entry: "mask_pack",
        constants: { WG },
        bindings: [wx.binding, wo.binding],
        uniforms: { n: len, words, x_off: wx.rem, out_off: wo.rem, lo, hi },
        workgroups: [strideGroups(ctx, words)],
      });
    }
  },

  mask_grad: ({ mask, dy, out, attrs }, ctx) => {
    for (const [start, len] of elementChunks(ctx, attrs.n, [mask, dy, out], 32)) {
      const wm = bindWindow(ctx, mask, start / 32, start / 32 + Math.ceil(len / 32));
      const wd = bindWindow(ctx, dy, start, start + len);
      const wo = bindWindow(ctx, out, start, start + len);
      ctx.dispatch({
        shader: "mask",
        entry: "mask_grad",
        constants: { WG },
        bindings: [wm.binding, wd.binding, wo.binding],
        uniforms: { n: len, mask_off: wm.rem, dy_off: wd.rem, out_off: wo.rem, scale: attrs.scale },
        workgroups: [strideGroups(ctx, len)],
      });
    }
  },

  axpy: ({ x, out, attrs }, ctx) => {
    chunked(ctx, "axpy", attrs.n, [{ s: x }, { s: out }], (len, [wx, wo]) => {
      ctx.dispatch({
        shader: "elementwise",
        entry: "axpy",
        constants: { WG },
        bindings: [wx.binding, wo.binding],
        uniforms: {
          n: len,
          x_off: wx.rem,
          out_off: wo.rem,
          accumulate: attrs.accumulate ? 1 : 0,
          alpha: attrs.alpha,
        },
        workgroups: [strideGroups(ctx, len)],
      });
    });
  },

  binary: ({ a, b, out, attrs }, ctx) => {
    const { shape, aStrides, bStrides } = attrs;
    if (shape.length > 6 || aStrides.length !== shape.length || bStrides.length !== shape.length) {
      throw new Error(
        `binary(): shape [${shape}] with strides [${aStrides}] / [${bStrides}] must have equal ranks <= 6`,
      );
    }
    const total = shape.reduce((p, d) => p * d, 1);
    if (total === 0) return;
    const [sh, as, bs] = simplify(shape, aStrides, bStrides);
    binaryPart(ctx, { a, b, out, op: opCode(BINARY_OPS, attrs.op, "binary") }, sh, as, bs, [0, 0, 0]);
  },
};

/** Drop size-1 dims and merge neighbours that are contiguous in both inputs (the output is dense). */
export function simplify(shape: number[], as: number[], bs: number[]): [number[], number[], number[]] {
  const s: number[] = [], a: number[] = [], b: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = s.length - 1;
    if (last >= 0 && a[last] === as[d] * shape[d] && b[last] === bs[d] * shape[d]) {
      s[last] *= shape[d];
      a[last] = as[d];
      b[last] = bs[d];
    } else {
      s.push(shape[d]);
      a.push(as[d]);
      b.push(bs[d]);
    }
  }
  return s.length ? [s, a, b] : [[1], [0], [0]];
}

interface BinaryJob {
  a: Storage;
  b: Storage;
  out: Storage;
  op: number;
}

/** Largest input index offset over a shape: sum of (dim - 1) * stride. */
function extent(shape: number[], strides: number[]): number {
  return shape.reduce((e, d, i) => e + (d - 1) * strides[i], 0);
}

/**
 * The sub-problem `shape` whose element 0 sits at `base` = [a, b, out]. When a storage over the binding
 * limit is involved, it runs as chunks of its outermost dim, or recurses into each outer index when even
 * one index of that dim is too large for a window.
 */
function binaryPart(
  ctx: GpuContext,
  job: BinaryJob,
  shape: number[],
  as: number[],
  bs: number[],
  base: [number, number, number],
): void {
  const max = maxBindingElements(ctx), lim = chunkLimit(ctx);
  const small = [job.a, job.b, job.out].map((s) => s.length <= max);
  const inner = shape.slice(1).reduce((p, d) => p * d, 1);
  const spanA = extent(shape.slice(1), as.slice(1)) + 1, spanB = extent(shape.slice(1), bs.slice(1)) + 1;
  let count = shape[0];
  if (!small[0] && as[0] > 0) count = Math.min(count, Math.floor((lim - spanA) / as[0]) + 1);
  if (!small[1] && bs[0] > 0) count = Math.min(count, Math.floor((lim - spanB) / bs[0]) + 1);
  if (!small[2]) count = Math.min(count, Math.floor(lim / inner));
  if (count < 1 || (!small[0] && spanA > lim) || (!small[1] && spanB > lim)) {
    if (shape.length === 1) {
      throw new Error(`binary(): cannot split [${shape}] to fit the storage binding limit`);
    }
    for (let i = 0; i < shape[0]; i++) {
      const next: [number, number, number] = [base[0] + i * as[0], base[1] + i * bs[0], base[2] + i * inner];
      binaryPart(ctx, job, shape.slice(1), as.slice(1), bs.slice(1), next);
    }
    return;
  }
  const pad = 6 - shape.length;
  const dims = [
    ...Array(pad).fill(1),
    ...shape,
    ...Array(pad).fill(0),
    ...as,
    ...Array(pad).fill(0),
    ...bs,
  ];
  for (let p = 0; p < shape[0]; p += count) {
    const c = Math.min(count, shape[0] - p);
    const a0 = base[0] + p * as[0], b0 = base[1] + p * bs[0], o0 = base[2] + p * inner;
    const wa = bindWindow(ctx, job.a, a0, a0 + (c - 1) * as[0] + spanA);
    const wb = bindWindow(ctx, job.b, b0, b0 + (c - 1) * bs[0] + spanB);
    const wo = bindWindow(ctx, job.out, o0, o0 + c * inner);
    const n = c * inner;
    ctx.dispatch({
      shader: "elementwise",
      entry: "binary",
      constants: { WG, OP: job.op },
      bindings: [wa.binding, wb.binding, wo.binding],
      // The shader decomposes r = p*inner + i over `shape`; subtracting p's part from the offsets maps the
      // decomposed input index into each window (modulo 2^32).
      uniforms: {
        dims,
        n,
        r0: p * inner,
        a_off: wa.rem - p * as[0],
        b_off: wb.rem - p * bs[0],
        out_off: wo.rem,
      },
      workgroups: [strideGroups(ctx, n)],
    });
  }
}
