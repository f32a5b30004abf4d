/**
 * What a WebGPU kernel implementation sees (the seam between the backend's infrastructure and the
 * per-family kernel code in kernel_*.ts files). A kernel impl turns one `run(kernel, args)` call into one or
 * more `ctx.dispatch` calls; the backend encodes them into the current command buffer (no submit per
 * dispatch) and submits on read/sync.
 */
import type { DType, Storage } from "../backend.ts";
import type { KernelArgs, KernelName } from "../kernels.ts";

/** A storage bound whole, or an element range of it (for tensors over maxStorageBufferBindingSize). */
export type Binding = Storage | { storage: Storage; offset: number; length: number };

export interface DispatchOptions {
  /** Kernel family file in kernels/ without extension, e.g. "matmul". */
  shader: string;
  /** Entry point (@compute fn) in that file. */
  entry: string;
  /** WGSL `override` constants (workgroup sizes, tile sizes); part of the pipeline cache key. */
  constants?: Record<string, number>;
  /** Storage bindings in @binding order 0..k-1 of @group(0); the uniform block, if any, is @binding(k). */
  bindings: Binding[];
  /** Uniform block: u32 words first (in struct order), then f32 words; packed and 16-byte padded. */
  uniforms?: { u?: number[]; f?: number[] };
  /** Workgroup counts; each must be <= maxComputeWorkgroupsPerDimension (65535): split larger grids. */
  workgroups: [number, number?, number?];
}

export interface GpuContext {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  dispatch(options: DispatchOptions): void;
  /**
   * A scratch storage (ledger category "workspace") that lives until the current run() returns. Freeing it
   * right after encoding is safe: later GPU work that reuses the buffer is queue-ordered after this run.
   */
  temp(length: number, dtype?: DType): Storage;
}

export type GpuKernel<K extends KernelName> = (args: KernelArgs<K>, ctx: GpuContext) => void;
export type GpuKernelTable = { [K in KernelName]: GpuKernel<K> };
