/**
 * What a WebGPU kernel implementation sees (the seam between the backend's infrastructure and the
 * per-family kernel code in kernel_*.ts files). A kernel impl turns one `run(kernel, args)` call into one or
 * more `ctx.dispatch` calls; the backend encodes them into the current command buffer (no submit per
 * dispatch) and submits on read/sync.
 *
 * Dispatches are typed by the generated contract (_kernels_gen.ts, from kernels/*.wgsl): the shader and
 * entry must exist, `uniforms` must name exactly the fields of the entry's WGSL uniform struct, and
 * `constants` only the file's `override`s.
 */
import type { DType, Storage } from "../backend.ts";
import type { KernelArgs, KernelName } from "../kernels.ts";
import type { KernelEntries, ShaderName } from "./_kernels_gen.ts";

/** A storage bound whole, or an element range of it (for tensors over maxStorageBufferBindingSize). */
export type Binding = Storage | { storage: Storage; offset: number; length: number };

/** Entry points of kernels/S.wgsl (distributes over a union of files). */
export type EntryName<S extends ShaderName> = S extends ShaderName ? keyof KernelEntries[S] & string : never;

type EntryOf<S extends ShaderName, E extends EntryName<S>> = KernelEntries[S][E] extends
  { uniforms: infer U; overrides: infer O } ? { uniforms: U; overrides: O } : never;

/** The uniform struct of entry E of kernels/S.wgsl, as named fields (null: the entry reads none). */
export type UniformsOf<S extends ShaderName, E extends EntryName<S>> = EntryOf<S, E>["uniforms"];

/** Values for the `override` constants of kernels/S.wgsl (bools as 0/1); part of the pipeline cache key. */
export type ConstantsOf<S extends ShaderName, E extends EntryName<S>> = {
  [K in EntryOf<S, E>["overrides"] & string]?: number;
};

interface DispatchBase {
  /** Storage bindings in @binding order 0..k-1 of @group(0); the uniform block, if any, is @binding(k). */
  bindings: Binding[];
  /** Workgroup counts; each must be <= maxComputeWorkgroupsPerDimension (65535): split larger grids. */
  workgroups: [number, number?, number?];
}

export type DispatchOptions<S extends ShaderName = ShaderName, E extends EntryName<S> = EntryName<S>> =
  & DispatchBase
  & {
    /** Kernel family file in kernels/ without extension, e.g. "matmul". */
    shader: S;
    /** Entry point (@compute fn) in that file. */
    entry: E;
    constants?: ConstantsOf<S, E>;
  }
  & (UniformsOf<S, E> extends null ? { uniforms?: undefined } : { uniforms: UniformsOf<S, E> });

/**
 * A dispatch of any registered shader (tests, extensions), checked only at runtime: uniforms by field name
 * of the entry's struct, packed as the WGSL declares them.
 */
export interface RawDispatch extends DispatchBase {
  shader: string;
  entry: string;
  constants?: Readonly<Record<string, number | undefined>>;
  uniforms?: Readonly<Record<string, number | readonly number[]>>;
}

export interface GpuContext {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  dispatch<S extends ShaderName, E extends EntryName<S>>(options: DispatchOptions<S, E>): void;
  /**
   * A scratch storage (ledger category "workspace") that lives until the current run() returns. Freeing it
   * right after encoding is safe: later GPU work that reuses the buffer is queue-ordered after this run.
   */
  temp(length: number, dtype?: DType): Storage;
}

/** true exactly when A and B are the same union of names (for compile-time checks of op-code tables). */
export type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

export type GpuKernel<K extends KernelName> = (args: KernelArgs<K>, ctx: GpuContext) => void;
export type GpuKernelTable = { [K in KernelName]: GpuKernel<K> };
