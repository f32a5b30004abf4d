/**
 * WebGPU reduce (kernels/reduce.wgsl): the middle axis of [outer, size, inner].
 *
 * Parallelism comes from outputs (outer * inner) and, when those are few, from cutting the size axis into
 * chunks whose partial results a second, much smaller reduction combines. Inputs over the binding limit run
 * as groups of segments whose windows fit.
 */
import type { Storage } from "../backend.ts";
import type { GpuContext, GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements } from "./kernel_grid.ts";
import { chunkLimit, grid2d, strideGroups, WG } from "./kernel_chunks.ts";
import { elementwiseKernels } from "./kernel_elementwise.ts";
import { OP_CODES } from "./_kernels_gen.ts";

export interface MiddleReduce {
  op: "sum" | "max";
  outer: number;
  size: number;
  inner: number;
  /** Multiplies a sum's result (1/size for a mean). */
  scale: number;
}

/** Workgroups (rows kernel) or invocations (cols kernel) below which the size axis is split. */
const ROW_TARGET = 256;
const COL_TARGET = 16384;

/** Reduce x [outer, size, inner] (size >= 1) into out [outer, inner]. */
export function reduceMiddle(ctx: GpuContext, x: Storage, out: Storage, r: MiddleReduce): void {
  const { outer, size, inner } = r;
  if (outer * inner === 0) return;
  // A workgroup per row only pays when rows are few and long; many rows get an invocation each (llvmpipe
  // runs barrier-heavy workgroups slowly: ~60 us each, 4 s for 70k rows; a layer norm's 4608 rows of 96
  // took 270 ms as workgroups, 3 ms as invocations). On GPUs a 256-wide workgroup on a short row idles too.
  const rows = inner === 1 && size >= 64 && outer < COL_TARGET && (outer < ROW_TARGET || size >= 1024);
  const outputs = outer * inner;
  let chunks = 1;
  if (rows && outer < ROW_TARGET) chunks = Math.min(Math.ceil(size / 1024), Math.ceil(ROW_TARGET / outer));
  if (!rows && outputs < COL_TARGET) chunks = Math.min(Math.ceil(size / 64), Math.ceil(COL_TARGET / outputs));
  let len = Math.ceil(size / Math.max(1, chunks));
  const large = x.length > maxBindingElements(ctx) || out.length > maxBindingElements(ctx);
  if (large) {
    const lim = chunkLimit(ctx);
    // Partials only shrink the problem if a window holds at least two rows of the size axis.
    if (2 * inner > lim) return reduceWide(ctx, x, out, r);
    len = Math.min(len, Math.floor(lim / inner));
  }
  chunks = Math.ceil(size / len);
  const target = chunks === 1 ? out : ctx.temp(outer * chunks * inner);
  const lim = ctx.limits.maxComputeWorkgroupsPerDimension;
  for (const [G0, G1] of segmentGroups(ctx, large, outer, size, inner, chunks, len)) {
    const o0 = Math.floor(G0 / chunks);
    const xs = (o0 * size + (G0 - o0 * chunks) * len) * inner;
    const oLast = Math.floor((G1 - 1) / chunks);
    const xe = (oLast * size + Math.min(size, ((G1 - 1 - oLast * chunks) + 1) * len)) * inner;
    const wx = bindWindow(ctx, x, xs, xe);
    const wo = bindWindow(ctx, target, G0 * inner, G1 * inner);
    // A rows dispatch covers at most lim x lim workgroups; the offsets map global indices either way.
    const step = rows ? lim * lim : G1 - G0;
    for (let g0 = G0; g0 < G1; g0 += step) {
      const segs = Math.min(step, G1 - g0);
      const [gx, gy] = rows ? grid2d(ctx, segs) : [strideGroups(ctx, segs * inner), 1];
      ctx.dispatch({
        shader: "reduce",
        entry: rows ? "reduce_rows" : "reduce_cols",
        constants: { WG, OP: OP_CODES.REDUCE[r.op === "max" ? "max" : "sum"] },
        bindings: [wx.binding, wo.binding],
        uniforms: {
          segs,
          seg0: g0,
          chunks,
          size,
          len,
          inner,
          x_off: wx.rem - xs,
          out_off: wo.rem - G0 * inner,
          gx,
          width: inner,
          accumulate: 0,
          scale: chunks === 1 ? r.scale : 1,
        },
        workgroups: [gx, gy],
      });
    }
  }
  if (chunks > 1) reduceMiddle(ctx, target, out, { ...r, size: chunks });
}

