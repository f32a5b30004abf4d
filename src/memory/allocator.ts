/**
 * A backend's allocation policy run on sizes alone, for the null backend: the CPU arena's placement
 * (allocator_arena.ts) or the WebGPU pool's size classes and free lists (allocator_pool.ts). The real
 * backends run the same policy classes, so on the same alloc/free sequence the simulated high-water bytes
 * are the real allocator's, exactly.
 */
import { ArenaPolicy } from "./allocator_arena.ts";
import { PoolPolicy } from "./allocator_pool.ts";

/** Which backend's allocator: `cpu` (and `wasm`, which shares its memory model) or `webgpu`. */
export type AllocatorTarget = "cpu" | "webgpu";

export interface AllocatorPeak {
  target: AllocatorTarget;
  /**
   * The allocator's high-water bytes: for the CPU arena the bytes it ever touched (resident), for the WebGPU
   * pool the most bytes of storage buffers it held at once (in use + cached free buffers).
   */
  peak_bytes: number;
  /** WebGPU: the most bytes of readback (MAP_READ) buffers held at once; 0 on the CPU. */
  readback_peak_bytes: number;
}

export class SimulatedAllocator {
  #arena: ArenaPolicy | null;
  #pool: PoolPolicy | null;
  #readbacks: PoolPolicy | null;
  /** What each live storage holds: an arena block or a pool class size. */
  #held = new Map<number, ReturnType<ArenaPolicy["place"]> | number>();

  constructor(readonly target: AllocatorTarget, options: { maxBufferSize?: number } = {}) {
    const max = options.maxBufferSize ?? 2 ** 32;
    this.#arena = target === "cpu" ? new ArenaPolicy() : null;
    this.#pool = target === "webgpu" ? new PoolPolicy(max) : null;
    this.#readbacks = target === "webgpu" ? new PoolPolicy(max) : null;
  }

  alloc(id: number, bytes: number): void {
    this.#held.set(id, this.#arena ? this.#arena.place(bytes) : this.#pool!.acquire(bytes).size);
  }

  free(id: number): void {
    const h = this.#held.get(id);
    if (h === undefined) throw new Error(`allocator: storage ${id} is not live`);
    this.#held.delete(id);
    if (typeof h === "number") this.#pool!.release(h);
    else this.#arena!.free(h);
  }

  /** A read of `bytes` (WebGPU copies through a pooled readback buffer, returned once mapped). */
  read(bytes: number): void {
    if (!this.#readbacks || bytes === 0) return;
    this.#readbacks.release(this.#readbacks.acquire(bytes).size);
  }

  peak(): AllocatorPeak {
    return {
      target: this.target,
      peak_bytes: this.#arena ? this.#arena.stats().residentBytes : this.#pool!.stats().peakBytes,
      readback_peak_bytes: this.#readbacks?.stats().peakBytes ?? 0,
    };
  }

  /** An independent copy of the state (the estimator starts every run from the state after model load). */
  clone(): SimulatedAllocator {
    const c = new SimulatedAllocator(this.target);
    c.#arena = this.#arena?.clone() ?? null;
    c.#pool = this.#pool?.clone() ?? null;
    c.#readbacks = this.#readbacks?.clone() ?? null;
    c.#held = new Map(this.#held);
    return c;
  }
}
