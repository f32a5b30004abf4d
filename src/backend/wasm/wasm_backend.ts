/**
 * The wasm backend: WebAssembly SIMD kernels on a fixed pool of worker threads over one shared memory, the
 * fast path on machines without a GPU that WebGPU can use.
 *
 * Every storage is a block of the shared memory (heap.ts); run() calls into C on this thread, which splits
 * the kernel into tasks for the pool and returns when they are done, so run() is synchronous and sync()
 * has nothing to wait for. Kernel scratch (split reductions, col2im buffers) is allocated through the same
 * pool as "workspace" storages that live until run() returns, so the ledger sees it as it sees WebGPU's.
 */
import { type Category, Ledger } from "../../memory/ledger.ts";
import {
  type AllocOptions,
  type Backend,
  BackendError,
  type HostArray,
  OutOfMemoryError,
  type Storage,
} from "../backend.ts";
import type { CpuMemory } from "../cpu.ts";
import type { KernelArgs, KernelName } from "../kernels.ts";
import type { WasmContext, WasmKernel } from "./context.ts";
import { Heap, type HeapStats } from "./heap.ts";
import { wasmKernels } from "./kernel_table.ts";
import { type Runtime, type SimdLevel, stopRuntime, type WasmExports } from "./runtime.ts";

let nextStorageId = 1;

/** Bytes reserved for small int32 kernel arguments (binary's shape and strides). */
const ARG_BYTES = 256;

export interface WasmMemoryStats extends HeapStats {
  /** Element bytes of live storages, as the ledger counts them. */
  ledgerBytes: number;
}

export class WasmBackend implements Backend, WasmContext {
  readonly name = "wasm";
  readonly ledger = new Ledger();
  readonly floatPrecision = "f32";
  readonly maxElements: number;
  readonly threads: number;
  readonly simd: SimdLevel;
  readonly exports: WasmExports;
  readonly cpu: CpuMemory;
  #rt: Runtime;
  #heap: Heap;
  #addrs = new Map<number, number>();
  #f32!: Float32Array;
  #u32!: Uint32Array;
  #i32!: Int32Array;
  #args: number;
  #temps: Storage[] = [];
  #running = false;
  #failure: string | null = null;
  #disposed = false;
  onDispose?: () => void;

