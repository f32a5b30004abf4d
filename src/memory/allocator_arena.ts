/**
 * The CPU backend's arena placement policy, as size-only code: where each storage sits in a few large
 * slabs. The CPU backend (src/backend/cpu.ts) runs it on real ArrayBuffers; the null backend runs it on the
 * same alloc/free sequence, so the governor predicts the arena's resident bytes exactly.
 *
 * Why an arena: a Float32Array per storage is freed only when the garbage collector gets to it, and malloc
 * keeps the pages after that, so a process held 3x its ledger peak. Slabs are plain ArrayBuffers of
 * SLAB_BYTES, reserved but untouched (their pages are not resident until written), and never given back:
 * the process holds what the arena has ever touched, and that is what this policy counts. (A resizable
 * ArrayBuffer would be the obvious slab, but V8 15 runs typed-array loops on one about 5x slower.)
 *
 * Placement is best fit over an address-ordered free list with coalescing; a request that no free block
 * holds goes to the lowest slab with room above its top, else to a new slab. Small blocks (per-channel
 * parameters, optimizer moments, scalars) live in slabs of their own, so that they do not split the holes
 * large activations leave: on the governor's traces (TENT, SAR on mobilenet_v2 and the IRB net) that cuts
 * the arena's overhead over the ledger's peak from 16-42% to 3-28% (BN adaptation, forward only, goes from
 * 7-16% to 15-24%: fewer, larger holes suit it less).
 */

/** Every block starts on this boundary: Float64Array views (gradient checks) need 8. */
export const ARENA_ALIGN = 8;
/** Capacity of a slab (address space, not memory: only touched pages count). */
export const SLAB_BYTES = 2 ** 30;
/** Slabs for larger requests are rounded up to this. */
const SLAB_GRAIN = 2 ** 20;
/** Requests below this many bytes go to the small-block slabs, which are smaller. */
export const SMALL_BLOCK = 2 ** 14;
const SMALL_SLAB_BYTES = 2 ** 26;

export interface Block {
  /** Index of the slab; -1 for an empty request (no memory). */
  readonly slab: number;
  readonly offset: number;
  /** Bytes reserved (the request rounded up to ARENA_ALIGN). */
  readonly bytes: number;
}

interface Free {
  offset: number;
  bytes: number;
}

interface Slab {
  /** Whether it holds small blocks (below SMALL_BLOCK) or large ones. */
  small: boolean;
  capacity: number;
  /** End of the highest allocated block: everything above it is free. */
  top: number;
  /** The highest `top` ever: bytes below it have been written (allocations are zero-filled). */
  touched: number;
  /** Free blocks below `top`, by offset; none of them ends at `top` (it is merged into it). */
  free: Free[];
}

export interface ArenaStats {
  /** Bytes the arena has ever touched: what it adds to the process's resident memory. */
  residentBytes: number;
  /** Bytes in live blocks. */
  liveBytes: number;
  /** Address space reserved by the slabs. */
  reservedBytes: number;
  slabs: number;
}

export class ArenaPolicy {
  #slabs: Slab[] = [];
  #live = 0;

  constructor(readonly slabBytes = SLAB_BYTES) {}

  /** Capacity of each slab, in the order they were opened. */
  get slabCapacities(): number[] {
    return this.#slabs.map((s) => s.capacity);
  }

  place(bytes: number): Block {
    if (bytes === 0) return { slab: -1, offset: 0, bytes: 0 };
    const size = Math.ceil(bytes / ARENA_ALIGN) * ARENA_ALIGN;
    const small = size < SMALL_BLOCK;
    this.#live += size;
    // Best fit: the smallest free block that holds the request (the first of equals: lowest address).
    let bestSlab = -1, bestIndex = -1, bestBytes = Infinity;
    for (let k = 0; k < this.#slabs.length; k++) {
      if (this.#slabs[k].small !== small) continue;
      const free = this.#slabs[k].free;
      for (let i = 0; i < free.length; i++) {
        if (free[i].bytes >= size && free[i].bytes < bestBytes) {
          bestSlab = k;
          bestIndex = i;
          bestBytes = free[i].bytes;
        }
      }
    }
    if (bestSlab >= 0) {
      const free = this.#slabs[bestSlab].free;
      const f = free[bestIndex];
      const offset = f.offset;
      if (f.bytes === size) free.splice(bestIndex, 1);
      else {
        f.offset += size;
        f.bytes -= size;
      }
      return { slab: bestSlab, offset, bytes: size };
    }
    let k = this.#slabs.findIndex((s) => s.small === small && s.capacity - s.top >= size);
    if (k < 0) {
      k = this.#slabs.length;
      const base = small ? Math.min(SMALL_SLAB_BYTES, this.slabBytes) : this.slabBytes;
      const capacity = Math.max(base, Math.ceil(size / SLAB_GRAIN) * SLAB_GRAIN);
      this.#slabs.push({ small, capacity, top: 0, touched: 0, free: [] });
    }
    const s = this.#slabs[k];
    const offset = s.top;
    s.top += size;
    s.touched = Math.max(s.touched, s.top);
    return { slab: k, offset, bytes: size };
  }

  free(b: Block): void {
    if (b.bytes === 0) return;
    const s = this.#slabs[b.slab];
    if (!s || b.offset + b.bytes > s.top) throw new Error(`arena: block at ${b.offset} is not allocated`);
    this.#live -= b.bytes;
    // Insert by offset, then merge with the neighbours it touches.
    let lo = 0, hi = s.free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s.free[mid].offset < b.offset) lo = mid + 1;
      else hi = mid;
    }
    const prev = s.free[lo - 1], next = s.free[lo];
    if ((prev && prev.offset + prev.bytes > b.offset) || (next && b.offset + b.bytes > next.offset)) {
      throw new Error(`arena: block at ${b.offset} was freed twice`);
    }
    let block: Free = { offset: b.offset, bytes: b.bytes };
    if (prev && prev.offset + prev.bytes === block.offset) {
      prev.bytes += block.bytes;
      block = prev;
    } else {
      s.free.splice(lo, 0, block);
      lo++;
    }
    if (next && block.offset + block.bytes === next.offset) {
      block.bytes += next.bytes;
      s.free.splice(lo, 1);
    }
    if (block.offset + block.bytes === s.top) {
      s.top = block.offset;
      s.free.splice(s.free.indexOf(block), 1);
    }
  }

  stats(): ArenaStats {
    return {
      residentBytes: this.#slabs.reduce((n, s) => n + s.touched, 0),
      liveBytes: this.#live,
      reservedBytes: this.#slabs.reduce((n, s) => n + s.capacity, 0),
      slabs: this.#slabs.length,
    };
  }

  /** An independent copy (the estimator restores the state after the model loaded before each run). */
  clone(): ArenaPolicy {
    const c = new ArenaPolicy(this.slabBytes);
    c.#slabs = this.#slabs.map((s) => ({ ...s, free: s.free.map((f) => ({ ...f })) }));
    c.#live = this.#live;
    return c;
  }
}
