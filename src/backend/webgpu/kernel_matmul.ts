/**
 * WebGPU matmul (kernels/matmul.wgsl) and the GEMM entry the convolution kernels reuse (a 1x1 convolution
 * is out[n] = W @ X[n] with a per-row bias; its input gradient is W^T @ dY[n]).
 */
import type { Storage } from "../backend.ts";
import type { GpuContext, GpuKernelTable } from "./context.ts";
import { batchesThatFit, bindBatch, dispatchGrid, pow2ceil, type Strided } from "./kernel_grid.ts";

export interface Gemm {
  a: Storage;
  b: Storage;
  /** Added per column (bias[n], kernels.ts) or per row (bias[m], convolutions). */
  bias?: Storage;
  biasPer?: "column" | "row";
  out: Storage;
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  strideA: number;
  strideB: number;
  strideC: number;
  /** Element offsets of batch item 0 (default 0). */
  offA?: number;
  offB?: number;
  offC?: number;
  offBias?: number;
  /**
   * Sum kBatch products per output (default 1): op(A + kb*kStrideA) op(B + kb*kStrideB), kb < kBatch, e.g.
   * over the images of a 1x1 convolution's weight gradient.
   */
  kBatch?: number;
  kStrideA?: number;
  kStrideB?: number;
  accumulate: boolean;
}

/** Tile shape of one dispatch: `rows` x 4 outputs per invocation, wgX x wgY invocations per workgroup. */
export interface GemmTile {
  wgX: number;
  wgY: number;
  rows: number;
}

/**
 * Aim for 64 invocations per workgroup, spread first along N (contiguous in C and, untransposed, in B) so
 * small-N problems (late conv layers: N = 7x7) do not idle most of a workgroup.
 */
export function gemmTile(m: number, n: number): GemmTile {
  const rows = m >= 32 ? 8 : 4;
  const wgX = Math.min(16, pow2ceil(Math.ceil(n / 4)));
  const wgY = Math.max(1, Math.min(64 / wgX, pow2ceil(Math.ceil(m / rows))));
  return { wgX, wgY, rows };
}

function canVec4(g: Gemm, ctx: GpuContext): boolean {
  const words = [g.k, g.n, g.strideA, g.strideB, g.strideC, g.offA ?? 0, g.offB ?? 0, g.offC ?? 0];
  words.push(g.kStrideA ?? 0, g.kStrideB ?? 0);
  if (g.transA) words.push(g.m);
  // Windows start at multiples of the offset alignment; their remainders stay multiples of 4 only if it is.
  const alignWords = ctx.limits.minStorageBufferOffsetAlignment / 4;
  return alignWords % 4 === 0 && words.every((w) => w % 4 === 0);
}

