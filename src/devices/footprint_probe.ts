/**
 * `edgetrain profile`'s measurement of the runtime's footprint (footprint.ts) on the backend it probes: the
 * resident bytes before and after opening the backend, then a short TENT run of the default IRB net (the
 * demo model's architecture) on random images through the runtime guard, as `adapt` runs it. What the first
 * chunk adds beyond the allocator's growth and its input is the step's overhead (compiled code, pipelines
 * and their JIT, staging); how resident memory grows over the later chunks, less their inputs, is the JS
 * garbage of a step, divided by the backend allocations a step makes (counted on the null backend).
 */
import type { Backend } from "../backend/backend.ts";
import { Estimator } from "../governor/estimate.ts";
import { RuntimeGuard } from "../governor/guard.ts";
import { GuardedBackend } from "../governor/guarded_backend.ts";
import { randomImages } from "../governor/measure.ts";
import { withStore } from "../memory/policy.ts";
import { createMethod } from "../methods/registry.ts";
import { runAdaptation } from "../methods/run.ts";
import { buildIrbNet } from "../nn/mobilenet.ts";
import {
  allocatorHeldBytes,
  type Footprint,
  GC_SLACK_BYTES,
  rssBytes,
  tensorsInProcess,
} from "./footprint.ts";

export interface FootprintProbeOptions {
  /** Resident bytes before the backend was opened (edgetrain's code loaded). */
  runtimeBytes: number;
  /** Resident bytes right after it was opened. */
  openedBytes: number;
  /** Chunks of the probe run (16) and their batch (8). */
  chunks?: number;
  batch?: number;
}

const INPUT = [1, 32, 32];
/** Chunks left out of the garbage slope: the JS heap's young generation grows to its size in the first ones. */
const WARMUP = 4;

export async function measureFootprint(backend: Backend, o: FootprintProbeOptions): Promise<Footprint> {
  const chunks = Math.max(o.chunks ?? 16, WARMUP + 4), batch = o.batch ?? 8;
  const build = (b: Backend) => buildIrbNet(b, { inChannels: 1, numClasses: 10, seed: 1 });
  const estimate = await new Estimator(build, INPUT, { target: backend.name === "webgpu" ? "webgpu" : "cpu" })
    .estimate({ method: "tent", batch, store: "fp32", guard: true });
  const guarded = new GuardedBackend(backend);
  const model = build(guarded);
  // Learning on every chunk, as the estimate at this batch plans it.
  const method = await createMethod("tent", model, {
    stream: { capacity: batch, every: batch, collapseGuard: false },
  });
  const guard = new RuntimeGuard(guarded, { batch, store: "fp32", backward: true });
  const inProcess = tensorsInProcess(backend);
  const held = () => (inProcess ? allocatorHeldBytes(backend) : 0);
  await backend.sync();
  const start = { rss: rssBytes(), held: held() };
  const after: { rss: number; held: number }[] = [];
  try {
    await withStore(
      "fp32",
      () =>
        runAdaptation(guarded, method, [{ name: "footprint", set: randomImages(batch * chunks, INPUT) }], {
          batch,
          preprocess: { mean: [0.5], std: [0.25] },
          guard,
          observers: [{ chunk: () => after.push({ rss: rssBytes(), held: held() }) }],
        }),
    );
  } finally {
    guard.dispose();
    method.dispose();
    model.dispose();
  }
  const input = batch * INPUT.reduce((a, b) => a * b, 1) * 4;
  const grown = (a: { rss: number; held: number }, b: { rss: number; held: number }) =>
    (b.rss - a.rss) - (b.held - a.held);
  const first = grown(start, after[0]) - input;
  const perChunk = grown(after[WARMUP], after[chunks - 1]) / (chunks - 1 - WARMUP) - input;
  const adapter = (backend as Backend & { adapterDescription?: string }).adapterDescription;
  return {
    backend: backend.name === "webgpu" ? "webgpu" : "cpu",
    ...(adapter ? { adapter } : {}),
    runtime_bytes: o.runtimeBytes,
    backend_bytes: Math.max(0, o.openedBytes - o.runtimeBytes),
    step_bytes: Math.max(0, Math.round(first)),
    heap_per_allocation_bytes: Math.max(0, Math.round(perChunk / estimate.allocations_per_step)),
    gc_slack_bytes: GC_SLACK_BYTES,
    tensors_in_process: inProcess,
    source: `edgetrain profile on ${new Date().toISOString().slice(0, 10)}: resident memory before and ` +
      `after opening the backend and over ${chunks} TENT chunks of ${batch} on the default IRB net`,
  };
}
