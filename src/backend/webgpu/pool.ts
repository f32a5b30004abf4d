/**
 * Device memory: a pool of storage buffers in size classes, and upload arenas for uniforms and staged
 * writes.
 *
 * Reusing a freed buffer for a later dispatch is safe without fences: everything runs on one queue, in order.
 * What is not safe is queue.writeBuffer into a reused buffer while unsubmitted work still reads the old
 * contents (writeBuffer runs before that work); the backend stages such writes through the command encoder
 * (see UploadArena), so the pool never has to track which buffers pending work reads.
 */
import { PoolPolicy, type PoolStats } from "../../memory/allocator_pool.ts";

export { type PoolStats, sizeClass } from "../../memory/allocator_pool.ts";

/**
 * Storage buffers by size class. Which buffer a request gets is decided by PoolPolicy (size-only, shared
 * with the null backend so that the governor predicts the pool's high-water bytes); this class only keeps
 * the GPUBuffers behind the policy's counts.
 */
export class BufferPool {
  readonly policy: PoolPolicy;
  #free = new Map<number, GPUBuffer[]>();

  constructor(
    private readonly create: (size: number) => GPUBuffer,
    maxBufferSize: number,
    private readonly log?: (line: string) => void,
  ) {
    this.policy = new PoolPolicy(maxBufferSize);
  }

  /** The size a request of `bytes` occupies (never above the device's maxBufferSize). */
  classOf(bytes: number): number {
    return this.policy.classOf(bytes);
  }

  acquire(bytes: number): GPUBuffer {
    const { size, reused } = this.policy.acquire(bytes);
    if (reused) return this.#free.get(size)!.pop()!;
    try {
      const buffer = this.create(size);
      this.log?.(`create ${size} bytes for ${bytes} (pool: ${this.policy.stats().buffers} buffers)`);
      return buffer;
    } catch (e) {
      this.policy.discard(size);
      throw e;
    }
  }

  release(buffer: GPUBuffer): void {
    const size = buffer.size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(buffer);
    this.policy.release(size);
  }

  /** Forget a buffer that must not be reused (its creation failed) and destroy it. */
  discard(buffer: GPUBuffer): void {
    this.policy.discard(buffer.size);
    buffer.destroy();
  }

  /** Destroy every cached free buffer; returns the bytes given back. Flush pending work before calling. */
  trim(): number {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
    const bytes = this.policy.trim();
    if (bytes > 0) this.log?.(`trim: destroyed ${bytes} cached bytes`);
    return bytes;
  }

  get totalBytes(): number {
    return this.policy.totalBytes;
  }

  stats(): PoolStats {
    return this.policy.stats();
  }
}

interface ArenaChunk {
  buffer: GPUBuffer;
  shadow: Uint8Array<ArrayBuffer>;
  used: number;
}

/**
 * Bytes to upload with the next submit: uniform blocks, and writes that must land between encoded
 * dispatches. Callers encode commands that read the returned (buffer, offset) now; `upload` copies every
 * chunk's host shadow with queue.writeBuffer right before the command buffer is submitted. Reusing chunks
 * across submits is safe: a writeBuffer is queue-ordered after the previously submitted command buffers.
 */
export class UploadArena {
  #chunks: ArenaChunk[] = [];
  #current = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: GPUBufferUsageFlags,
    private readonly chunkSize: number,
    private readonly align: number,
  ) {}

  reserve(bytes: number): { buffer: GPUBuffer; offset: number; view: Uint8Array } {
    for (;;) {
      let chunk = this.#chunks[this.#current];
      if (!chunk || (chunk.used === 0 && bytes > chunk.shadow.length)) {
        // A write bigger than the chunk size gets a chunk of its own (kept and reused later).
        const size = Math.max(this.chunkSize, Math.ceil(bytes / 16) * 16);
        chunk = {
          buffer: this.device.createBuffer({ size, usage: this.usage }),
          shadow: new Uint8Array(size),
          used: 0,
        };
        this.#chunks.splice(this.#current, 0, chunk);
      }
      const offset = Math.ceil(chunk.used / this.align) * this.align;
      if (offset + bytes <= chunk.shadow.length) {
        chunk.used = offset + bytes;
        return { buffer: chunk.buffer, offset, view: chunk.shadow.subarray(offset, offset + bytes) };
      }
      this.#current++;
    }
  }

  get pending(): boolean {
    return this.#chunks.some((c) => c.used > 0);
  }

  upload(queue: GPUQueue): void {
    for (const c of this.#chunks) {
      if (c.used > 0) queue.writeBuffer(c.buffer, 0, c.shadow, 0, Math.ceil(c.used / 4) * 4);
      c.used = 0;
    }
    this.#current = 0;
  }

  get bytes(): number {
    return this.#chunks.reduce((s, c) => s + c.shadow.length, 0);
  }

  destroy(): void {
    for (const c of this.#chunks) c.buffer.destroy();
    this.#chunks = [];
  }
}
