/**
 * The pending batch of GPU work: one command encoder with one open compute pass that dispatches append to,
 * the upload arenas its commands read, and the error scopes around it. A batch ends at flush(): the arenas
 * are uploaded, the command buffer submitted and the scopes popped. Their results are only awaited by
 * throwErrors() (at read/sync), never per dispatch.
 */
import { BackendError, OutOfMemoryError } from "../backend.ts";
import { UploadArena } from "./pool.ts";

export class CommandBatch {
  readonly uniforms: UploadArena;
  readonly staging: UploadArena;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #scoped = false;
  #checks: Promise<Error | null>[] = [];
  #uncaptured: string[] = [];
  #lost: string | null = null;
  #lostSignal: Promise<never>;
  #submits = 0;

  constructor(
    private readonly device: GPUDevice,
    limits: GPUSupportedLimits,
    /** Compiler errors of shader modules created since the last call (empty string when none). */
    private readonly compileErrors: () => Promise<string>,
  ) {
    const uniformUsage = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
    this.uniforms = new UploadArena(device, uniformUsage, 256 * 1024, limits.minUniformBufferOffsetAlignment);
    this.staging = new UploadArena(
      device,
      GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      4 * 2 ** 20,
      16,
    );
    this.#lostSignal = new Promise<never>((_, reject) => {
      device.lost.then((info) => {
        this.#lost ??= `WebGPU device lost (${info.reason}): ${info.message || "no message"}`;
        reject(new BackendError(this.#lost));
      });
    });
    this.#lostSignal.catch(() => {});
    device.addEventListener("uncapturederror", (e) => {
      e.preventDefault();
      this.#uncaptured.push((e as GPUUncapturedErrorEvent).error.message);
    });
  }

  /** Throws BackendError naming the reason once the device is lost or the backend disposed. */
  alive(): void {
    if (this.#lost !== null) throw new BackendError(this.#lost);
  }

  markDisposed(): void {
    this.#lost ??= "WebGPU backend was disposed";
    this.#encoder = this.#pass = null;
  }

  get pending(): boolean {
    return this.#encoder !== null;
  }

  get submits(): number {
    return this.#submits;
  }

  /** Start catching errors for this batch (idempotent): call before any device call that may fail. */
  openScopes(): void {
    if (this.#scoped) return;
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("internal");
    this.device.pushErrorScope("validation");
    this.#scoped = true;
  }

  encoder(): GPUCommandEncoder {
    if (!this.#encoder) {
      this.openScopes();
      this.#encoder = this.device.createCommandEncoder();
    }
    return this.#encoder;
  }

  /** The open compute pass (one for the whole batch unless a copy had to interrupt it). */
  pass(): GPUComputePassEncoder {
    return this.#pass ??= this.encoder().beginComputePass();
  }

  /** An encoder outside any pass, for buffer copies. */
  copyEncoder(): GPUCommandEncoder {
    const encoder = this.encoder();
    this.#pass?.end();
    this.#pass = null;
    return encoder;
  }

  /** createBuffer under its own out-of-memory scope, so the error names the requested size. */
  createBuffer(
    size: number,
    usage: GPUBufferUsageFlags,
    requested: number,
    onOom: (b: GPUBuffer) => void,
  ): GPUBuffer {
    this.openScopes();
    this.device.pushErrorScope("out-of-memory");
    const buffer = this.device.createBuffer({ size, usage });
    this.#checks.push(
      this.device.popErrorScope().then((e) => {
        if (!e) return null;
        onOom(buffer);
        return new OutOfMemoryError(
          `webgpu: out of memory creating a ${size}-byte buffer: ${e.message}`,
          requested,
        );
      }, () => null),
    );
    return buffer;
  }

  /** Submit the batch (arena uploads first: its commands read them) and close its error scopes. */
  flush(): void {
    if (this.#encoder) {
      this.#pass?.end();
      this.#pass = null;
      const commands = this.#encoder.finish();
      this.#encoder = null;
      this.uniforms.upload(this.device.queue);
      this.staging.upload(this.device.queue);
      this.device.queue.submit([commands]);
      this.#submits++;
    }
    if (!this.#scoped) return;
    this.#scoped = false;
    for (const kind of ["validation", "internal", "out-of-memory"]) {
      this.#checks.push(
        this.device.popErrorScope().then((e) => {
          if (!e) return null;
          if (kind === "out-of-memory") return new OutOfMemoryError(`webgpu: out of memory: ${e.message}`);
          return new BackendError(`webgpu ${kind} error: ${e.message}`);
        }, () => null),
      );
    }
  }

  /** `p`, or a BackendError if the device is lost first (a lost device may never settle it). */
  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.#lostSignal]);
  }

  /** Throw the first error of the flushed batches: compile errors, then out-of-memory, then the rest. */
  async throwErrors(): Promise<void> {
    const checks = this.#checks;
    this.#checks = [];
    const compile = await this.race(this.compileErrors());
    const errors = (await this.race(Promise.all(checks))).filter((e): e is Error => e !== null);
    if (compile) throw new BackendError(`WGSL compilation failed:\n${compile}`);
    const oom = errors.find((e) => e instanceof OutOfMemoryError);
    if (oom) throw oom;
    if (errors.length) throw errors[0];
    if (this.#uncaptured.length) {
      throw new BackendError(`webgpu error outside an error scope: ${this.#uncaptured.splice(0).join("; ")}`);
    }
    this.alive();
  }
}
