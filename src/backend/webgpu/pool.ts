/**
 * Device memory: a pool of storage buffers in size classes, and upload arenas for uniforms and staged
 * writes.
 *
 * Reusing a freed buffer for a later dispatch is safe without fences: everything runs on one queue, in order.
 * What is not safe is queue.writeBuffer into a reused buffer while unsubmitted work still reads the old
 * contents (writeBuffer runs before that work); the backend stages such writes through the command encoder
 * (see UploadArena), so the pool never has to track which buffers pending work reads.
 */

/** Byte size a request is rounded to. Small: powers of two; then quarter steps (<= 25% slack); huge: 4 MiB. */
export function sizeClass(bytes: number): number {
  const b = Math.max(bytes, 256);
  if (b <= 4096) return 2 ** Math.ceil(Math.log2(b));
  if (b > 64 * 2 ** 20) return Math.ceil(b / 2 ** 22) * 2 ** 22;
  const e = 2 ** (Math.floor(Math.log2(b)) - 2); // b lies in [4e, 8e): classes 4e, 5e, 6e, 7e, 8e
  return Math.ceil(b / e) * e;
}

export interface PoolStats {
  /** Buffers handed out and not yet returned, by their class sizes. */
  inUseBytes: number;
  /** Returned buffers kept for reuse. */
  freeBytes: number;
  buffers: number;
  freeBuffers: number;
  /** Requests served from the free lists / by creating a buffer. */
  hits: number;
  misses: number;
}

export class BufferPool {
  #free = new Map<number, GPUBuffer[]>();
  #inUse = 0;
  #freeBytes = 0;
  #buffers = 0;
  #freeBuffers = 0;
  #hits = 0;
  #misses = 0;

  constructor(
    private readonly create: (size: number) => GPUBuffer,
    private readonly maxBufferSize: number,
    private readonly log?: (line: string) => void,
  ) {}

  /** The size a request of `bytes` occupies (never above the device's maxBufferSize). */
  classOf(bytes: number): number {
    const c = sizeClass(bytes);
    return c <= this.maxBufferSize ? c : Math.ceil(bytes / 4) * 4;
  }

  acquire(bytes: number): GPUBuffer {
    const size = this.classOf(bytes);
    const list = this.#free.get(size);
    let buffer = list?.pop();
    if (buffer) {
      this.#hits++;
      this.#freeBytes -= size;
      this.#freeBuffers--;
    } else {
      buffer = this.create(size);
      this.#misses++;
      this.#buffers++;
      this.log?.(`create ${size} bytes for ${bytes} (pool: ${this.#buffers} buffers)`);
    }
    this.#inUse += size;
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    const size = buffer.size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(buffer);
    this.#inUse -= size;
    this.#freeBytes += size;
    this.#freeBuffers++;
  }

  /** Forget a buffer that must not be reused (its creation failed) and destroy it. */
  discard(buffer: GPUBuffer): void {
    this.#inUse -= buffer.size;
    this.#buffers--;
    buffer.destroy();
  }

  /** Destroy every cached free buffer; returns the bytes given back. Flush pending work before calling. */
  trim(): number {
    const bytes = this.#freeBytes;
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#buffers -= this.#freeBuffers;
    this.#free.clear();
    this.#freeBytes = 0;
    this.#freeBuffers = 0;
    if (bytes > 0) this.log?.(`trim: destroyed ${bytes} cached bytes`);
    return bytes;
  }

  get totalBytes(): number {
    return this.#inUse + this.#freeBytes;
  }

  stats(): PoolStats {
    return {
      inUseBytes: this.#inUse,
      freeBytes: this.#freeBytes,
      buffers: this.#buffers,
      freeBuffers: this.#freeBuffers,
      hits: this.#hits,
      misses: this.#misses,
    };
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
