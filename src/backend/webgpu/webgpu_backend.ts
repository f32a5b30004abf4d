/**
 * The WebGPU backend: storages in pooled GPU buffers, kernels encoded lazily into one command buffer.
 *
 * run() only encodes: dispatches go into one pending compute pass, and read()/sync() submit it, so a whole
 * training step is one command buffer. Errors are caught by error scopes pushed per batch (one batch = the
 * work between two submits) and checked at the next read()/sync(); nothing awaits per dispatch.
 */
import { type Category, Ledger } from "../../memory/ledger.ts";
import {
  type AllocOptions,
  type Backend,
  BackendError,
  type DType,
  type HostArray,
  OutOfMemoryError,
  type Storage,
} from "../backend.ts";
import type { KernelArgs, KernelName } from "../kernels.ts";
import type { Binding, DispatchOptions, EntryName, GpuContext, GpuKernel, RawDispatch } from "./context.ts";
import type { ShaderName } from "./_kernels_gen.ts";
import { type AcquiredDevice, type DebugFlags, debugFlags, debugLog, stricterLimits } from "./device.ts";
import { webgpuKernels } from "./kernel_table.ts";
import { PipelineCache } from "./pipelines.ts";
import { packUniforms, type UniformLayout } from "./wgsl_reflect.ts";
import { BufferPool, type PoolStats } from "./pool.ts";
import { CommandBatch } from "./batch.ts";

export interface WebGpuBackendOptions {
  /**
   * Soft device memory cap: an alloc that would take the ledger's live bytes over it throws
   * OutOfMemoryError, as a device of that size would (the governor uses it to simulate small devices).
   */
  memoryLimitBytes?: number;
  /** Overrides EDGETRAIN_DEBUG, e.g. "shaders,dispatch,memory". */
  debug?: string;
  /**
   * Stricter limits than the device's (lower max*, higher min*), as kernels and allocations see them: tests
   * exercise the chunked paths on small tensors, and a big GPU can pose as a small one.
   */
  limits?: Partial<Record<keyof GPUSupportedLimits, number>>;
}

export interface WebGpuMemoryStats extends PoolStats {
  /** Element bytes of live storages, as the ledger counts them. */
  ledgerBytes: number;
  /** Bytes in the uniform and staging arenas and in readback buffers. */
  uploadBytes: number;
  readbackBytes: number;
  pipelines: number;
  submits: number;
}

/** Writes above this size while work is pending submit that work and use queue.writeBuffer directly. */
const MAX_STAGED_WRITE = 16 * 2 ** 20;

let nextStorageId = 1;

interface ResolvedBinding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

export class WebGpuBackend implements Backend, GpuContext {
  readonly name = "webgpu";
  readonly ledger = new Ledger();
  readonly floatPrecision = "f32";
  readonly maxElements: number;
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  readonly adapterDescription: string;
  readonly memoryLimitBytes: number;
  readonly debug: DebugFlags;
  #pool: BufferPool;
  #readbacks: BufferPool;
  #pipelines: PipelineCache;
  #batch: CommandBatch;
  #buffers = new Map<number, { storage: Storage; buffer: GPUBuffer }>();
  #invalid = new WeakSet<GPUBuffer>();
  #runDepth = 0;
  #temps: Storage[] = [];
  #requested = 0;
  onDispose?: () => void;

