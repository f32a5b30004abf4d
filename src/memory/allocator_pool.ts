/**
 * The WebGPU buffer pool's policy, as size-only code: the size class a request is rounded to, and which
 * freed buffer serves it (the smallest free one that is large enough and not too large) or whether a new
 * buffer is created. The real pool (src/backend/webgpu/pool.ts)
 * keeps its GPUBuffers in lists that mirror these counts; the null backend runs the same policy on the same
 * alloc/free sequence, so the governor predicts the pool's high-water bytes exactly.
 */

/** Byte size a request is rounded to. Small: powers of two; then quarter steps (<= 25% slack); huge: 4 MiB. */
export function sizeClass(bytes: number): number {
  const b = Math.max(bytes, 256);
  if (b <= 4096) return 2 ** Math.ceil(Math.log2(b));
  if (b > 64 * 2 ** 20) return Math.ceil(b / 2 ** 22) * 2 ** 22;
  const e = 2 ** (Math.floor(Math.log2(b)) - 2); // b lies in [4e, 8e): classes 4e, 5e, 6e, 7e, 8e
  return Math.ceil(b / e) * e;
}

/** A free buffer up to this many times a request's class may serve it (bindings use the storage's size). */
export const REUSE_SLACK = 4;

export interface PoolStats {
  /** Buffers handed out and not yet returned, by their class sizes. */
  inUseBytes: number;
  /** Returned buffers kept for reuse. */
  freeBytes: number;
  /** The most bytes the pool held at once (in use + free): what it has cost the device. */
  peakBytes: number;
  buffers: number;
  freeBuffers: number;
  /** Requests served from the free lists / by creating a buffer. */
  hits: number;
  misses: number;
}

export class PoolPolicy {
  /** Free buffers per class size. */
  #free = new Map<number, number>();
  #inUse = 0;
  #freeBytes = 0;
  #peak = 0;
  #buffers = 0;
  #freeBuffers = 0;
  #hits = 0;
  #misses = 0;

  constructor(readonly maxBufferSize: number) {}

  /** The size a request of `bytes` occupies (never above the device's maxBufferSize). */
  classOf(bytes: number): number {
    const c = sizeClass(bytes);
    return c <= this.maxBufferSize ? c : Math.ceil(bytes / 4) * 4;
  }

  /** Take a buffer for `bytes`: a free one of its class (`reused`) or a new one. */
  acquire(bytes: number): { size: number; reused: boolean } {
    let size = this.classOf(bytes);
    // Best fit among free buffers up to REUSE_SLACK times the class: a pool that only reuses its own class
    // held 2.2-2.8x the ledger's peak on the governor's traces; this holds 1.3-1.8x.
    let best = Infinity;
    for (const [c, n] of this.#free) if (n > 0 && c >= size && c <= size * REUSE_SLACK && c < best) best = c;
    const reused = best !== Infinity;
    if (reused) size = best;
    const free = this.#free.get(size) ?? 0;
    if (reused) {
      this.#free.set(size, free - 1);
      this.#hits++;
      this.#freeBytes -= size;
      this.#freeBuffers--;
    } else {
      this.#misses++;
      this.#buffers++;
    }
    this.#inUse += size;
    this.#peak = Math.max(this.#peak, this.totalBytes);
    return { size, reused };
  }

  release(size: number): void {
    this.#free.set(size, (this.#free.get(size) ?? 0) + 1);
    this.#inUse -= size;
    this.#freeBytes += size;
    this.#freeBuffers++;
  }

  /** A buffer that is not returned to the free lists (its creation failed). */
  discard(size: number): void {
    this.#inUse -= size;
    this.#buffers--;
  }

  /** Whether a request would take the pool over `limitBytes` unless free buffers are destroyed first. */
  wouldExceed(bytes: number, limitBytes: number): boolean {
    return this.totalBytes + this.classOf(bytes) > limitBytes;
  }

  /** Forget every free buffer; returns their bytes. */
  trim(): number {
    const bytes = this.#freeBytes;
    this.#buffers -= this.#freeBuffers;
    this.#free.clear();
    this.#freeBytes = 0;
    this.#freeBuffers = 0;
    return bytes;
  }

  get totalBytes(): number {
    return this.#inUse + this.#freeBytes;
  }

  stats(): PoolStats {
    return {
      inUseBytes: this.#inUse,
      freeBytes: this.#freeBytes,
      peakBytes: this.#peak,
      buffers: this.#buffers,
      freeBuffers: this.#freeBuffers,
      hits: this.#hits,
      misses: this.#misses,
    };
  }

  /** Start a new peak window at the current total. */
  resetPeak(): void {
    this.#peak = this.totalBytes;
  }

  clone(): PoolPolicy {
    const c = new PoolPolicy(this.maxBufferSize);
    c.#free = new Map(this.#free);
    c.#inUse = this.#inUse;
    c.#freeBytes = this.#freeBytes;
    c.#peak = this.#peak;
    c.#buffers = this.#buffers;
    c.#freeBuffers = this.#freeBuffers;
    c.#hits = this.#hits;
    c.#misses = this.#misses;
    return c;
  }
}
