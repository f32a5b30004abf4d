/**
 * The estimator's simulated allocator against the real one: the CPU backend's arena and the WebGPU pool run
 * the policies the null backend runs (src/memory/allocator*.ts), so the bytes each holds at its high-water
 * mark after real TENT steps through the runtime guard are the prediction, to the byte.
 */
import { equal } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { Estimator } from "../../src/governor/estimate.ts";
import { GuardedBackend } from "../../src/governor/guarded_backend.ts";
import { measurePeak } from "../../src/governor/measure.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { allocatorHeldBytes } from "../../src/devices/footprint.ts";
import { webgpuBackend } from "../_backends.ts";

const INPUT = [1, 16, 16];
const build = (b: Backend) =>
  buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });

async function check(backend: Backend, target: "cpu" | "webgpu", store: "fp32" | "int8") {
  const limits = (backend as Backend & { limits?: GPUSupportedLimits }).limits;
  const e = await new Estimator(build, INPUT, { target, maxBufferSize: limits?.maxBufferSize })
    .estimate({ method: "tent", batch: 16, store, guard: true });
  const guarded = new GuardedBackend(backend);
  const model = build(guarded);
  const m = await measurePeak(guarded, model, {
    method: "tent",
    batch: 16,
    store,
    input: INPUT,
    guard: true,
  });
  equal(m.peak_bytes, e.peak_bytes, "the ledger");
  const stats = (backend as Backend & { memoryStats(): Record<string, number> }).memoryStats();
  equal(target === "cpu" ? stats.residentBytes : stats.peakBytes, e.allocator!.peak_bytes, "the allocator");
  model.dispose();
}

for (const store of ["fp32", "int8"] as const) {
  Deno.test(`Estimator predicts the CPU arena's resident bytes exactly (TENT, ${store})`, async () => {
    const cpu = new CpuBackend();
    await check(cpu, "cpu", store);
    equal(allocatorHeldBytes(cpu), cpu.memoryStats().residentBytes);
  });
}

Deno.test({
  name: "Estimator predicts the WebGPU pool's high-water bytes exactly (TENT, fp32)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!await webgpuBackend()) return; // reported by _backends.ts
    // A device of its own: the shared one's pool holds other tests' buffers.
    const { createWebGpuBackend } = await import("../../src/backend/webgpu/mod.ts");
    const b = await createWebGpuBackend({ debug: "" });
    try {
      await check(b, "webgpu", "fp32");
    } finally {
      b.dispose();
    }
  },
});
