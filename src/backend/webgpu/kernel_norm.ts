/**
 * WebGPU batch-norm kernels (kernels/norm.wgsl): bn_stats, bn_apply, bn_grad_reduce, bn_grad_input.
 *
 * The per-channel reductions run one workgroup per (chunk, channel); with few channels a channel's
 * n*hw elements are cut into chunks whose partials a second dispatch merges. Inputs over the binding limit
 * are chunked by whole samples so every window holds complete [c, hw] blocks.
 */
import type { Storage } from "../backend.ts";
import type { Binding, GpuContext, GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements } from "./kernel_grid.ts";
import { chunkLimit, elementChunks, strideGroups, WG } from "./kernel_chunks.ts";
import { elementwiseKernels } from "./kernel_elementwise.ts";
import { reduceMiddle } from "./kernel_reduce.ts";

const WG_TARGET = 256;

interface ChannelChunks {
  chunks: number;
  len: number;
  /** Dispatches: chunks [k0, k1) whose inputs are bound over elements [xs, xe). */
  groups: { k0: number; k1: number; xs: number; xe: number }[];
}

/** How a per-channel reduction over x [n, c, hw] is cut into chunks and dispatches. */
function planChannels(ctx: GpuContext, inputs: Storage[], n: number, c: number, hw: number): ChannelChunks {
  const m = n * hw, total = n * c * hw;
  if (inputs.every((s) => s.length <= maxBindingElements(ctx))) {
    const chunks = c >= WG_TARGET ? 1 : Math.max(1, Math.min(Math.ceil(m / 1024), Math.ceil(WG_TARGET / c)));
    const len = Math.ceil(m / chunks);
    return { chunks: Math.ceil(m / len), len, groups: [{ k0: 0, k1: Math.ceil(m / len), xs: 0, xe: total }] };
  }
  const perSample = c * hw;
  const samples = Math.floor(chunkLimit(ctx) / perSample);
  if (samples < 1) {
    throw new Error(`batch norm: one sample [${c}, ${hw}] exceeds the storage binding limit`);
  }
  const chunks = Math.ceil(n / samples);
  const groups = [];
  for (let k = 0; k < chunks; k++) {
    groups.push({
      k0: k,
      k1: k + 1,
      xs: k * samples * perSample,
      xe: Math.min(n, (k + 1) * samples) * perSample,
    });
  }
  return { chunks, len: samples * hw, groups };
}

/** Dispatch the chunk grid [k1 - k0, c] of a reduction entry, splitting channels over 65535. */
function dispatchChannels(
  ctx: GpuContext,
  entry: "bn_stats" | "bn_stats_partial" | "bn_grad_reduce" | "bn_grad_reduce_partial",
  plan: ChannelChunks,
  dims: { n: number; c: number; hw: number },
  bind: (xs: number, xe: number) => { bindings: Binding[]; offs: [number, number] },
): void {
  const lim = ctx.limits.maxComputeWorkgroupsPerDimension;
  const m = dims.n * dims.hw;
  for (const g of plan.groups) {
    const { bindings, offs } = bind(g.xs, g.xe);
    for (let k0 = g.k0; k0 < g.k1; k0 += lim) {
      for (let c0 = 0; c0 < dims.c; c0 += lim) {
        ctx.dispatch({
          shader: "norm",
          entry,
          constants: { WG },
          bindings,
          uniforms: {
            c: dims.c,
            hw: dims.hw,
            m,
            chunks: plan.chunks,
            len: plan.len,
            k0,
            c0,
            x_off: offs[0],
            y_off: offs[1],
          },
          workgroups: [Math.min(lim, g.k1 - k0), Math.min(lim, dims.c - c0)],
        });
      }
    }
  }
}

/** Elementwise pass over n*c*hw elements: chunk windows for the big tensors, small ones bound whole. */
function applyChunks(
  ctx: GpuContext,
  entry: "bn_apply" | "bn_apply_xhat" | "bn_grad_input" | "bn_grad_input_eval",
  total: number,
  big: (Storage | null)[],
  small: (Storage | null)[],
  layout: (bigBindings: Binding[], small: Storage[]) => Binding[],
  dims: { c: number; hw: number; eps: number; m: number },
): void {
  const bigs = big.filter((s): s is Storage => s !== null);
  for (const [start, len] of elementChunks(ctx, total, bigs)) {
    const wins = big.map((s) => (s ? bindWindow(ctx, s, start, start + len) : null));
    ctx.dispatch({
      shader: "norm",
      entry,
      constants: { WG },
      bindings: layout(wins.map((w) => w?.binding ?? wins[0]!.binding), small.map((s) => s ?? bigs[0])),
      uniforms: {
        n: len,
        start,
        c: dims.c,
        hw: dims.hw,
        x_off: wins[0]!.rem,
        out_off: wins[1]?.rem ?? 0,
        h_off: wins[2]?.rem ?? 0,
        eps: dims.eps,
        m: dims.m,
      },
      workgroups: [strideGroups(ctx, len)],
    });
  }
}

