/**
 * WebGPU saved-activation codec kernels (kernels/quant.wgsl): quantize (min/max pass, then pack pass),
 * dequantize, f16_pack, f16_unpack. Storages over the binding limit run in chunks of whole groups and whole
 * words; the small params storage is bound whole.
 */
import type { Storage } from "../backend.ts";
import type { GpuContext, GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements } from "./kernel_grid.ts";
import { elementChunks, strideGroups } from "./kernel_chunks.ts";

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function checkQuant(
  kernel: string,
  attrs: { n: number; bits: number; groupSize: number },
  params: Storage,
): void {
  const { n, bits, groupSize } = attrs;
  if (bits !== 4 && bits !== 8) throw new Error(`${kernel}(): bits must be 4 or 8, got ${bits}`);
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new Error(`${kernel}(): groupSize must be a positive integer, got ${groupSize}`);
  }
  const need = 2 * Math.ceil(n / groupSize);
  if (params.length < need) {
    throw new Error(`${kernel}(): params has ${params.length} elements, ${need} needed`);
  }
}

/** Chunks of [0, n) that start at multiples of the group size and of 8 (whole groups, whole words). */
function quantChunks(ctx: GpuContext, n: number, groupSize: number, storages: Storage[], params: Storage) {
  if (params.length > maxBindingElements(ctx)) {
    throw new Error(`quantize(): ${params.length} group parameters exceed the storage binding limit`);
  }
  return elementChunks(ctx, n, storages, (groupSize * 8) / gcd(groupSize, 8));
}

export const quantKernels: Pick<GpuKernelTable, "quantize" | "dequantize" | "f16_pack" | "f16_unpack"> = {
  quantize: ({ x, params, out, attrs }, ctx) => {
    checkQuant("quantize", attrs, params);
    const { n, bits, groupSize } = attrs;
    const per = 32 / bits;
    for (const [start, len] of quantChunks(ctx, n, groupSize, [x, out], params)) {
      const wx = bindWindow(ctx, x, start, start + len);
      const wo = bindWindow(ctx, out, start / per, start / per + Math.ceil(len / per));
      ctx.dispatch({
        shader: "quant",
        entry: "quant_params",
        constants: { BITS: bits },
        bindings: [wx.binding, params],
        uniforms: { n: len, first: start, group: groupSize, x_off: wx.rem, out_off: 0 },
        workgroups: [strideGroups(ctx, Math.ceil(len / groupSize))],
      });
      ctx.dispatch({
        shader: "quant",
        entry: "quant_pack",
        constants: { BITS: bits },
        bindings: [wx.binding, params, wo.binding],
        uniforms: { n: len, first: start, group: groupSize, x_off: wx.rem, out_off: wo.rem },
        workgroups: [strideGroups(ctx, Math.ceil(len / per))],
      });
    }
  },

  dequantize: ({ packed, params, out, attrs }, ctx) => {
    checkQuant("dequantize", attrs, params);
    const { n, bits, groupSize } = attrs;
    const per = 32 / bits;
    for (const [start, len] of quantChunks(ctx, n, groupSize, [packed, out], params)) {
      const wp = bindWindow(ctx, packed, start / per, start / per + Math.ceil(len / per));
      const wo = bindWindow(ctx, out, start, start + len);
      ctx.dispatch({
        shader: "quant",
        entry: "dequantize",
        constants: { BITS: bits },
        bindings: [wp.binding, params, wo.binding],
        uniforms: { n: len, first: start, group: groupSize, x_off: wp.rem, out_off: wo.rem },
        workgroups: [strideGroups(ctx, len)],
      });
    }
  },

  f16_pack: ({ x, out, attrs }, ctx) => {
    const { n } = attrs;
    if (out.length < Math.ceil(n / 2)) {
      throw new Error(`f16_pack(): out has ${out.length} words, ${Math.ceil(n / 2)} needed`);
    }
    for (const [start, len] of elementChunks(ctx, n, [x, out], 2)) {
      const wx = bindWindow(ctx, x, start, start + len);
      const wo = bindWindow(ctx, out, start / 2, start / 2 + Math.ceil(len / 2));
      ctx.dispatch({
        shader: "quant",
        entry: "f16_pack",
        bindings: [wx.binding, wo.binding],
        uniforms: { n: len, first: start, group: 1, x_off: wx.rem, out_off: wo.rem },
        workgroups: [strideGroups(ctx, Math.ceil(len / 2))],
      });
    }
  },

  f16_unpack: ({ packed, out, attrs }, ctx) => {
    for (const [start, len] of elementChunks(ctx, attrs.n, [packed, out], 2)) {
      const wp = bindWindow(ctx, packed, start / 2, start / 2 + Math.ceil(len / 2));
      const wo = bindWindow(ctx, out, start, start + len);
      ctx.dispatch({
        shader: "quant",
        entry: "f16_unpack",
        bindings: [wp.binding, wo.binding],
        uniforms: { n: len, first: start, group: 1, x_off: wp.rem, out_off: wo.rem },
        workgroups: [strideGroups(ctx, len)],
      });
    }
  },
};
