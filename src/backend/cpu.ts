/**
 * The CPU backend: plain TypeScript, the reference definition of every kernel in kernels.ts.
 *
 * `new CpuBackend({ precision: "f64" })` holds floats in Float64Array for gradient checks against central
 * differences; the default f32 mode matches what devices compute.
 */
import { type Category, Ledger } from "../memory/ledger.ts";
import type { AllocOptions, Backend, HostArray, Storage } from "./backend.ts";
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

export class CpuBackend implements Backend, CpuMemory {
  readonly name = "cpu";
  readonly ledger = new Ledger();
  readonly floatPrecision: "f32" | "f64";
  readonly maxElements = 2 ** 31 - 1;
  #arrays = new Map<number, HostArray>();

  constructor(options: { precision?: "f32" | "f64" } = {}) {
    this.floatPrecision = options.precision ?? "f32";
  }

  alloc(length: number, options: AllocOptions): Storage {
    if (!Number.isInteger(length) || length < 0) throw new Error(`alloc(): invalid length ${length}`);
    const dtype = options.dtype ?? "f32";
    const array = dtype === "u32"
      ? new Uint32Array(length)
      : this.floatPrecision === "f64"
      ? new Float64Array(length)
      : new Float32Array(length);
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
    this.#arrays.set(s.id, array);
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
    this.#arrays.delete(s.id);
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

  dispose(): void {
    this.#arrays.clear();
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
    return a;
  }
}
