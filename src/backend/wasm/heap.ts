/**
 * The wasm backend's storage allocator over its one shared WebAssembly.Memory.
 *
 * Blocks come in size classes (webgpu/pool.ts's sizeClass: powers of two to 4 KiB, then quarter steps), are
 * 64-byte aligned, and go back to a free list per class when released, so a training step that allocates the
 * same tensors every time reuses the same blocks and the hot path never grows memory. New blocks are cut
 * from the top of the heap; when the top passes the memory's size the memory grows (never shrinks: a
 * WebAssembly memory cannot), and a grow the host refuses (past the memory's maximum, or no system memory
 * left) becomes the OutOfMemoryError the governor's runtime guard reacts to.
 */
import { OutOfMemoryError } from "../backend.ts";
import { sizeClass } from "../webgpu/pool.ts";

export const PAGE = 65536;
const ALIGN = 64;

export interface HeapStats {
  /** Class bytes handed out and not yet returned. */
  inUseBytes: number;
  /** Returned blocks kept for reuse. */
  freeBytes: number;
  /** Bytes of memory: what the process holds for this backend. */
  memoryBytes: number;
  /** Blocks ever cut from the top, and requests served from a free list. */
  blocks: number;
  hits: number;
}

export class Heap {
  #free = new Map<number, number[]>();
  #top: number;
  #inUse = 0;
  #freeBytes = 0;
  #blocks = 0;
  #hits = 0;

  /** `onGrow` runs after the memory grew (views over memory.buffer must be made again). */
  constructor(
    readonly memory: WebAssembly.Memory,
    readonly start: number,
    readonly maxBytes: number,
    private readonly onGrow: () => void,
  ) {
    this.#top = align(start, ALIGN);
  }

  /** The size a request of `bytes` occupies. */
  classOf(bytes: number): number {
    return align(sizeClass(bytes), ALIGN);
  }

  /** A block of at least `bytes` (its class size); returns its byte address. */
  acquire(bytes: number): number {
    const size = this.classOf(bytes);
    const list = this.#free.get(size);
    const reused = list?.pop();
    if (reused !== undefined) {
      this.#hits++;
      this.#freeBytes -= size;
      this.#inUse += size;
      return reused;
    }
    const addr = this.#top;
    this.ensure(addr + size, bytes);
    this.#top = addr + size;
    this.#blocks++;
    this.#inUse += size;
    return addr;
  }

  release(addr: number, bytes: number): void {
    const size = this.classOf(bytes);
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(addr);
    this.#inUse -= size;
    this.#freeBytes += size;
  }

  /** Grow the memory so that bytes [0, end) exist; `requested` names the allocation in the error. */
  ensure(end: number, requested = end): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    if (end > this.maxBytes) {
      throw new OutOfMemoryError(
        `wasm backend: ${requested} bytes do not fit: the heap would reach ${end} bytes, past its maximum of ` +
          `${this.maxBytes} bytes (${this.#inUse} in use, ${this.#freeBytes} pooled)`,
        requested,
      );
    }
    // Grow by at least an eighth of what exists, so a growing workload does not grow page by page.
    const want = Math.min(this.maxBytes, Math.max(end, have + Math.floor(have / 8)));
    const pages = Math.ceil((want - have) / PAGE);
    try {
      this.memory.grow(pages);
    } catch (e) {
      // A smaller step may still succeed when the generous one did not.
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        throw new OutOfMemoryError(
          `wasm backend: cannot grow memory to ${end} bytes for ${requested} bytes: ${(e as Error).message}`,
          requested,
        );
      }
    }
    this.onGrow();
  }

  stats(): HeapStats {
    return {
      inUseBytes: this.#inUse,
      freeBytes: this.#freeBytes,
      memoryBytes: this.memory.buffer.byteLength,
      blocks: this.#blocks,
      hits: this.#hits,
    };
  }
}

export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
