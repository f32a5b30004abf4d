/**
 * Shader modules and compute pipelines, cached by shader name + entry + override constants.
 *
 * Bind group layouts are explicit, built from the bindings each entry point statically uses: a kernel file
 * holds several entries whose bindings differ (binding 2 is a uniform in one, a storage in another), which
 * "auto" layouts handle only if every caller binds exactly the used set. Deriving the used set here lets
 * kernels pass their bindings in a fixed order and ignores the ones an entry does not touch.
 */
import { BackendError } from "../backend.ts";
import { KERNEL_SOURCES } from "./_kernels_gen.ts";
import {
  type BindingKind,
  type EntryBinding,
  type EntryInfo,
  reflectWgsl,
  type UniformLayout,
} from "./wgsl_reflect.ts";

export type { BindingKind, EntryBinding, UniformLayout } from "./wgsl_reflect.ts";

export interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: EntryBinding[];
  /** The uniform struct the entry reads (packed by field name), or null. */
  uniform: UniformLayout | null;
}

interface ShaderModule {
  module: GPUShaderModule;
  entries: Map<string, EntryInfo>;
}

export class PipelineCache {
  #sources = new Map<string, string>(Object.entries(KERNEL_SOURCES));
  #modules = new Map<string, ShaderModule>();
  #pipelines = new Map<string, Pipeline>();
  #layouts = new Map<string, GPUBindGroupLayout>();
  /** Compilation results not yet inspected (checked at the next sync/read, never awaited per dispatch). */
  #unchecked: { name: string; info: Promise<GPUCompilationInfo> }[] = [];

  constructor(private readonly device: GPUDevice, private readonly log?: (line: string) => void) {}

  /** Add or replace a shader source (tests, extensions). Existing pipelines of that name are dropped. */
  register(name: string, source: string): void {
    this.#sources.set(name, source);
    this.#modules.delete(name);
    for (const k of this.#pipelines.keys()) if (k.startsWith(`${name}|`)) this.#pipelines.delete(k);
  }

  get size(): number {
    return this.#pipelines.size;
  }

  get(shader: string, entry: string, given?: Readonly<Record<string, number | undefined>>): Pipeline {
    // Constants left undefined take the WGSL default, as if not given.
    const constants = given
      ? Object.fromEntries(Object.entries(given).filter((e): e is [string, number] => e[1] !== undefined))
      : undefined;
    const constKey = constants
      ? Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",")
      : "";
    const key = `${shader}|${entry}|${constKey}`;
    let p = this.#pipelines.get(key);
    if (p) return p;
    const mod = this.#module(shader);
    const info = mod.entries.get(entry);
    if (!info) {
      throw new BackendError(
        `webgpu: kernels/${shader}.wgsl has no @compute entry "${entry}" (entries: ${
          [...mod.entries.keys()].join(", ")
        })`,
      );
    }
    const { bindings, uniform } = info;
    const layout = this.#layout(bindings);
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: mod.module, entryPoint: entry, constants },
    });
    this.log?.(`pipeline ${key}`);
    p = { pipeline, layout, bindings, uniform };
    this.#pipelines.set(key, p);
    return p;
  }

  /** Compiler errors of modules created since the last call, as one message (empty when none). */
  async compileErrors(): Promise<string> {
    const pending = this.#unchecked;
    this.#unchecked = [];
    const out: string[] = [];
    for (const { name, info } of pending) {
      const errors = (await info).messages.filter((m) => m.type === "error");
      if (errors.length) {
        out.push(
          `kernels/${name}.wgsl: ${errors.map((m) => `line ${m.lineNum}: ${m.message.trim()}`).join("; ")}`,
        );
      }
    }
    return out.join("\n");
  }

  #module(name: string): ShaderModule {
    let m = this.#modules.get(name);
    if (m) return m;
    const code = this.#sources.get(name);
    if (code === undefined) {
      throw new BackendError(
        `webgpu: no shader named "${name}" (known: ${[...this.#sources.keys()].join(", ")})`,
      );
    }
    this.log?.(`compile kernels/${name}.wgsl\n${code}`);
    const module = this.device.createShaderModule({ label: name, code });
    this.#unchecked.push({ name, info: module.getCompilationInfo() });
    m = { module, entries: reflectWgsl(code, name).entries };
    this.#modules.set(name, m);
    return m;
  }

  #layout(bindings: EntryBinding[]): GPUBindGroupLayout {
    const key = bindings.map((b) => `${b.binding}${b.kind[0]}${b.kind.length}`).join(",");
    let layout = this.#layouts.get(key);
    if (!layout) {
      const type: Record<BindingKind, GPUBufferBindingType> = {
        uniform: "uniform",
        read: "read-only-storage",
        read_write: "storage",
      };
      layout = this.device.createBindGroupLayout({
        entries: bindings.map((b) => ({
          binding: b.binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: type[b.kind] },
        })),
      });
      this.#layouts.set(key, layout);
    }
    return layout;
  }
}
