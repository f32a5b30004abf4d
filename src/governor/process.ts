/**
 * The process's peak resident bytes for an estimate: what `--budget` means to a user reading `top`.
 *
 *   process = base + tensors + source state + garbage + staging + step
 *
 * - base: the runtime, the opened backend, the loaded model's host copies (the ONNX file and its decoded
 *   initializers) and the images. `adapt` and `train` measure it in their own process before they plan (RSS
 *   less what the allocator already holds); `plan` takes the footprint's runtime and backend bytes plus the
 *   model's host bytes.
 * - tensors: the allocator's high-water bytes, simulated exactly on the null backend (src/memory/
 *   allocator.ts), when the backend's memory is the process's (the CPU backend, a CPU WebGPU adapter);
 *   on a GPU they are device memory, reported apart.
 * - source state: the host copy of the parameters every adaptation method keeps to reset to.
 * - garbage: each chunk leaves its preprocessed floats and the JS objects of its step (a few hundred bytes
 *   per backend allocation), freed but resident until a major garbage collection. V8 runs one once the
 *   freed buffers pass 64 MiB, or the heap its limit: the garbage grows with the run's chunks up to the
 *   chunks that take the buffers past 64 MiB, and never past the footprint's gc slack.
 * - staging: WebGPU copies a chunk's input through a staging buffer of its size.
 * - step: what the first steps add beyond all that (compiled code, pipelines, JS heap), from the footprint.
 */
import type { AllocatorPeak } from "../memory/allocator.ts";
import { type Footprint, GC_EXTERNAL_BYTES } from "../devices/footprint.ts";

export interface ProcessContext {
  footprint: Footprint;
  /**
   * Resident bytes measured in this process, less what the backend's allocator held at that moment. Without
   * it the base is the footprint's runtime and backend bytes plus `modelHostBytes`.
   */
  measuredBaseBytes?: number;
  /** Host bytes of the loaded model outside the allocator: the ONNX file and its decoded initializers. */
  modelHostBytes: number;
  /** Samples the run feeds in all (chunks of `batch`); undefined for a long stream. */
  samples?: number;
}

export interface ProcessTerms {
  base_bytes: number;
  tensors_bytes: number;
  source_state_bytes: number;
  garbage_bytes: number;
  staging_bytes: number;
  step_bytes: number;
}

export interface ProcessPrediction {
  process_peak_bytes: number;
  /** The terms that sum to it. */
  process_terms: ProcessTerms;
  /** Device memory the tensors take when they are not in the process (a GPU), else null. */
  device_peak_bytes: number | null;
}

export interface ProcessInput {
  batch: number;
  /** One sample's [C, H, W]. */
  input: readonly number[];
  weightsBytes: number;
  /** Adaptation methods keep a host copy of the parameters (SourceState). */
  keepsSource: boolean;
  allocator: AllocatorPeak | null;
  ledgerPeakBytes: number;
  allocationsPerStep: number;
}

/** The predicted peak resident bytes of the process running `e` in context `ctx`. */
export function predictProcess(e: ProcessInput, ctx: ProcessContext): ProcessPrediction {
  const f = ctx.footprint;
  const chunk = e.batch * e.input.reduce((a, b) => a * b, 1) * 4;
  // The allocator's high-water bytes (the ledger's peak when no allocator was simulated).
  const held = e.allocator ? e.allocator.peak_bytes + e.allocator.readback_peak_bytes : e.ledgerPeakBytes;
  const chunks = ctx.samples === undefined ? Infinity : Math.ceil(ctx.samples / e.batch);
  const collected = Math.min(chunks, Math.ceil(GC_EXTERNAL_BYTES / Math.max(chunk, 1)));
  const perChunk = chunk + f.heap_per_allocation_bytes * e.allocationsPerStep;
  const terms: ProcessTerms = {
    base_bytes: ctx.measuredBaseBytes ?? f.runtime_bytes + f.backend_bytes + ctx.modelHostBytes,
    tensors_bytes: f.tensors_in_process ? held : 0,
    source_state_bytes: e.keepsSource ? e.weightsBytes : 0,
    // At least the chunk being stepped on, however small the slack.
    garbage_bytes: Math.round(Math.max(chunk, Math.min(collected * perChunk, f.gc_slack_bytes))),
    staging_bytes: f.backend === "webgpu" ? chunk : 0,
    step_bytes: f.step_bytes,
  };
  const total = Object.values(terms).reduce((a, b) => a + b, 0);
  return {
    process_peak_bytes: Math.ceil(total),
    process_terms: terms,
    device_peak_bytes: f.tensors_in_process ? null : held,
  };
}
