/**
 * What `plan`, `adapt` and `train` share about the process's memory: the estimator for the run's backend
 * (its allocator simulated, its footprint from the --device profile or built in, the base measured in this
 * process when the backend is open) and the figures the commands report next to the ledger's.
 */
import type { Backend } from "../backend/backend.ts";
import { innermost } from "../backend/decorator.ts";
import { loadProfile } from "../devices/profile.ts";
import {
  allocatorHeldBytes,
  builtinFootprint,
  type Footprint,
  peakRssBytes,
  rssBytes,
  tensorsInProcess,
} from "../devices/footprint.ts";
import { Estimator } from "../governor/estimate.ts";
import type { ProcessContext, ProcessTerms } from "../governor/process.ts";
import type { Governed, GovernOptions } from "./plan.ts";

/**
 * The estimator for a run on `o.backend` (or `o.target`): it simulates that backend's allocator, and its
 * process context takes the footprint of the --device profile when it has one for this backend, else the
 * built-in one. A run with an open backend measures its own base (RSS less what the allocator holds: the
 * runtime, the backend, the model and the images) instead of taking the footprint's.
 */
export async function processEstimator(o: GovernOptions): Promise<Estimator> {
  const b = o.backend ? innermost(o.backend) as Backend & { limits?: GPUSupportedLimits } : undefined;
  const backend = b ? (b.name === "webgpu" ? "webgpu" : "cpu") : o.target?.backend ?? "cpu";
  const profile = o.device && o.device !== "auto" ? await loadProfile(o.device) : undefined;
  const builtin = builtinFootprint(backend);
  let footprint: Footprint = profile?.footprint?.backend === backend ? profile.footprint : builtin;
  const inProcess = b
    ? tensorsInProcess(b)
    : o.target?.adapter === undefined
    ? footprint.tensors_in_process
    : /llvmpipe|lavapipe|swiftshader/i.test(o.target.adapter);
  footprint = { ...footprint, tensors_in_process: inProcess };
  const process: ProcessContext = { footprint, modelHostBytes: 0, samples: o.samples };
  const estimator = Estimator.forOnnx(o.model.onnx, o.input, {
    target: backend,
    maxBufferSize: b?.limits?.maxBufferSize ?? o.target?.maxBufferSize,
    process,
  });
  // The file's bytes and the decoded initializers (the imported tensors are the allocator's); WebGPU also
  // keeps the upload arena the weights were staged through (a GPU buffer and its host shadow) and wgpu's
  // own staging copy. Only `plan` uses this: a run measures its base.
  const staged = backend === "webgpu" ? 3 * estimator.weightsBytes : 0;
  process.modelHostBytes = (await Deno.stat(o.model.path)).size + estimator.weightsBytes + staged;
  if (b) {
    await b.sync(); // the model's pending uploads land first: WebGPU stages them on the host
    process.measuredBaseBytes = measuredBase(b);
  }
  return estimator;
}

/** Resident bytes of this process now, less what `backend`'s allocator holds of them. */
export function measuredBase(backend: Backend): number {
  return rssBytes() - (tensorsInProcess(backend) ? allocatorHeldBytes(backend) : 0);
}

/**
 * The memory figures `adapt` and `train` report next to the ledger's: predicted and measured process peak
 * (VmHWM, or the sampled RSS off Linux), the allocator's predicted and measured high-water bytes, and the
 * device memory (WebGPU exposes none: null, with why).
 */
export interface MemoryReport {
  predicted_process_peak_bytes: number | null;
  process_peak_bytes: number;
  process_peak_source: "VmHWM" | "sampled";
  process_terms: ProcessTerms | null;
  predicted_allocator_peak_bytes: number | null;
  allocator_peak_bytes: number | null;
  predicted_device_peak_bytes: number | null;
  /** WebGPU exposes no device memory use: always null, with `device_note` saying why. */
  device_peak_bytes: null;
  device_note?: string;
}

export function memoryReport(gov: Governed, backend: Backend): MemoryReport {
  const e = gov.estimate;
  const b = innermost(backend) as Backend & { memoryStats?: () => Record<string, number> };
  const stats = b.memoryStats?.();
  const rss = peakRssBytes();
  return {
    predicted_process_peak_bytes: e?.process_peak_bytes ?? null,
    process_peak_bytes: rss.bytes,
    process_peak_source: rss.source,
    process_terms: e?.process_terms ?? null,
    predicted_allocator_peak_bytes: e?.allocator?.peak_bytes ?? null,
    allocator_peak_bytes: stats ? (b.name === "cpu" ? stats.residentBytes : stats.peakBytes) ?? null : null,
    predicted_device_peak_bytes: e?.device_peak_bytes ?? null,
    device_peak_bytes: null,
    ...(b.name === "webgpu"
      ? {
        device_note: tensorsInProcess(b)
          ? "a CPU adapter: its device memory is the process's, counted in process_peak_bytes"
          : "WebGPU does not expose device memory use; see predicted_device_peak_bytes",
      }
      : {}),
  };
}
