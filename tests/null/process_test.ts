import { equal, ok } from "node:assert/strict";
import { builtinFootprint } from "../../src/devices/footprint.ts";
import { predictProcess, type ProcessInput } from "../../src/governor/process.ts";

const MiB = 2 ** 20;
const input: ProcessInput = {
  batch: 16,
  input: [3, 64, 64], // a chunk is 16 * 3 * 64 * 64 * 4 = 768 KiB
  weightsBytes: 4 * MiB,
  keepsSource: true,
  allocator: { target: "cpu", peak_bytes: 50 * MiB, readback_peak_bytes: 0 },
  ledgerPeakBytes: 40 * MiB,
  allocationsPerStep: 512,
};
const footprint = { ...builtinFootprint("cpu"), heap_per_allocation_bytes: 512 }; // 256 KiB of JS per step

Deno.test("predictProcess() sums the base, the allocator's high-water bytes, the source copy and the step", () => {
  const p = predictProcess(input, { footprint, modelHostBytes: 10 * MiB, samples: 16 });
  const t = p.process_terms;
  equal(t.base_bytes, footprint.runtime_bytes + footprint.backend_bytes + 10 * MiB);
  equal(t.tensors_bytes, 50 * MiB, "the allocator's bytes, not the ledger's");
  equal(t.source_state_bytes, 4 * MiB);
  equal(t.garbage_bytes, 768 * 1024 + 256 * 1024, "one chunk's input and its step's JS objects");
  equal(t.step_bytes, footprint.step_bytes);
  equal(p.process_peak_bytes, Object.values(t).reduce((a, b) => a + b, 0));
  equal(p.device_peak_bytes, null);
  const measured = predictProcess(input, {
    footprint,
    modelHostBytes: 10 * MiB,
    measuredBaseBytes: 99 * MiB,
  });
  equal(measured.process_terms.base_bytes, 99 * MiB, "a measured base replaces the footprint's");
});

Deno.test("predictProcess() lets garbage grow with the run's chunks until V8 collects it", () => {
  const garbage = (samples?: number, o: Partial<ProcessInput> = {}, f = footprint) =>
    predictProcess({ ...input, ...o }, { footprint: f, modelHostBytes: 0, samples }).process_terms
      .garbage_bytes;
  equal(garbage(16 * 10), 10 * MiB);
  equal(garbage(16 * 10 - 3), 10 * MiB, "a partial last chunk is a chunk");
  // Freed buffers past 64 MiB start a major collection: ceil(64 MiB / 768 KiB) = 86 chunks at most.
  equal(garbage(16 * 1000), 86 * MiB);
  equal(garbage(undefined), 86 * MiB, "a stream of unknown length");
  equal(garbage(16 * 1000, {}, { ...footprint, gc_slack_bytes: 32 * MiB }), 32 * MiB, "never past the slack");
  // Tiny chunks: the step's JS objects reach the slack long before the buffers reach 64 MiB.
  equal(garbage(undefined, { input: [1, 4, 4] }), footprint.gc_slack_bytes);
  equal(
    garbage(undefined, {}, { ...footprint, gc_slack_bytes: 0 }),
    768 * 1024,
    "never less than the chunk being stepped on",
  );
});

Deno.test("predictProcess() reports tensors on a GPU as device memory, and WebGPU's input staging", () => {
  const gpu = { ...builtinFootprint("webgpu"), tensors_in_process: false };
  const p = predictProcess({
    ...input,
    allocator: { target: "webgpu", peak_bytes: 70 * MiB, readback_peak_bytes: MiB },
  }, {
    footprint: gpu,
    modelHostBytes: 0,
  });
  equal(p.process_terms.tensors_bytes, 0);
  equal(p.device_peak_bytes, 71 * MiB);
  equal(p.process_terms.staging_bytes, 768 * 1024);
  const lavapipe = predictProcess(input, { footprint: builtinFootprint("webgpu"), modelHostBytes: 0 });
  ok(lavapipe.process_terms.tensors_bytes > 0 && lavapipe.device_peak_bytes === null);
});
