/**
 * Helpers shared by the matmul and convolution kernels: binding a window of a storage that may exceed
 * maxStorageBufferBindingSize, splitting a batch so every window fits, and splitting workgroup grids that
 * exceed maxComputeWorkgroupsPerDimension into several dispatches.
 */
import type { Storage } from "../backend.ts";
import type { Binding, ConstantsOf, DispatchOptions, EntryName, GpuContext, UniformsOf } from "./context.ts";
import type { ShaderName } from "./_kernels_gen.ts";

/** A bound window and the element offset of the wanted data inside it. */
export interface Window {
  binding: Binding;
  /** Element offset to pass to the shader: the window start is rounded down to the offset alignment. */
  rem: number;
}

/** Largest element count one binding may cover. */
export function maxBindingElements(ctx: GpuContext): number {
  return Math.floor(ctx.limits.maxStorageBufferBindingSize / 4);
}

function alignElements(ctx: GpuContext): number {
  return Math.max(1, ctx.limits.minStorageBufferOffsetAlignment / 4);
}

/**
 * Bind elements [start, end) of `s`. Small storages are bound whole (one binding shape for the pipeline
 * cache's bind groups); large ones get a range whose start is rounded down to the offset alignment.
 */
export function bindWindow(ctx: GpuContext, s: Storage, start: number, end: number, quad = false): Window {
  const max = maxBindingElements(ctx);
  if (s.length <= max) return { binding: s, rem: start };
  const align = alignElements(ctx);
  const offset = Math.floor(start / align) * align;
  let length = Math.min(s.length, Math.max(end, offset + 1)) - offset;
  // A window read as array<vec4<f32>> must cover whole vec4s (it stays in range when s.length is a
  // multiple of 4, as the offset is).
  if (quad) length = Math.min(s.length - offset, Math.ceil(length / 4) * 4);
  if (length > max) {
    throw new Error(
      `webgpu: a window of ${end - start} elements at ${start} of storage ${s.id} exceeds the ` +
        `${ctx.limits.maxStorageBufferBindingSize}-byte storage binding limit`,
    );
  }
  return { binding: { storage: s, offset, length }, rem: start - offset };
}

/** One operand laid out per batch item: item b occupies [offset + b*stride, offset + b*stride + size). */
export interface Strided {
  storage: Storage;
  offset: number;
  stride: number;
  size: number;
}

/**
 * How many batch items (at most `remaining`) can share one dispatch so that each operand's window fits in
 * a binding. Returns 0 when even one item does not fit.
 */
export function batchesThatFit(ctx: GpuContext, ops: Strided[], remaining: number): number {
  const max = maxBindingElements(ctx);
  // Rounding a window's start down to the alignment can add align-1 elements in front of it.
  const slack = alignElements(ctx) - 1;
  let count = remaining;
  for (const op of ops) {
    if (op.storage.length <= max) continue;
    if (op.size + slack > max) return 0;
    if (op.stride > 0) count = Math.min(count, Math.floor((max - slack - op.size) / op.stride) + 1);
  }
  return Math.max(0, count);
}

/** Bind the window of `op` that covers batch items [b0, b0 + count) (`quad`: whole vec4s, see bindWindow). */
export function bindBatch(ctx: GpuContext, op: Strided, b0: number, count: number, quad = false): Window {
  const start = op.offset + b0 * op.stride;
  return bindWindow(ctx, op.storage, start, start + (count - 1) * op.stride + op.size, quad);
}

/**
 * Dispatch a grid of `grid` workgroups, split into dispatches of at most maxComputeWorkgroupsPerDimension
 * per dimension. `uniforms(base)` builds each dispatch's uniform words given its first workgroup.
 */
export function dispatchGrid<S extends ShaderName, E extends EntryName<S>>(
  ctx: GpuContext,
  grid: [number, number, number],
  options: {
    shader: S;
    entry: E;
    constants?: ConstantsOf<S, E>;
    bindings: Binding[];
    uniforms: (base: [number, number, number]) => UniformsOf<S, E>;
  },
): void {
  const lim = ctx.limits.maxComputeWorkgroupsPerDimension;
  const [gx, gy, gz] = grid;
  if (gx === 0 || gy === 0 || gz === 0) return;
  for (let z = 0; z < gz; z += lim) {
    for (let y = 0; y < gy; y += lim) {
      for (let x = 0; x < gx; x += lim) {
        // The conditional `uniforms` member of DispatchOptions does not resolve for generic S, E.
        ctx.dispatch({
          shader: options.shader,
          entry: options.entry,
          constants: options.constants,
          bindings: options.bindings,
          uniforms: options.uniforms([x, y, z]),
          workgroups: [Math.min(lim, gx - x), Math.min(lim, gy - y), Math.min(lim, gz - z)],
        } as DispatchOptions<S, E>);
      }
    }
  }
}

/** Smallest power of two >= n (n >= 1). */
export function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