  constructor(rt: Runtime) {
    this.#rt = rt;
    this.exports = rt.exports;
    this.threads = rt.threads;
    this.simd = rt.simd;
    this.#heap = new Heap(rt.memory, rt.heapStart, rt.maxBytes, () => this.#views());
    this.#args = this.#heap.acquire(ARG_BYTES);
    this.#views();
    this.maxElements = Math.min(2 ** 31 - 1, Math.floor((rt.maxBytes - rt.heapStart) / 4));
    this.cpu = {
      f: (s) => new Float32Array(this.#rt.memory.buffer, this.addr(s), s.length),
      u: (s) => new Uint32Array(this.#rt.memory.buffer, this.addr(s), s.length),
    };
  }

  /** A worker reported an error (it never should): every later run() throws it. */
  workerFailed(message: string): void {
    this.#failure ??= message;
  }

  #views(): void {
    const buf = this.#rt.memory.buffer;
    this.#f32 = new Float32Array(buf);
    this.#u32 = new Uint32Array(buf);
    this.#i32 = new Int32Array(buf);
  }

  alloc(length: number, options: AllocOptions): Storage {
    this.#alive();
    if (!Number.isInteger(length) || length < 0) throw new Error(`alloc(): invalid length ${length}`);
    if (length > this.maxElements) {
      throw new OutOfMemoryError(
        `alloc(): ${length} elements exceed the wasm backend's maximum of ${this.maxElements}`,
        length * 4,
      );
    }
    const dtype = options.dtype ?? "f32";
    const bytes = length * 4;
    const addr = this.#heap.acquire(bytes);
    const s: Storage = { id: nextStorageId++, length, dtype, bytes, category: options.category, refs: 1 };
    if (options.tag !== undefined) s.tag = options.tag;
    this.#addrs.set(s.id, addr);
    this.ledger.allocated(bytes, s.category, s.tag);
    return s;
  }

  retain(s: Storage): void {
    if (s.refs <= 0) throw new Error(`retain(): storage ${s.id} was already freed`);
    s.refs++;
  }

  release(s: Storage): void {
    if (s.refs <= 0) throw new Error(`release(): storage ${s.id} was already freed`);
    if (--s.refs > 0) return;
    const addr = this.#addrs.get(s.id);
    if (addr === undefined) throw new Error(`release(): storage ${s.id} belongs to another backend`);
    this.#addrs.delete(s.id);
    this.#heap.release(addr, s.bytes);
    this.ledger.freed(s.bytes, s.category, s.tag);
  }

  recategorize(s: Storage, category: Category, tag?: string): void {
    this.ledger.freed(s.bytes, s.category, s.tag);
    s.category = category;
    s.tag = tag;
    this.ledger.allocated(s.bytes, category, tag);
  }

  write(s: Storage, data: ArrayLike<number>, offset = 0): void {
    if (offset + data.length > s.length) {
      throw new Error(`write(): ${data.length} values at offset ${offset} overflow storage of ${s.length}`);
    }
    const at = this.addr(s) / 4 + offset;
    (s.dtype === "u32" ? this.#u32 : this.#f32).set(data, at);
  }

  read(s: Storage): Promise<HostArray> {
    const at = this.addr(s) / 4;
    const view = s.dtype === "u32" ? this.#u32 : this.#f32;
    // slice() of a view over shared memory copies into an ordinary (unshared) buffer.
    return Promise.resolve(view.slice(at, at + s.length));
  }

  run<K extends KernelName>(kernel: K, args: KernelArgs<K>): void {
    this.#alive();
    const impl = wasmKernels[kernel] as WasmKernel<K> | undefined;
    if (!impl) throw new Error(`wasm backend: kernel "${kernel}" is not implemented`);
    if (this.#running) throw new Error(`wasm backend: run("${kernel}") re-entered`);
    this.#running = true;
    try {
      impl(args, this);
    } finally {
      this.#running = false;
      for (const t of this.#temps) this.release(t);
      this.#temps.length = 0;
    }
    if (this.exports.pool_failed()) this.#failure ??= "a worker thread failed";
    if (this.#failure) throw new BackendError(`wasm backend: ${this.#failure}`);
  }

  sync(): Promise<void> {
    if (this.#failure) return Promise.reject(new BackendError(`wasm backend: ${this.#failure}`));
    return Promise.resolve();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    stopRuntime(this.#rt);
    this.#addrs.clear();
    this.onDispose?.();
  }

  addr(s: Storage): number {
    const a = this.#addrs.get(s.id);
    if (a === undefined) {
      throw new Error(`wasm backend: storage ${s.id} was freed or belongs to another backend`);
    }
    return a;
  }

  addrOr0(s: Storage | undefined): number {
    return s ? this.addr(s) : 0;
  }

  ints(...arrays: number[][]): number[] {
    const out: number[] = [];
    let at = this.#args / 4;
    for (const a of arrays) {
      if ((at - this.#args / 4 + a.length) * 4 > ARG_BYTES) {
        throw new Error("wasm backend: kernel arguments too long");
      }
      out.push(at * 4);
      this.#i32.set(a, at);
      at += a.length;
    }
    return out;
  }

  /** The host side of native ws_alloc(): scratch that lives until the current run() returns. */
  scratch(bytes: number): number {
    const s = this.alloc(Math.ceil(bytes / 4), { category: "workspace" });
    this.#temps.push(s);
    return this.addr(s);
  }

  memoryStats(): WasmMemoryStats {
    return { ...this.#heap.stats(), ledgerBytes: this.ledger.liveBytes };
  }

  #alive(): void {
    if (this.#disposed) throw new BackendError("wasm backend: used after dispose()");
  }
}
