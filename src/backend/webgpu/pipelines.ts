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

export type BindingKind = "uniform" | "read" | "read_write";

export interface EntryBinding {
  binding: number;
  kind: BindingKind;
  name: string;
}

interface ModuleVar extends EntryBinding {
  group: number;
}

/** Remove comments so identifiers inside them do not count as uses. */
function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
}

const VAR_RE =
  /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*([A-Za-z_]\w*)/g;
const FN_RE = /\bfn\s+([A-Za-z_]\w*)\s*\(/g;
const IDENT_RE = /[A-Za-z_]\w*/g;

/**
 * For each @compute entry of a WGSL source: the resource bindings it statically uses (directly or through
 * the functions it calls), sorted by binding number. This is WGSL's definition of "statically used".
 */
export function entryBindings(source: string): Map<string, EntryBinding[]> {
  const src = stripComments(source);
  const vars = new Map<string, ModuleVar>();
  for (const m of src.matchAll(VAR_RE)) {
    const kind: BindingKind = m[3] === "uniform" ? "uniform" : m[4] === "read_write" ? "read_write" : "read";
    vars.set(m[5], { group: Number(m[1]), binding: Number(m[2]), kind, name: m[5] });
  }
  const bodies = new Map<string, Set<string>>();
  const entries: string[] = [];
  for (const m of src.matchAll(FN_RE)) {
    const open = src.indexOf("{", m.index!);
    let depth = 0, end = open;
    for (; end < src.length; end++) {
      if (src[end] === "{") depth++;
      else if (src[end] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], new Set(src.slice(m.index! + m[0].length, end).match(IDENT_RE) ?? []));
    // The attributes before `fn` (back to the previous `}` or `;`) mark an entry point.
    const before = src.slice(
      Math.max(src.lastIndexOf("}", m.index!), src.lastIndexOf(";", m.index!)) + 1,
      m.index!,
    );
    if (/@compute\b/.test(before)) entries.push(m[1]);
  }
  const result = new Map<string, EntryBinding[]>();
  for (const entry of entries) {
    const seen = new Set<string>([entry]);
    const queue = [entry];
    const used = new Map<number, EntryBinding>();
    while (queue.length) {
      for (const id of bodies.get(queue.pop()!)!) {
        const v = vars.get(id);
        if (v && v.group === 0) used.set(v.binding, { binding: v.binding, kind: v.kind, name: v.name });
        if (bodies.has(id) && !seen.has(id)) {
          seen.add(id);
          queue.push(id);
        }
      }
    }
    result.set(entry, [...used.values()].sort((a, b) => a.binding - b.binding));
  }
  return result;
}

export interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: EntryBinding[];
}

interface ShaderModule {
  module: GPUShaderModule;
  entries: Map<string, EntryBinding[]>;
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

  get(shader: string, entry: string, constants?: Record<string, number>): Pipeline {
    const constKey = constants
      ? Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",")
      : "";
    const key = `${shader}|${entry}|${constKey}`;
    let p = this.#pipelines.get(key);
    if (p) return p;
    const mod = this.#module(shader);
    const bindings = mod.entries.get(entry);
    if (!bindings) {
      throw new BackendError(
        `webgpu: kernels/${shader}.wgsl has no @compute entry "${entry}" (entries: ${
          [...mod.entries.keys()].join(", ")
        })`,
      );
    }
    const layout = this.#layout(bindings);
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: mod.module, entryPoint: entry, constants },
    });
    this.log?.(`pipeline ${key}`);
    p = { pipeline, layout, bindings };
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
    m = { module, entries: entryBindings(code) };
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
