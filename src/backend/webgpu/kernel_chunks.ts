/**
 * Work splitting shared by the non-GEMM kernels: grid-stride grid sizes, 2-D grids for one-workgroup-per-item
 * kernels, and element chunks whose windows fit maxStorageBufferBindingSize (window binding itself is
 * kernel_grid.ts's bindWindow).
 */
import type { Storage } from "../backend.ts";
import type { GpuContext } from "./context.ts";
import { maxBindingElements } from "./kernel_grid.ts";

/** Invocations per workgroup of every kernel in this family (the WGSL `WG` override). */
export const WG = 256;

/**
 * Grid-stride kernels get one invocation per element up to this many workgroups; beyond it each invocation
 * loops. 4096 x 256 invocations saturate any edge GPU, and fewer, longer workgroups suit llvmpipe.
 */
const MAX_STRIDE_GROUPS = 4096;

export function strideGroups(ctx: GpuContext, n: number): number {
  // 65535 is WebGPU's default, for contexts whose limits omit it (test fakes).
  const cap = Math.min(MAX_STRIDE_GROUPS, ctx.limits.maxComputeWorkgroupsPerDimension ?? 65535);
  return Math.max(1, Math.min(Math.ceil(n / WG), cap));
}

/**
 * [x, y] workgroups covering `count` items, each <= maxComputeWorkgroupsPerDimension (shaders guard the
 * extras of the last row); callers split counts over lim * lim into several dispatches.
 */
export function grid2d(ctx: GpuContext, count: number): [number, number] {
  const lim = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (count <= lim) return [count, 1];
  const gy = Math.ceil(count / lim);
  if (gy > lim) throw new Error(`webgpu: ${count} workgroups exceed a ${lim} x ${lim} grid`);
  return [lim, gy];
}

/** Elements one chunk may span so that its window, rounded down to the offset alignment, still fits. */
export function chunkLimit(ctx: GpuContext): number {
  return maxBindingElements(ctx) - Math.max(1, ctx.limits.minStorageBufferOffsetAlignment / 4);
}

/**
 * Split [0, n) into [start, length] chunks (starts at multiples of `unit`) so that every storage bound over
 * the chunk's range fits a binding; one chunk when every storage fits whole.
 */
export function elementChunks(ctx: GpuContext, n: number, storages: Storage[], unit = 1): [number, number][] {
  if (n === 0) return [];
  const max = maxBindingElements(ctx);
  if (storages.every((s) => s.length <= max)) return [[0, n]];
  const size = Math.floor(chunkLimit(ctx) / unit) * unit;
  const chunks: [number, number][] = [];
  for (let start = 0; start < n; start += size) chunks.push([start, Math.min(size, n - start)]);
  return chunks;
}