/** Run one (batched) GEMM, splitting batches, rows and grids to fit the device's limits. */
export function gemm(ctx: GpuContext, g: Gemm, tile?: GemmTile): void {
  const { m, n, k } = g;
  if (m === 0 || n === 0 || g.batch === 0) return;
  if (k === 0) throw new Error(`matmul: k = 0 is not supported (m=${m}, n=${n})`);
  const kb = g.kBatch ?? 1, ksa = g.kStrideA ?? 0, ksb = g.kStrideB ?? 0;
  const ops: Strided[] = [
    { storage: g.a, offset: g.offA ?? 0, stride: g.strideA, size: (kb - 1) * ksa + m * k },
    { storage: g.b, offset: g.offB ?? 0, stride: g.strideB, size: (kb - 1) * ksb + k * n },
    { storage: g.out, offset: g.offC ?? 0, stride: g.strideC, size: m * n },
  ];
  const vec4 = canVec4(g, ctx);
  const t = tile ?? gemmTile(m, n);
  const bias = g.bias
    ? { storage: g.bias, offset: g.offBias ?? 0, stride: 0, size: g.biasPer === "row" ? m : n }
    : null;
  for (let b0 = 0; b0 < g.batch;) {
    const count = batchesThatFit(ctx, bias ? [...ops, bias] : ops, g.batch - b0);
    if (count === 0) {
      splitRows(ctx, g, b0, t);
      b0++;
      continue;
    }
    const [wa, wb, wc] = ops.map((op) => bindBatch(ctx, op, b0, count));
    const wbias = bias ? bindBatch(ctx, bias, 0, 1) : wa;
    const grid: [number, number, number] = [
      Math.ceil(n / 4 / t.wgX),
      Math.ceil(m / t.rows / t.wgY),
      count,
    ];
    dispatchGrid(ctx, grid, {
      shader: "matmul",
      entry: vec4 ? "matmul_vec4" : "matmul_scalar",
      constants: {
        WG_X: t.wgX,
        WG_Y: t.wgY,
        ROWS: t.rows,
        TRANS_A: g.transA ? 1 : 0,
        TRANS_B: g.transB ? 1 : 0,
        BIAS: bias ? (g.biasPer === "row" ? 2 : 1) : 0,
        ACCUMULATE: g.accumulate ? 1 : 0,
      },
      bindings: [wa.binding, wb.binding, wbias.binding, wc.binding],
      uniforms: (base) => ({
        m,
        n,
        k,
        stride_a: g.strideA,
        stride_b: g.strideB,
        stride_c: g.strideC,
        off_a: wa.rem,
        off_b: wb.rem,
        off_c: wc.rem,
        off_bias: bias ? wbias.rem : 0,
        base_x: base[0],
        base_y: base[1],
        base_z: base[2],
        kbatch: kb,
        kstride_a: ksa,
        kstride_b: ksb,
      }),
    });
    b0 += count;
  }
}

/**
 * One batch item too large for a binding: run it as blocks of rows. Only rows of an untransposed A and of
 * C are contiguous, so B (and a transposed A) must fit whole.
 */
function splitRows(ctx: GpuContext, g: Gemm, b: number, tile: GemmTile): void {
  const max = Math.floor(ctx.limits.maxStorageBufferBindingSize / 4) -
    ctx.limits.minStorageBufferOffsetAlignment / 4;
  const shape = `[${g.m}, ${g.k}] x [${g.k}, ${g.n}]`;
  if (g.transA || ((g.kBatch ?? 1) - 1) * (g.kStrideB ?? 0) + g.k * g.n > max) {
    throw new Error(
      `matmul: ${shape} (transA=${g.transA}) cannot be split to fit the ` +
        `${ctx.limits.maxStorageBufferBindingSize}-byte storage binding limit`,
    );
  }
  const spanA = ((g.kBatch ?? 1) - 1) * (g.kStrideA ?? 0);
  const rows = Math.floor((max - spanA) / Math.max(g.k, g.n));
  if (rows < 1) {
    throw new Error(
      `matmul: one row of ${shape} over ${g.kBatch ?? 1} k-batches exceeds the ` +
        `${ctx.limits.maxStorageBufferBindingSize}-byte storage binding limit`,
    );
  }
  const offA = (g.offA ?? 0) + b * g.strideA, offC = (g.offC ?? 0) + b * g.strideC;
  for (let m0 = 0; m0 < g.m; m0 += rows) {
    const mm = Math.min(rows, g.m - m0);
    gemm(ctx, {
      ...g,
      batch: 1,
      m: mm,
      offA: offA + m0 * g.k,
      offB: (g.offB ?? 0) + b * g.strideB,
      offC: offC + m0 * g.n,
      offBias: (g.offBias ?? 0) + (g.biasPer === "row" ? m0 : 0),
    }, tile);
  }
}

export const matmulKernels: Pick<GpuKernelTable, "matmul"> = {
  matmul: ({ a, b, bias, out, attrs }, ctx) => {
    gemm(ctx, { a, b, bias, out, ...attrs });
  },
};
