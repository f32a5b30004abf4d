/**
 * What `adapt --budget B --memory auto` must show for a budget to mean the whole process: the process's peak
 * resident bytes (VmHWM) under B and within 10% of the governor's prediction, the ledger's peak as predicted,
 * and the allocator's high-water bytes as simulated (exact on the CPU; WebGPU kernels' own scratch storages,
 * which the null backend does not see, add up to a few tens of KiB to the pool: 0.5% is allowed).
 */
import { equal, ok } from "node:assert/strict";
import { runCli } from "./_cli.ts";
import { IDX_IMAGES_MAGIC, readIdxImages } from "../../src/data/idx.ts";

export const BUDGET = "512MiB";

/** Whether a WebGPU adapter exists (the WebGPU cases are skipped without one unless CI requires it). */
export async function hasWebGpu(): Promise<boolean> {
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  const ok = !!(await gpu?.requestAdapter().catch(() => null));
  if (!ok && Deno.env.get("EDGETRAIN_REQUIRE_WEBGPU") === "1") throw new Error("no WebGPU adapter");
  if (!ok) console.warn("WebGPU unavailable: its budget cases are skipped");
  return ok;
}

/** The first n images of an IDX stream, written uncompressed to `path`. */
export async function firstImages(from: string, n: number, path: string): Promise<string> {
  const set = await readIdxImages(from);
  const bytes = new Uint8Array(16 + n * set.height * set.width);
  const v = new DataView(bytes.buffer);
  [IDX_IMAGES_MAGIC, n, set.height, set.width].forEach((x, i) => v.setUint32(4 * i, x));
  bytes.set(set.pixels.subarray(0, n * set.height * set.width), 16);
  await Deno.writeFile(path, bytes);
  return path;
}

export interface BudgetRun {
  method: string;
  memory: number;
  store: string;
  predicted_peak_bytes: number;
  peak_bytes: number;
  predicted_process_peak_bytes: number;
  process_peak_bytes: number;
  predicted_allocator_peak_bytes: number;
  allocator_peak_bytes: number;
  budget_bytes: number;
}

/** Run `adapt` with `args` under the budget on `backend` and check what the budget promises. */
export async function adaptWithinBudget(args: string[], backend: "cpu" | "webgpu"): Promise<BudgetRun> {
  const r = await runCli([
    "adapt",
    ...args,
    "--method",
    "tent",
    "--budget",
    BUDGET,
    "--memory",
    "auto",
    "--backend",
    backend,
    "--json",
  ]);
  equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as BudgetRun & { process_peak_source: string };
  const what = `${backend} ${out.method}/${out.memory}/${out.store}`;
  if (Deno.build.os === "linux") equal(out.process_peak_source, "VmHWM");
  ok(out.process_peak_bytes <= out.budget_bytes, `${what}: process peak ${out.process_peak_bytes} > budget`);
  const error = out.process_peak_bytes / out.predicted_process_peak_bytes - 1;
  ok(
    Math.abs(error) <= 0.1,
    `${what}: process peak ${out.process_peak_bytes} is ${(100 * error).toFixed(1)}% off the prediction ` +
      `${out.predicted_process_peak_bytes}`,
  );
  equal(out.peak_bytes, out.predicted_peak_bytes, `${what}: the ledger's peak`);
  const slack = backend === "cpu" ? 0 : 0.005 * out.predicted_allocator_peak_bytes;
  ok(
    Math.abs(out.allocator_peak_bytes - out.predicted_allocator_peak_bytes) <= slack,
    `${what}: allocator ${out.allocator_peak_bytes}, predicted ${out.predicted_allocator_peak_bytes}`,
  );
  return out;
}
