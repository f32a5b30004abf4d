/**
 * Starting the wasm kernels: pick the module the runtime can run (relaxed SIMD, else plain SIMD), create the
 * shared memory, instantiate the module on this thread, and start the worker pool on the same memory.
 *
 * Workers are made from embedded source (a Blob URL), not from a file, so `deno bundle` and `deno compile`
 * outputs stay self-contained. Each worker instantiates the same compiled module over the same memory, moves
 * its stack pointer to a stack of its own, and loops over worker_wait() / worker_run() (native/threads.c),
 * waiting on a futex for work; it never returns to its event loop until dispose() asks the pool to quit.
 */
import { BackendError } from "../backend.ts";
import { WASM_RELAXED, WASM_SIMD } from "./_wasm_gen.ts";
import { align, PAGE } from "./heap.ts";

/** The C entry points (native/*.c); addresses and sizes are byte offsets into the shared memory. */
export interface WasmExports {
  heap_base(): number;
  gemm_scratch_bytes(): number;
  pool_init(threads: number, scratch: number, scratchPerThread: number): void;
  pool_quit(): void;
  pool_failed(): number;
  set_stack_pointer(addr: number): void;
  [entry: string]: (...args: number[]) => number | void;
}

export type SimdLevel = "relaxed-simd" | "simd128";

export interface Runtime {
  memory: WebAssembly.Memory;
  exports: WasmExports;
  simd: SimdLevel;
  threads: number;
  /** First byte the storage heap may use (past stacks and scratch). */
  heapStart: number;
  /** The memory's maximum in bytes. */
  maxBytes: number;
  workers: Worker[];
}

/**
 * The Web Worker constructor, taken when this module is evaluated: onnxruntime-web replaces globalThis.Worker
 * with node:worker_threads' Worker when it starts its own threads under Deno (it takes Deno for Node), and
 * that one cannot run a Blob URL. Static imports evaluate this module before any session can start.
 */
const WebWorker: typeof Worker = globalThis.Worker;

/** Per worker: its stack. Kernels keep small frames (the deepest is ~2 KiB), so 256 KiB is ample. */
const WORKER_STACK = 256 * 1024;
/** Per thread scratch: GEMM packing, padded depthwise planes (a 224x224 plane with padding is ~210 KiB). */
const MIN_SCRATCH = 1024 * 1024;

function decode(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** The relaxed-SIMD module where the runtime validates it, else the plain SIMD one. */
export function chooseModule(force?: SimdLevel): { bytes: Uint8Array<ArrayBuffer>; simd: SimdLevel } {
  const relaxed = decode(WASM_RELAXED);
  if (force !== "simd128" && WebAssembly.validate(relaxed)) return { bytes: relaxed, simd: "relaxed-simd" };
  const plain = decode(WASM_SIMD);
  if (!WebAssembly.validate(plain)) {
    throw new BackendError("wasm backend: this runtime has no WebAssembly SIMD128 and shared memory support");
  }
  return { bytes: plain, simd: "simd128" };
}

/**
 * The largest memory to reserve: the wasm32 limit (4 GiB, minus a page so byte offsets stay below 2^32) or
 * the machine's total memory, whichever is smaller. A shared memory must declare its maximum up front (it
 * can never move), but this only reserves address space; pages are committed as the heap grows.
 */
export function defaultMaxBytes(): number {
  const wasm32 = 65535 * PAGE;
  let total = wasm32;
  try {
    total = Deno.systemMemoryInfo().total;
  } catch {
    // No --allow-sys: the wasm32 limit.
  }
  return Math.max(64 * PAGE, Math.min(wasm32, Math.floor(total / PAGE) * PAGE));
}

// Runs inside each worker (as a Blob module): instantiate over the shared memory, then serve the pool.
const WORKER_SOURCE = `
self.onmessage = async (e) => {
  const { module, memory, tid, stackTop } = e.data;
  let exports;
  try {
    const noHostScratch = () => { throw new Error("ws_alloc called on a worker"); };
    exports = (await WebAssembly.instantiate(module, { env: { memory, ws_alloc: noHostScratch } })).exports;
    exports.set_stack_pointer(stackTop);
  } catch (err) {
    self.postMessage({ tid, error: String(err && err.stack || err) });
    return;
  }
  exports.worker_init(tid);
  self.postMessage({ tid, ready: true });
  try {
    // One wasm call per job, never one endless call: see worker_wait() in native/threads.c.
    while (exports.worker_wait(tid)) exports.worker_run(tid);
  } catch (err) {
    exports.pool_fail();
    self.postMessage({ tid, error: String(err && err.stack || err) });
  }
  self.close();
};
`;

export interface RuntimeOptions {
  threads: number;
  maxBytes: number;
  simd?: SimdLevel;
  /** The host's scratch allocator (ws_alloc): bytes -> address, valid until the current kernel returns. */
  wsAlloc: (bytes: number) => number;
  onWorkerError: (message: string) => void;
}

export async function startRuntime(options: RuntimeOptions): Promise<Runtime> {
  const { bytes, simd } = chooseModule(options.simd);
  const module = await WebAssembly.compile(bytes);
  const threads = Math.max(1, Math.floor(options.threads));
  // The linker's image (stack + data) is the memory's minimum; read it from the module's import.
  const maxPages = Math.floor(options.maxBytes / PAGE);
  const memory = new WebAssembly.Memory({ initial: 32, maximum: maxPages, shared: true });
  const instance = await WebAssembly.instantiate(module, {
    env: { memory, ws_alloc: (n: number) => options.wsAlloc(n) },
  });
  const exports = instance.exports as unknown as WasmExports;
  const scratchPerThread = align(Math.max(MIN_SCRATCH, exports.gemm_scratch_bytes()), 4096);
  const stacks = align(exports.heap_base(), 4096);
  const scratch = stacks + (threads - 1) * WORKER_STACK;
  const heapStart = scratch + threads * scratchPerThread;
  if (heapStart > memory.buffer.byteLength) {
    memory.grow(Math.ceil((heapStart - memory.buffer.byteLength) / PAGE));
  }
  exports.pool_init(threads, scratch, scratchPerThread);
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
  const workers: Worker[] = [];
  try {
    const ready: Promise<void>[] = [];
    for (let tid = 1; tid < threads; tid++) {
      const w = new WebWorker(url, { type: "module" });
      workers.push(w);
      ready.push(
        new Promise<void>((resolve, reject) => {
          w.onmessage = (e: MessageEvent) => {
            if (e.data?.ready) resolve();
            else if (e.data?.error) {
              reject(new BackendError(`wasm worker ${tid}: ${e.data.error}`));
              options.onWorkerError(`wasm worker ${tid}: ${e.data.error}`);
            }
          };
          w.onerror = (e) => {
            e.preventDefault();
            const msg = `wasm worker ${tid}: ${e.message}`;
            reject(new BackendError(msg));
            options.onWorkerError(msg);
          };
        }),
      );
      w.postMessage({ module, memory, tid, stackTop: stacks + tid * WORKER_STACK });
    }
    await Promise.all(ready);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  } finally {
    URL.revokeObjectURL(url);
  }
  return { memory, exports, simd, threads, heapStart, maxBytes: maxPages * PAGE, workers };
}

export function stopRuntime(rt: Runtime): void {
  rt.exports.pool_quit();
  for (const w of rt.workers) w.terminate();
  rt.workers.length = 0;
}