export const normKernels: Pick<GpuKernelTable, "bn_stats" | "bn_apply" | "bn_grad_reduce" | "bn_grad_input"> =
  {
    bn_stats: ({ x, mean, variance, attrs }, ctx) => {
      const { n, c, hw } = attrs;
      if (c === 0) return;
      if (n * hw === 0) {
        for (const out of [mean, variance]) {
          elementwiseKernels.fill({ out, attrs: { n: c, value: NaN } }, ctx);
        }
        return;
      }
      const plan = planChannels(ctx, [x], n, c, hw);
      const part = plan.chunks > 1 ? ctx.temp(c * plan.chunks * 3) : mean;
      dispatchChannels(ctx, plan.chunks > 1 ? "bn_stats_partial" : "bn_stats", plan, attrs, (xs, xe) => {
        const wx = bindWindow(ctx, x, xs, xe);
        return { bindings: [wx.binding, mean, variance, part], offs: [wx.rem - xs, 0] };
      });
      if (plan.chunks > 1) {
        ctx.dispatch({
          shader: "norm",
          entry: "bn_stats_merge",
          constants: { WG },
          bindings: [x, mean, variance, part],
          uniforms: {
            c,
            hw,
            m: n * hw,
            chunks: plan.chunks,
            len: plan.len,
            k0: 0,
            c0: 0,
            x_off: 0,
            y_off: 0,
          },
          workgroups: [strideGroups(ctx, c)],
        });
      }
    },

    bn_grad_reduce: ({ dy, xhat, sumDy, sumDyXhat, attrs }, ctx) => {
      const { n, c, hw } = attrs;
      if (c === 0) return;
      if (n * hw === 0) {
        for (const out of [sumDy, sumDyXhat]) {
          elementwiseKernels.fill({ out, attrs: { n: c, value: 0 } }, ctx);
        }
        return;
      }
      const plan = planChannels(ctx, [dy, xhat], n, c, hw);
      const split = plan.chunks > 1;
      const part = split ? ctx.temp(c * plan.chunks) : sumDy;
      const parth = split ? ctx.temp(c * plan.chunks) : sumDyXhat;
      dispatchChannels(ctx, split ? "bn_grad_reduce_partial" : "bn_grad_reduce", plan, attrs, (xs, xe) => {
        const wd = bindWindow(ctx, dy, xs, xe), wh = bindWindow(ctx, xhat, xs, xe);
        return {
          bindings: [wd.binding, wh.binding, sumDy, sumDyXhat, part, parth],
          offs: [wd.rem - xs, wh.rem - xs],
        };
      });
      if (split) {
        const r = { op: "sum" as const, outer: c, size: plan.chunks, inner: 1, scale: 1 };
        reduceMiddle(ctx, part, sumDy, r);
        reduceMiddle(ctx, parth, sumDyXhat, r);
      }
    },

    bn_apply: ({ x, mean, variance, gamma, beta, out, xhat, attrs }, ctx) => {
      const { n, c, hw, eps } = attrs;
      applyChunks(
        ctx,
        xhat ? "bn_apply_xhat" : "bn_apply",
        n * c * hw,
        [x, out, xhat ?? null],
        [mean, variance, gamma, beta],
        ([bx, bo, bh], [sm, sv, sg, sb]) => [bx, sm, sv, sg, sb, bo, bh],
        { c, hw, eps, m: n * hw },
      );
    },

    bn_grad_input: ({ dy, xhat, gamma, variance, sumDy, sumDyXhat, out, attrs }, ctx) => {
      const { n, c, hw, eps, training } = attrs;
      if (training && (!xhat || !sumDy || !sumDyXhat)) {
        throw new Error("bn_grad_input(): training mode needs xhat, sumDy and sumDyXhat");
      }
      applyChunks(
        ctx,
        training ? "bn_grad_input" : "bn_grad_input_eval",
        n * c * hw,
        [dy, out, training ? xhat! : null],
        [gamma, variance, training ? sumDy! : null, training ? sumDyXhat! : null],
        ([bd, bo, bh], [sg, sv, ss, ssh]) => [bd, bh, sg, sv, ss, ssh, bo],
        { c, hw, eps, m: n * hw },
      );
    },
  };