/**
 * Rows of the size axis too wide for partials (2 * inner over a window): each row o and block of inner
 * indices is combined into out over runs of the size axis, the first run writing and later ones
 * accumulating (the mean's scale applies on the last).
 */
function reduceWide(ctx: GpuContext, x: Storage, out: Storage, r: MiddleReduce): void {
  const { outer, size, inner } = r;
  const lim = chunkLimit(ctx);
  const block = Math.min(inner, lim);
  for (let o = 0; o < outer; o++) {
    for (let j0 = 0; j0 < inner; j0 += block) {
      const width = Math.min(block, inner - j0);
      const run = Math.max(1, Math.floor((lim - width) / inner) + 1);
      for (let s0 = 0; s0 < size; s0 += run) {
        const count = Math.min(run, size - s0);
        const xs = (o * size + s0) * inner + j0;
        const wx = bindWindow(ctx, x, xs, xs + (count - 1) * inner + width);
        const wo = bindWindow(ctx, out, o * inner + j0, o * inner + j0 + width);
        ctx.dispatch({
          shader: "reduce",
          entry: "reduce_cols",
          constants: { WG, OP: OP_CODES.REDUCE[r.op === "max" ? "max" : "sum"] },
          bindings: [wx.binding, wo.binding],
          uniforms: {
            segs: 1,
            seg0: 0,
            chunks: 1,
            size: count,
            len: count,
            inner,
            x_off: wx.rem,
            out_off: wo.rem,
            gx: 1,
            width,
            accumulate: s0 > 0 ? 1 : 0,
            scale: s0 + count === size ? r.scale : 1,
          },
          workgroups: [strideGroups(ctx, width)],
        });
      }
    }
  }
}

/**
 * Segments (row o, chunk k) -> g = o * chunks + k, grouped into dispatches: everything at once when the
 * storages fit a binding, else whole rows while they fit, else runs of chunks within one row.
 */
function segmentGroups(
  ctx: GpuContext,
  large: boolean,
  outer: number,
  size: number,
  inner: number,
  chunks: number,
  len: number,
): [number, number][] {
  const total = outer * chunks;
  if (!large) return [[0, total]];
  const lim = chunkLimit(ctx);
  const groups: [number, number][] = [];
  const rowsPer = Math.floor(lim / (size * inner));
  if (rowsPer >= 1) {
    for (let o = 0; o < outer; o += rowsPer) groups.push([o * chunks, Math.min(outer, o + rowsPer) * chunks]);
    return groups;
  }
  const chunksPer = Math.max(1, Math.floor(lim / (len * inner)));
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < chunks; k += chunksPer) {
      groups.push([o * chunks + k, o * chunks + Math.min(chunks, k + chunksPer)]);
    }
  }
  return groups;
}

export const reduceKernels: Pick<GpuKernelTable, "reduce"> = {
  reduce: ({ x, out, attrs }, ctx) => {
    const { op, outer, size, inner } = attrs;
    if (x.length < outer * size * inner || out.length < outer * inner) {
      throw new Error(
        `reduce(): x has ${x.length} and out ${out.length} elements for [${outer}, ${size}, ${inner}]`,
      );
    }
    if (size === 0) {
      // An empty reduction: sum 0, mean 0/0, max -Infinity (as the CPU reference).
      const value = op === "sum" ? 0 : op === "mean" ? NaN : -Infinity;
      elementwiseKernels.fill({ out, attrs: { n: outer * inner, value } }, ctx);
      return;
    }
    reduceMiddle(ctx, x, out, {
      op: op === "max" ? "max" : "sum",
      outer,
      size,
      inner,
      scale: op === "mean" ? 1 / size : 1,
    });
  },
};
