/**
 * WebGPU pooling (kernels/pool.wgsl): pool2d and pool2d_grad over whole image planes. Storages over the
 * binding limit run in chunks of planes (a plane never straddles two dispatches).
 */
import type { Storage } from "../backend.ts";
import type { Pool2dAttrs } from "../kernels.ts";
import type { GpuContext, GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements } from "./kernel_grid.ts";
import { chunkLimit, strideGroups, WG } from "./kernel_chunks.ts";
import { OP_CODES } from "./_kernels_gen.ts";

function check(what: string, a: Pool2dAttrs, sizes: [Storage | undefined, number, string][]): void {
  if (a.op === "avg" && (a.dilationH !== 1 || a.dilationW !== 1)) {
    throw new Error(
      `${what}(): average pooling with dilation ${a.dilationH}x${a.dilationW} is not supported`,
    );
  }
  for (const [s, need, name] of sizes) {
    if (s && s.length < need) throw new Error(`${what}(): ${name} has ${s.length} elements, ${need} needed`);
  }
}

/** Planes [p0, p0 + count) per dispatch so that every storage's window fits a binding. */
function planeChunks(ctx: GpuContext, planes: number, perPlane: [Storage, number][]): [number, number][] {
  const max = maxBindingElements(ctx);
  let count = planes;
  for (const [s, size] of perPlane) {
    if (s.length <= max) continue;
    const fit = Math.floor(chunkLimit(ctx) / Math.max(size, 1));
    if (fit < 1) {
      throw new Error(`pool2d(): one image plane of ${size} elements exceeds the storage binding limit`);
    }
    count = Math.min(count, fit);
  }
  const out: [number, number][] = [];
  for (let p = 0; p < planes; p += count) out.push([p, Math.min(count, planes - p)]);
  return out;
}

function uniforms(a: Pool2dAttrs, planes: number, offs: [number, number, number], withArgmax: boolean) {
  return {
    planes,
    h: a.h,
    w: a.w,
    kh: a.kh,
    kw: a.kw,
    sh: a.strideH,
    sw: a.strideW,
    pad_top: a.padTop,
    pad_left: a.padLeft,
    pad_bottom: a.padBottom,
    pad_right: a.padRight,
    dh: a.dilationH,
    dw: a.dilationW,
    out_h: a.outH,
    out_w: a.outW,
    count_include_pad: a.countIncludePad ? 1 : 0,
    with_argmax: withArgmax ? 1 : 0,
    x_off: offs[0],
    out_off: offs[1],
    idx_off: offs[2],
  };
}

export const poolKernels: Pick<GpuKernelTable, "pool2d" | "pool2d_grad"> = {
  pool2d: ({ x, out, argmax, attrs: a }, ctx) => {
    const planes = a.n * a.c, ip = a.h * a.w, op = a.outH * a.outW;
    const idx = a.op === "max" ? argmax : undefined;
    check("pool2d", a, [[x, planes * ip, "x"], [out, planes * op, "out"], [idx, planes * op, "argmax"]]);
    if (planes * op === 0) return;
    const per: [Storage, number][] = [[x, ip], [out, op]];
    if (idx) per.push([idx, op]);
    for (const [p0, count] of planeChunks(ctx, planes, per)) {
      const wx = bindWindow(ctx, x, p0 * ip, (p0 + count) * ip);
      const wo = bindWindow(ctx, out, p0 * op, (p0 + count) * op);
      // Without argmax its (never written) binding gets a 1-word scratch: two writable bindings of one
      // buffer would alias.
      const wi = idx
        ? bindWindow(ctx, idx, p0 * op, (p0 + count) * op)
        : { binding: ctx.temp(1, "u32"), rem: 0 };
      ctx.dispatch({
        shader: "pool",
        entry: "pool2d",
        constants: { WG, OP: OP_CODES.POOL[a.op] },
        bindings: [wx.binding, wo.binding, wi.binding],
        uniforms: uniforms(a, count, [wx.rem, wo.rem, idx ? wi.rem : 0], idx !== undefined),
        workgroups: [strideGroups(ctx, count * op)],
      });
    }
  },

  pool2d_grad: ({ dy, argmax, out, attrs: a }, ctx) => {
    const planes = a.n * a.c, ip = a.h * a.w, op = a.outH * a.outW;
    const idx = a.op === "max" ? argmax : undefined;
    if (a.op === "max" && !idx) throw new Error("pool2d_grad(): max pooling needs argmax");
    check("pool2d_grad", a, [[dy, planes * op, "dy"], [out, planes * ip, "out"], [
      idx,
      planes * op,
      "argmax",
    ]]);
    if (planes * ip === 0) return;
    const per: [Storage, number][] = [[dy, op], [out, ip]];
    if (idx) per.push([idx, op]);
    for (const [p0, count] of planeChunks(ctx, planes, per)) {
      const wd = bindWindow(ctx, dy, p0 * op, (p0 + count) * op);
      const wo = bindWindow(ctx, out, p0 * ip, (p0 + count) * ip);
      const wi = idx ? bindWindow(ctx, idx, p0 * op, (p0 + count) * op) : wd;
      ctx.dispatch({
        shader: "pool",
        entry: "pool2d_grad",
        constants: { WG, OP: OP_CODES.POOL[a.op] },
        bindings: [wd.binding, wi.binding, wo.binding],
        // In the gradient entry x_off is dx's window offset and out_off dy's.
        uniforms: uniforms(a, count, [wo.rem, wd.rem, idx ? wi.rem : 0], idx !== undefined),
        workgroups: [strideGroups(ctx, count * ip)],
      });
    }
  },
};
