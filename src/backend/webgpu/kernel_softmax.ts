/** WebGPU row-wise softmax / log-softmax (kernels/softmax.wgsl). Large inputs run in blocks of rows. */
import type { GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements } from "./kernel_grid.ts";
import { chunkLimit, grid2d, strideGroups, WG } from "./kernel_chunks.ts";

/** Rows up to this many columns, or this many rows, get one invocation each; else one workgroup each. */
const SMALL_COLS = 64;
const MANY_ROWS = 16384;

export const softmaxKernels: Pick<GpuKernelTable, "softmax"> = {
  softmax: ({ x, out, attrs }, ctx) => {
    const { rows, cols, log } = attrs;
    if (rows * cols === 0) return;
    if (x.length < rows * cols || out.length < rows * cols) {
      throw new Error(`softmax(): x has ${x.length} and out ${out.length} elements for [${rows}, ${cols}]`);
    }
    const max = maxBindingElements(ctx);
    let block = rows;
    if (x.length > max || out.length > max) {
      block = Math.floor(chunkLimit(ctx) / cols);
      if (block < 1) throw new Error(`softmax(): a row of ${cols} columns exceeds the storage binding limit`);
    }
    const small = cols <= SMALL_COLS || rows >= MANY_ROWS;
    // A workgroup per row: at most lim x lim rows per dispatch.
    const lim = ctx.limits.maxComputeWorkgroupsPerDimension;
    if (!small) block = Math.min(block, lim * lim);
    for (let r0 = 0; r0 < rows; r0 += block) {
      const count = Math.min(block, rows - r0);
      const wx = bindWindow(ctx, x, r0 * cols, (r0 + count) * cols);
      const wo = bindWindow(ctx, out, r0 * cols, (r0 + count) * cols);
      const [gx, gy] = small ? [strideGroups(ctx, count), 1] : grid2d(ctx, count);
      ctx.dispatch({
        shader: "softmax",
        entry: small ? "softmax_small" : "softmax_rows",
        constants: { WG, LOG: log ? 1 : 0 },
        bindings: [wx.binding, wo.binding],
        uniforms: { rows: count, cols, x_off: wx.rem, out_off: wo.rem, gx },
        workgroups: [gx, gy],
      });
    }
  },
};
