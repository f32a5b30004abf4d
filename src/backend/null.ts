/**
 * The null backend: storages are sizes only, `run` does nothing, `read` returns zeros.
 *
 * The governor runs the real model and the real method step on it and reads its ledger, so an estimate is
 * what the code allocates, by construction: there is no second model of the engine to keep in step. Every
 * allocation, retain, release and recategorisation is counted exactly as the CPU backend counts it. Host
 * code that branches on data sees zeros (views of one shared buffer, valid until the next read); methods expose a "plan" switch that takes the most expensive side
 * of such branches (src/methods/registry.ts).
 *
 * With `allocator`, it also runs a real backend's allocation policy (src/memory/allocator.ts) on the same
 * alloc/free sequence: the CPU arena's placement or the WebGPU pool's size classes and free lists, so the
 * estimate includes the bytes that allocator holds at its high-water mark, not only the ledger's.
 */
import { type AllocatorTarget, SimulatedAllocator } from "../memory/allocator.ts";
import { type Category, Ledger } from "../memory/ledger.ts";
import type { AllocOptions, Backend, HostArray, Storage } from "./backend.ts";
import type { KernelArgs, KernelName } from "./kernels.ts";

let nextStorageId = 1;

export interface NullBackendOptions {
  /** The backend whose allocator to simulate (none by default: the ledger only). */
  allocator?: AllocatorTarget;
  /** The WebGPU device's maxBufferSize, for the pool's size classes (default 2^32). */
  maxBufferSize?: number;
}

export class NullBackend implements Backend {
  readonly name = "null";
  readonly ledger = new Ledger();
  readonly floatPrecision = "f32";
  readonly maxElements = 2 ** 31 - 1;
  /** The simulated allocator, when one was asked for. */
  allocator: SimulatedAllocator | null;
  /** Allocations made so far (the estimator derives the JS garbage of a step from it). */
  allocations = 0;
  #zeros = new ArrayBuffer(0);

  constructor(options: NullBackendOptions = {}) {
    this.allocator = options.allocator
      ? new SimulatedAllocator(options.allocator, { maxBufferSize: options.maxBufferSize })
      : null;
  }

  alloc(length: number, options: AllocOptions): Storage {
    if (!Number.isInteger(length) || length < 0) throw new Error(`alloc(): invalid length ${length}`);
    const s: Storage = {
      id: nextStorageId++,
      length,
      dtype: options.dtype ?? "f32",
      bytes: length * 4,
      category: options.category,
      refs: 1,
    };
    if (options.tag !== undefined) s.tag = options.tag;
    this.allocations++;
    this.allocator?.alloc(s.id, s.bytes);
    this.ledger.allocated(s.bytes, s.category, s.tag);
    return s;
  }

  retain(s: Storage): void {
    if (s.refs <= 0) throw new Error(`retain(): storage ${s.id} was already freed`);
    s.refs++;
  }

  release(s: Storage): void {
    if (s.refs <= 0) throw new Error(`release(): storage ${s.id} was already freed`);
    if (--s.refs > 0) return;
    this.allocator?.free(s.id);
    this.ledger.freed(s.bytes, s.category, s.tag);
  }

  recategorize(s: Storage, category: Category, tag?: string): void {
    this.ledger.freed(s.bytes, s.category, s.tag);
    s.category = category;
    s.tag = tag;
    this.ledger.allocated(s.bytes, category, tag);
  }

  write(s: Storage, data: ArrayLike<number>, offset = 0): void {
    if (s.refs <= 0) throw new Error(`write(): storage ${s.id} was already freed`);
    if (offset + data.length > s.length) {
      throw new Error(`write(): ${data.length} values at offset ${offset} overflow storage of ${s.length}`);
    }
  }

  read(s: Storage): Promise<HostArray> {
    if (s.refs <= 0) throw new Error(`read(): storage ${s.id} was already freed`);
    this.allocator?.read(s.bytes);
    // Zeros in one shared buffer: the governor's many runs would otherwise leave megabytes of garbage per
    // estimate (a method's host copy of the parameters, every chunk's logits) in the process it plans for.
    if (this.#zeros.byteLength < s.bytes) this.#zeros = new ArrayBuffer(s.bytes);
    const out = s.dtype === "u32"
      ? new Uint32Array(this.#zeros, 0, s.length)
      : new Float32Array(this.#zeros, 0, s.length);
    out.fill(0); // a caller may have written into the last one
    return Promise.resolve(out);
  }

  run<K extends KernelName>(_kernel: K, _args: KernelArgs<K>): void {}

  sync(): Promise<void> {
    return Promise.resolve();
  }

  dispose(): void {}
}
