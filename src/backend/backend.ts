/**
 * The narrow Backend interface: allocate, free, write, read, run a primitive kernel, sync.
 *
 * Autograd, ops and models sit above it and never see a GPUBuffer or a typed array's owner. A third backend
 * (WASM SIMD CPU) implements this same interface and the kernel set in kernels.ts.
 */
import type { Category, Ledger } from "../memory/ledger.ts";
import type { KernelArgs, KernelName } from "./kernels.ts";

export type DType = "f32" | "u32";

/** A backend allocation. Refcounted: tensors that share it (views, saved copies) retain it. */
export interface Storage {
  readonly id: number;
  readonly length: number; // elements
  readonly dtype: DType;
  readonly bytes: number; // as counted by the ledger (the element bytes, not a pool's rounded size)
  category: Category;
  tag?: string;
  refs: number;
}

export interface AllocOptions {
  dtype?: DType;
  category: Category;
  tag?: string;
}

export type HostArray = Float32Array | Float64Array | Uint32Array;

export interface Backend {
  readonly name: "cpu" | "webgpu" | string;
  readonly ledger: Ledger;
  /** Element type of float storage: "f64" only on the CPU backend in gradient-check mode. */
  readonly floatPrecision: "f32" | "f64";
  /** Largest element count one storage may hold on this backend. */
  readonly maxElements: number;
  alloc(length: number, options: AllocOptions): Storage;
  /** Add a reference; pair with release. */
  retain(s: Storage): void;
  /** Drop a reference; the last one returns the memory (to a pool) and updates the ledger. */
  release(s: Storage): void;
  /** Recount a storage in another ledger category. */
  recategorize(s: Storage, category: Category, tag?: string): void;
  write(s: Storage, data: ArrayLike<number>, offset?: number): void;
  /** Copy out the storage's contents (waits for pending work). Float storages read as Float32Array or Float64Array. */
  read(s: Storage): Promise<HostArray>;
  run<K extends KernelName>(kernel: K, args: KernelArgs<K>): void;
  /** Wait until all submitted work is done; rejects with the backend's typed errors (OOM, validation, lost). */
  sync(): Promise<void>;
  dispose(): void;
}

/** A device ran out of memory; the governor's runtime guard reacts to this type. */
export class OutOfMemoryError extends Error {
  override name = "OutOfMemoryError";
  constructor(message: string, readonly requestedBytes?: number) {
    super(message);
  }
}

/** The device was lost or a kernel failed validation/compilation; message carries the backend's text. */
export class BackendError extends Error {
  override name = "BackendError";
}