  constructor(acquired: AcquiredDevice, options: WebGpuBackendOptions = {}) {
    const { device } = acquired;
    this.device = device;
    this.limits = options.limits ? stricterLimits(device.limits, options.limits) : device.limits;
    this.adapterDescription = acquired.description;
    this.maxElements = Math.floor(this.limits.maxBufferSize / 4);
    this.memoryLimitBytes = options.memoryLimitBytes ?? Infinity;
    this.debug = debugFlags(options.debug);
    const memLog = this.debug.memory ? (l: string) => debugLog("memory", l) : undefined;
    // GPUBufferUsage is read here, not at module load, so importing this file without WebGPU still works.
    const storageUsage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#pool = new BufferPool(
      (size) => this.#createBuffer(size, storageUsage),
      this.limits.maxBufferSize,
      memLog,
    );
    this.#readbacks = new BufferPool(
      (size) => this.#createBuffer(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST),
      this.limits.maxBufferSize,
    );
    this.#pipelines = new PipelineCache(
      device,
      this.debug.shaders ? (l) => debugLog("shaders", l) : undefined,
    );
    this.#batch = new CommandBatch(device, this.limits, () => this.#pipelines.compileErrors());
  }

  /** Register (or replace) a WGSL source under a shader name (extensions, tests). */
  registerShader(name: string, source: string): void {
    this.#pipelines.register(name, source);
  }

  alloc(length: number, options: AllocOptions): Storage {
    this.#batch.alive();
    if (!Number.isInteger(length) || length < 0) throw new Error(`alloc(): invalid length ${length}`);
    const dtype = options.dtype ?? "f32";
    const bytes = length * 4;
    if (bytes > this.limits.maxBufferSize) {
      throw new OutOfMemoryError(
        `alloc(): ${length} elements (${bytes} bytes) exceed this device's maxBufferSize of ` +
          `${this.limits.maxBufferSize} bytes`,
        bytes,
      );
    }
    if (this.ledger.liveBytes + bytes > this.memoryLimitBytes) {
      throw new OutOfMemoryError(
        `alloc(): ${bytes} bytes of ${options.category} would exceed the memory limit of ` +
          `${this.memoryLimitBytes} bytes (${this.ledger.liveBytes} live)`,
        bytes,
      );
    }
    // Cached free buffers must not push the device over the cap either.
    if (this.#pool.totalBytes + this.#pool.classOf(bytes) > this.memoryLimitBytes) this.trim();
    this.#requested = bytes;
    const buffer = this.#pool.acquire(bytes);
    const s: Storage = { id: nextStorageId++, length, dtype, bytes, category: options.category, refs: 1 };
    if (options.tag !== undefined) s.tag = options.tag;
    this.#buffers.set(s.id, { storage: s, buffer });
    this.ledger.allocated(bytes, s.category, s.tag);
    if (this.debug.memory) debugLog("memory", `alloc #${s.id} ${dtype}[${length}] ${s.category}`);
    return s;
  }

  retain(s: Storage): void {
    if (s.refs <= 0) throw new Error(`retain(): storage ${s.id} was already freed`);
    s.refs++;
  }

  release(s: Storage): void {
    if (s.refs <= 0) throw new Error(`release(): storage ${s.id} was already freed`);
    if (--s.refs > 0) return;
    const entry = this.#entry(s);
    this.#buffers.delete(s.id);
    this.ledger.freed(s.bytes, s.category, s.tag);
    if (this.debug.memory) debugLog("memory", `free #${s.id} ${s.dtype}[${s.length}] ${s.category}`);
    if (this.#invalid.has(entry.buffer)) this.#pool.discard(entry.buffer);
    else this.#pool.release(entry.buffer);
  }

  recategorize(s: Storage, category: Category, tag?: string): void {
    this.ledger.freed(s.bytes, s.category, s.tag);
    s.category = category;
    s.tag = tag;
    this.ledger.allocated(s.bytes, category, tag);
  }

  write(s: Storage, data: ArrayLike<number>, offset = 0): void {
    this.#batch.alive();
    const { buffer } = this.#entry(s);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > s.length) {
      throw new Error(`write(): ${data.length} values at offset ${offset} overflow storage of ${s.length}`);
    }
    if (data.length === 0) return;
    const typed = s.dtype === "u32"
      ? (data instanceof Uint32Array ? data : Uint32Array.from(data))
      : (data instanceof Float32Array ? data : Float32Array.from(data));
    const bytes = typed.byteLength;
    if (this.#batch.pending && bytes <= MAX_STAGED_WRITE) {
      // Pending dispatches may read this buffer's previous owner or contents: writeBuffer would land before
      // them, so the write is staged and copied in order inside the command buffer.
      const slot = this.#batch.staging.reserve(bytes);
      slot.view.set(new Uint8Array(typed.buffer, typed.byteOffset, bytes));
      this.#batch.copyEncoder().copyBufferToBuffer(slot.buffer, slot.offset, buffer, offset * 4, bytes);
      return;
    }
    this.#batch.flush();
    this.#batch.openScopes();
    this.device.queue.writeBuffer(buffer, offset * 4, typed.buffer as ArrayBuffer, typed.byteOffset, bytes);
  }

  async read(s: Storage): Promise<HostArray> {
    this.#batch.alive();
    const { buffer } = this.#entry(s);
    const bytes = s.length * 4;
    const rb = bytes > 0 ? this.#readbacks.acquire(bytes) : null;
    if (rb) {
      this.#batch.copyEncoder().copyBufferToBuffer(buffer, 0, rb, 0, bytes);
    }
    this.#batch.flush();
    let out: HostArray;
    if (rb) {
      try {
        await this.#batch.race(rb.mapAsync(GPUMapMode.READ, 0, bytes));
      } catch (e) {
        await this.#batch.throwErrors(); // a failed copy explains a failed map better than the map error
        throw e;
      }
      const copy = rb.getMappedRange(0, bytes).slice(0);
      rb.unmap();
      this.#readbacks.release(rb);
      out = s.dtype === "u32" ? new Uint32Array(copy) : new Float32Array(copy);
    } else {
      out = s.dtype === "u32" ? new Uint32Array(0) : new Float32Array(0);
    }
    await this.#batch.throwErrors();
    return out;
  }

  run<K extends KernelName>(kernel: K, args: KernelArgs<K>): void {
    this.#batch.alive();
    const impl = webgpuKernels[kernel] as GpuKernel<K> | undefined;
    if (!impl) throw new BackendError(`webgpu backend: kernel "${kernel}" is not implemented`);
    this.#runDepth++;
    try {
      impl(args, this);
    } finally {
      if (--this.#runDepth === 0) this.#releaseTemps();
    }
  }

  async sync(): Promise<void> {
    this.#batch.alive();
    this.#batch.flush();
    await this.#batch.race(this.device.queue.onSubmittedWorkDone());
    await this.#batch.throwErrors();
  }

  /** Submit pending work without waiting for it. */
  flush(): void {
    this.#batch.alive();
    this.#batch.flush();
  }

  /** Destroy cached free buffers (pending work is submitted first). Returns the bytes given back. */
  trim(): number {
    this.#batch.flush();
    return this.#pool.trim() + this.#readbacks.trim();
  }

  memoryStats(): WebGpuMemoryStats {
    return {
      ...this.#pool.stats(),
      ledgerBytes: this.ledger.liveBytes,
      uploadBytes: this.#batch.uniforms.bytes + this.#batch.staging.bytes,
      readbackBytes: this.#readbacks.totalBytes,
      pipelines: this.#pipelines.size,
      submits: this.#batch.submits,
    };
  }

  dispose(): void {
    this.#batch.markDisposed();
    this.device.destroy();
    this.onDispose?.();
  }

  temp(length: number, dtype: DType = "f32"): Storage {
    const s = this.alloc(length, { dtype, category: "workspace" });
    this.#temps.push(s);
    return s;
  }

  /** Encode a dispatch of a built-in kernel entry (typed by the generated host/WGSL contract). */
  dispatch<S extends ShaderName, E extends EntryName<S>>(o: DispatchOptions<S, E>): void {
    this.dispatchRaw(o as RawDispatch);
  }

  /** Encode a dispatch of any registered shader; uniforms are checked against its WGSL struct at runtime. */
  dispatchRaw(o: RawDispatch): void {
    this.#batch.alive();
    const what = `${o.shader}/${o.entry}`;
    const [x, y = 1, z = 1] = o.workgroups;
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    for (const w of [x, y, z]) {
      if (!Number.isInteger(w) || w < 0 || w > maxWg) {
        throw new BackendError(
          `${what}: workgroup count ${w} is not an integer in [0, ${maxWg}]; split the grid`,
        );
      }
    }
    this.#batch.openScopes(); // before pipeline creation, so a bad shader's error lands in this batch's scope
    const { pipeline, layout, bindings, uniform } = this.#pipelines.get(o.shader, o.entry, o.constants);
    const entries: GPUBindGroupEntry[] = [];
    const written = new Set<number>();
    for (const b of bindings) {
      const given = o.bindings[b.binding];
      if (b.kind === "read_write" && given) written.add("storage" in given ? given.storage.id : given.id);
    }
    for (const b of bindings) {
      if (b.kind === "uniform") {
        if (!o.uniforms || !uniform) {
          throw new BackendError(`${what}: binding ${b.binding} (${b.name}) needs uniforms`);
        }
        entries.push({ binding: b.binding, resource: this.#uniformSlot(uniform, o.uniforms, what) });
        continue;
      }
      const given = o.bindings[b.binding];
      if (!given) throw new BackendError(`${what}: binding ${b.binding} (${b.name}) was not given`);
      let r = this.#resolve(given, what, b.binding);
      const sid = "storage" in given ? given.storage.id : given.id;
      if (b.kind === "read" && written.has(sid)) {
        // One buffer may not be both read-only and writable in a dispatch: read a snapshot instead, which
        // is also the semantics an in-place elementwise op expects (inputs read before outputs written).
        const snap = this.temp(r.size / 4, "u32");
        const snapBuffer = this.#entry(snap).buffer;
        this.#batch.copyEncoder().copyBufferToBuffer(r.buffer, r.offset, snapBuffer, 0, r.size);
        r = { buffer: snapBuffer, offset: 0, size: r.size };
      }
      entries.push({ binding: b.binding, resource: r });
    }
    const bindGroup = this.device.createBindGroup({ layout, entries });
    const pass = this.#batch.pass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (this.debug.dispatch) {
      const c = o.constants ? ` ${JSON.stringify(o.constants)}` : "";
      const bs = o.bindings.map((g) =>
        "storage" in g ? `#${g.storage.id}[${g.offset}+${g.length}]` : `#${g.id}`
      );
      debugLog(
        "dispatch",
        `${what}${c} [${x}, ${y}, ${z}] ${bs.join(" ")} u=${JSON.stringify(o.uniforms ?? {})}`,
      );
    }
    if (this.#runDepth === 0) this.#releaseTemps();
  }

  #resolve(b: Binding, what: string, index: number): ResolvedBinding {
    const s = "storage" in b ? b.storage : b;
    const offset = "storage" in b ? b.offset : 0;
    const length = "storage" in b ? b.length : s.length;
    const { buffer } = this.#entry(s);
    if (offset < 0 || length < 0 || offset + length > s.length) {
      throw new BackendError(
        `${what}: binding ${index} range [${offset}, ${offset + length}) is outside storage of ${s.length}`,
      );
    }
    const align = this.limits.minStorageBufferOffsetAlignment;
    if ((offset * 4) % align !== 0) {
      throw new BackendError(
        `${what}: binding ${index} offset ${offset} elements is not a multiple of ${align} bytes`,
      );
    }
    const size = Math.max(length, 1) * 4;
    if (size > this.limits.maxStorageBufferBindingSize) {
      throw new BackendError(
        `${what}: binding ${index} covers ${size} bytes, over the ${this.limits.maxStorageBufferBindingSize}-byte ` +
          `storage binding limit (the kernel must split its work)`,
      );
    }
    return { buffer, offset: offset * 4, size };
  }

  #uniformSlot(
    layout: UniformLayout,
    values: Readonly<Record<string, number | readonly number[]>>,
    what: string,
  ): GPUBufferBinding {
    const bytes = layout.bytes;
    const slot = this.#batch.uniforms.reserve(bytes);
    const words = new Uint32Array(slot.view.buffer, slot.view.byteOffset, bytes / 4);
    try {
      packUniforms(layout, values, words, `webgpu: ${what}`);
    } catch (e) {
      throw new BackendError((e as Error).message);
    }
    return { buffer: slot.buffer, offset: slot.offset, size: bytes };
  }

  #entry(s: Storage): { storage: Storage; buffer: GPUBuffer } {
    const e = this.#buffers.get(s.id);
    if (!e || e.storage !== s) {
      throw new Error(`webgpu backend: storage ${s.id} was freed or belongs to another backend`);
    }
    return e;
  }

  #createBuffer(size: number, usage: GPUBufferUsageFlags): GPUBuffer {
    return this.#batch.createBuffer(size, usage, this.#requested || size, (b) => this.#invalid.add(b));
  }

  #releaseTemps(): void {
    const temps = this.#temps;
    this.#temps = [];
    for (const t of temps) this.release(t);
  }
}
