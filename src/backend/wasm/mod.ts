/**
 * The wasm backend's entry point. `createWasmBackend()` without options returns one shared backend per
 * process (one memory and one worker pool serve every caller, as the WebGPU backend shares its device);
 * options that change it (thread count, a smaller memory, forcing plain SIMD) get a backend of their own.
 */
import { defaultMaxBytes, type SimdLevel, startRuntime } from "./runtime.ts";
import { WasmBackend } from "./wasm_backend.ts";

export { WasmBackend, type WasmMemoryStats } from "./wasm_backend.ts";
export { CPU_FALLBACK_KERNELS } from "./kernel_table.ts";
export type { SimdLevel } from "./runtime.ts";

export interface WasmBackendOptions {
  /** Threads that run kernels, the calling one included. Default: the machine's logical cores. */
  threads?: number;
  /** The shared memory's maximum (default: the smaller of 4 GiB and the machine's memory). */
  maxBytes?: number;
  /** "simd128" forces the plain-SIMD module even where relaxed SIMD is available (tests, comparisons). */
  simd?: SimdLevel;
}

/** Logical cores, as the runtime reports them (at least 1). */
export function availableCores(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

let shared: Promise<WasmBackend> | null = null;

export function createWasmBackend(options: WasmBackendOptions = {}): Promise<WasmBackend> {
  const own = Object.values(options).some((v) => v !== undefined);
  if (own) return create(options);
  if (!shared) {
    const p = create({});
    shared = p;
    p.then((b) => {
      b.onDispose = () => {
        if (shared === p) shared = null;
      };
    }, () => {
      if (shared === p) shared = null;
    });
  }
  return shared;
}

async function create(options: WasmBackendOptions): Promise<WasmBackend> {
  const threads = options.threads ?? availableCores();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new Error(`wasm backend: threads must be a positive integer, got ${threads}`);
  }
  let backend: WasmBackend | null = null;
  const rt = await startRuntime({
    threads,
    maxBytes: options.maxBytes ?? defaultMaxBytes(),
    simd: options.simd,
    wsAlloc: (bytes) => backend!.scratch(bytes),
    onWorkerError: (m) => backend?.workerFailed(m),
  });
  backend = new WasmBackend(rt);
  return backend;
}
