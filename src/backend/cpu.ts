/**
 * The CPU backend: plain TypeScript, the reference definition of every kernel in kernels.ts.
 *
 * `new CpuBackend({ precision: "f64" })` holds floats in Float64Array for gradient checks against central
 * differences; the default f32 mode matches what devices compute.
 *
 * Storages are typed-array views into one arena (src/memory/allocator_arena.ts): a freed storage's bytes are
 * reused by the next allocation at once instead of waiting for the garbage collector, so the process holds
 * the arena's high-water mark, which the governor predicts exactly by running the same placement policy.
 */
import { ArenaPolicy, type ArenaStats, type Block } from "../memory/allocator_arena.ts";
import { type Category, Ledger } from "../memory/ledger.ts";
import {
  type AllocOptions,
  type Backend,
  type HostArray,
  OutOfMemoryError,
  type Storage,
} from "./backend.ts";
import type { KernelArgs, KernelName } from "./kernels.ts";
import { cpuKernels } from "./cpu/mod.ts";

export type FloatArray = Float32Array | Float64Array;

/** What a CPU kernel sees: the typed array behind each storage. */
export interface CpuMemory {
  f(s: Storage): FloatArray;
  u(s: Storage): Uint32Array;
}

export type CpuKernel<K extends KernelName> = (args: KernelArgs<K>, mem: CpuMemory) => void;
export type CpuKernelTable = { [K in KernelName]: CpuKernel<K> };

let nextStorageId = 1;
const EMPTY = new ArrayBuffer(0);

export class CpuBackend implements Backend, CpuMemory {
  readonly name = "cpu";
  readonly ledger = new Ledger();
  readonly floatPrecision: "f32" | "f64";
  readonly maxElements = 2 ** 31 - 1;
  readonly arena = new ArenaPolicy();
  /** The arena's slabs: ArrayBuffers whose pages become resident when first written. */
  #slabs: ArrayBuffer[] = [];
  #arrays = new Map<number, { array: HostArray; block: Block }>();

  constructor(options: { precision?: "f32" | "f64" } = {}) {
    this.floatPrecision = options.precision ?? "f32";
  }

  alloc(length: number, options: AllocOptions): Storage {
    if (!Number.isInteger(length) || length < 0 || length > this.maxElements) {
      throw new Error(`alloc(): invalid length ${length}`);
    }
    const dtype = options.dtype ?? "f32";
    const f64 = dtype === "f32" && this.floatPrecision === "f64";
    const block = this.arena.place(length * (f64 ? 8 : 4));
    const slab = this.#slab(block);
    const array = dtype === "u32"
      ? new Uint32Array(slab, block.offset, length)
      : f64
      ? new Float64Array(slab, block.offset, length)
      : new Float32Array(slab, block.offset, length);
    array.fill(0); // a reused block holds its previous owner's values
    // The ledger counts device bytes: 4 per element even when f64 is used for gradient checks.
    const s: Storage = {
      id: nextStorageId++,
      length,
      dtype,
      bytes: length * 4,
      category: options.category,
      refs: 1,
    };
    if (options.tag !== undefined) s.tag = options.tag;
    this.#arrays.set(s.id, { array, block });
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
    const entry = this.#arrays.get(s.id);
    if (!entry) throw new Error(`cpu backend: storage ${s.id} belongs to another backend`);
    this.#arrays.delete(s.id);
    this.arena.free(entry.block);
    this.ledger.freed(s.bytes, s.category, s.tag);
  }

  recategorize(s: Storage, category: Category, tag?: string): void {
    this.ledger.freed(s.bytes, s.category, s.tag);
    s.category = category;
    s.tag = tag;
    this.ledger.allocated(s.bytes, category, tag);
  }

  write(s: Storage, data: ArrayLike<number>, offset = 0): void {
    const a = this.#array(s);
    if (offset + data.length > a.length) {
      throw new Error(`write(): ${data.length} values at offset ${offset} overflow storage of ${a.length}`);
    }
    a.set(data, offset);
  }

  read(s: Storage): Promise<HostArray> {
    return Promise.resolve(this.#array(s).slice());
  }

  run<K extends KernelName>(kernel: K, args: KernelArgs<K>): void {
    const impl = cpuKernels[kernel] as CpuKernel<K> | undefined;
    if (!impl) throw new Error(`cpu backend: kernel "${kernel}" is not implemented`);
    impl(args, this);
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** The arena's bytes: resident (ever touched: what the process holds for tensors), live, reserved. */
  memoryStats(): ArenaStats {
    return this.arena.stats();
  }

  dispose(): void {
    this.#arrays.clear();
    this.#slabs = [];
  }

  f(s: Storage): FloatArray {
    const a = this.#array(s);
    if (a instanceof Uint32Array) {
      throw new Error(`cpu backend: storage ${s.id} is u32, a float was expected`);
    }
    return a;
  }

  u(s: Storage): Uint32Array {
    const a = this.#array(s);
    if (!(a instanceof Uint32Array)) {
      throw new Error(`cpu backend: storage ${s.id} is float, u32 was expected`);
    }
    return a;
  }

  #array(s: Storage): HostArray {
    const a = this.#arrays.get(s.id);
    if (!a) throw new Error(`cpu backend: storage ${s.id} was freed or belongs to another backend`);
    return a.array;
  }

  /** The slab a block lies in, reserved when the policy first opens it. */
  #slab(block: Block): ArrayBuffer {
    if (block.slab < 0) return EMPTY;
    while (this.#slabs.length <= block.slab) {
      const capacity = this.arena.slabCapacities[this.#slabs.length];
      try {
        this.#slabs.push(new ArrayBuffer(capacity));
      } catch {
        this.arena.free(block);
        throw new OutOfMemoryError(
          `cpu backend: cannot reserve an arena slab of ${capacity} bytes (for ${block.bytes})`,
          block.bytes,
        );
      }
    }
    return this.#slabs[block.slab];
  }
}
