/**
 * Helpers for the WebGPU kernel tests: run one kernel on the CPU reference and on WebGPU from the same
 * seeded inputs and compare every storage. Outputs start as the same sentinel on both backends, so an
 * element a kernel forgets to write (or writes out of range) differs.
 *
 * Tolerances, relative with floor 1 (maxRelDiff): elementwise 1e-5 (f32 exp/log/sqrt are within a few ulp;
 * the CPU computes in f64 and rounds once); reductions 1e-4 (summation order over up to 1e5 terms).
 */
import { ok } from "node:assert/strict";
import type { Backend, DType, HostArray } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { KernelArgs, KernelName } from "../../src/backend/kernels.ts";
import { Rng } from "../../src/random.ts";
import { webgpuBackend } from "../_backends.ts";
import { maxRelDiff } from "../_compare.ts";

export const ELEMENTWISE = 1e-5;
export const REDUCTION = 1e-4;
const SENTINEL = 12345;

export interface Spec {
  data?: ArrayLike<number>;
  length?: number;
  dtype?: DType;
}

async function runOn(
  b: Backend,
  kernel: KernelName,
  specs: Record<string, Spec>,
  attrs: unknown,
): Promise<Record<string, HostArray>> {
  const storages = Object.fromEntries(
    Object.entries(specs).map(([name, s]) => {
      const length = s.data?.length ?? s.length!;
      const st = b.alloc(length, { dtype: s.dtype ?? "f32", category: "activations" });
      b.write(st, s.data ?? new Array(length).fill(SENTINEL));
      return [name, st];
    }),
  );
  b.run(kernel, { ...storages, attrs } as unknown as KernelArgs<typeof kernel>);
  const out: Record<string, HostArray> = {};
  for (const [name, st] of Object.entries(storages)) {
    out[name] = await b.read(st);
    b.release(st);
  }
  return out;
}

/** Run on both backends; assert every storage agrees within `tol`; returns the GPU results. */
export async function agree(
  gpu: Backend,
  kernel: KernelName,
  specs: Record<string, Spec>,
  attrs: unknown,
  tol: number,
  label = "",
): Promise<Record<string, HostArray>> {
  const ref = await runOn(new CpuBackend(), kernel, specs, attrs);
  const got = await runOn(gpu, kernel, specs, attrs);
  for (const name of Object.keys(specs)) {
    // NaN where the reference has NaN counts as equal (maxRelDiff would call it an infinite error).
    const g = Array.from(got[name], (v, i) => Number.isNaN(v) && Number.isNaN(ref[name][i]) ? 0 : v);
    const r = Array.from(ref[name], (v) => Number.isNaN(v) ? 0 : v);
    const d = maxRelDiff(g, r);
    ok(d <= tol, `${kernel}${label}: ${name} differs from the CPU by ${d} (tolerance ${tol})`);
  }
  return got;
}

export function gpuTest(name: string, body: (b: Backend) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const b = await webgpuBackend();
      if (!b) {
        console.warn(`skipped "${name}": no WebGPU adapter`);
        return;
      }
      await body(b);
    },
  });
}

export const rng = new Rng(2024);
export const uniforms = (n: number, lo = -1, hi = 1) => rng.uniforms(n, lo, hi);

/** Values around every kink of the activations, then random ones. */
export function activationInputs(n: number, positive: boolean): Float32Array {
  const x = positive ? uniforms(n, 0.01, 10) : uniforms(n, -8, 8);
  if (!positive) [-3, 0, 3, 6, -6, 0.5].forEach((v, i) => (x[i] = v));
  return x;
}
