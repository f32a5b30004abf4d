/**
 * Helpers for the wasm kernel tests: the process's shared wasm backend, and backends of their own for tests
 * that need a thread count, a small memory or the plain-SIMD module (disposed by the test).
 */
import { ok } from "node:assert/strict";
import type { Backend, HostArray, Storage } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { KernelArgs, KernelName } from "../../src/backend/kernels.ts";
import type { Spec } from "./_webgpu_agree.ts";
import { createWasmBackend, type WasmBackend, type WasmBackendOptions } from "../../src/backend/wasm/mod.ts";
import { wasmBackend } from "../_backends.ts";

export function wasmTest(name: string, body: (b: Backend) => Promise<void> | void): void {
  Deno.test({
    name,
    // The shared backend's workers live for the whole process, like WebGPU's device.
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => await body(await wasmBackend()),
  });
}

/** A backend of its own, disposed after `body`. */
export async function withWasm<T>(
  options: WasmBackendOptions,
  body: (b: WasmBackend) => Promise<T>,
): Promise<T> {
  const b = await createWasmBackend(options);
  try {
    return await body(b);
  } finally {
    b.dispose();
  }
}

/**
 * Largest relative difference (floor 1) of got against want, where non-finite values must match exactly
 * (same infinity, NaN for NaN) instead of making the difference NaN.
 */
export function maxRelDiffSpecial(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length mismatch: ${got.length} vs ${want.length}`);
  let m = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    if (!Number.isFinite(g) || !Number.isFinite(w)) {
      if (!(g === w || (Number.isNaN(g) && Number.isNaN(w)))) return Infinity;
      continue;
    }
    m = Math.max(m, Math.abs(g - w) / Math.max(1, Math.abs(w)));
  }
  return m;
}

/** Run `kernel` on the CPU and on `b` from the same inputs (outputs start as a sentinel); compare every storage. */
export async function agreeSpecial(
  b: Backend,
  kernel: KernelName,
  specs: Record<string, Spec>,
  attrs: unknown,
  tol: number,
  label = "",
): Promise<Record<string, HostArray>> {
  const results: Record<string, HostArray>[] = [];
  for (const be of [new CpuBackend(), b]) {
    const storages: Record<string, Storage> = {};
    for (const [name, s] of Object.entries(specs)) {
      const length = s.data?.length ?? s.length!;
      storages[name] = be.alloc(length, { dtype: s.dtype ?? "f32", category: "activations" });
      be.write(storages[name], s.data ?? new Array(length).fill(12345));
    }
    be.run(kernel, { ...storages, attrs } as unknown as KernelArgs<typeof kernel>);
    const out: Record<string, HostArray> = {};
    for (const [name, st] of Object.entries(storages)) {
      out[name] = await be.read(st);
      be.release(st);
    }
    results.push(out);
  }
  for (const name of Object.keys(specs)) {
    const d = maxRelDiffSpecial(results[1][name], results[0][name]);
    ok(d <= tol, `${kernel}${label}: ${name} differs from the CPU by ${d} (tolerance ${tol})`);
  }
  return results[1];
}
