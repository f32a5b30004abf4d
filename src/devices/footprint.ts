/**
 * What the process costs beyond its tensors, per backend: the runtime with edgetrain's code loaded, what
 * opening the backend adds (lavapipe's driver and LLVM), what the first adaptation steps add beyond their
 * tensors (compiled JavaScript, WebGPU pipelines — lavapipe JITs every one — and the JS heap's growth), and
 * how much freed host memory the garbage collector lets pile up before it runs. `edgetrain profile`
 * measures these on the machine (measureFootprint) and stores them in the device profile; the governor adds
 * them to every estimate (src/governor/process.ts), so that `--budget` holds for the process's resident
 * memory as `top` or a cgroup reads it, not only for the tensors the ledger counts.
 */
import type { Backend } from "../backend/backend.ts";
import { innermost } from "../backend/decorator.ts";

export interface Footprint {
  /** The backend measured: "cpu" or "webgpu". */
  backend: string;
  /** WebGPU: the adapter measured, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapter?: string;
  /** Resident bytes of the runtime with edgetrain's code loaded, before a backend or model. */
  runtime_bytes: number;
  /** Resident bytes opening the backend adds. */
  backend_bytes: number;
  /**
   * Resident bytes the first adaptation steps add beyond the tensors' allocator, the host copies and the
   * decode buffers: compiled code, WebGPU pipelines and staging, the JS heap's growth.
   */
  step_bytes: number;
  /** JS objects a backend allocation leaves for the garbage collector (the step's graph, tensors). */
  heap_per_allocation_bytes: number;
  /** Freed host memory (decoded chunks, a step's JS objects) the garbage collector lets pile up at most. */
  gc_slack_bytes: number;
  /** Whether the backend's tensors are this process's memory (CPU backend, a CPU WebGPU adapter). */
  tensors_in_process: boolean;
  /** How the figures were obtained. */
  source: string;
}

/** The process's resident bytes now (VmRSS on Linux, else Deno.memoryUsage().rss). */
export function rssBytes(): number {
  return procStatus("VmRSS") ?? Deno.memoryUsage().rss;
}

export interface PeakRss {
  bytes: number;
  /** "VmHWM" (the kernel's high-water mark, Linux) or "sampled" (the largest RSS seen at the samples). */
  source: "VmHWM" | "sampled";
}

let sampledPeak = 0;

/** Record the current RSS where no high-water mark is kept (call at points where memory peaks). */
export function sampleRss(): void {
  sampledPeak = Math.max(sampledPeak, Deno.memoryUsage().rss);
}

/** The process's peak resident bytes so far: VmHWM where the kernel keeps it, else the sampled maximum. */
export function peakRssBytes(): PeakRss {
  const hwm = procStatus("VmHWM");
  if (hwm !== null) return { bytes: hwm, source: "VmHWM" };
  sampleRss();
  return { bytes: sampledPeak, source: "sampled" };
}

function procStatus(field: string): number | null {
  if (Deno.build.os !== "linux") return null;
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null; // no read permission for /proc: fall back to the sampled figure
  }
}

/** Adapters that run on the CPU: their device memory is this process's memory. */
const CPU_ADAPTER = /llvmpipe|lavapipe|swiftshader|softpipe|warp|cpu/i;

/** Whether `backend`'s tensor memory shows in this process's RSS. */
export function tensorsInProcess(backend: Backend): boolean {
  const b = innermost(backend) as Backend & { adapterDescription?: string };
  if (b.name !== "webgpu") return true;
  return CPU_ADAPTER.test(b.adapterDescription ?? "");
}

/** The bytes `backend`'s allocator holds now (the CPU arena's touched bytes; the WebGPU pools and arenas). */
export function allocatorHeldBytes(backend: Backend): number {
  const b = innermost(backend) as Backend & { memoryStats?: () => Record<string, number> };
  const s = b.memoryStats?.();
  if (!s) return 0;
  if (b.name === "cpu") return s.residentBytes ?? 0;
  return (s.inUseBytes ?? 0) + (s.freeBytes ?? 0) + (s.readbackBytes ?? 0) + (s.uploadBytes ?? 0);
}

/**
 * Garbage V8 lets pile up before a major collection: it starts one when freed ArrayBuffers pass about 64 MiB
 * (its external-memory soft limit) or the old generation its growing limit. A 13,000-image TENT run of the
 * demo model grew 130 MiB before its first major collection; this is that bound, not a per-machine figure.
 */
export const GC_SLACK_BYTES = 128 * 2 ** 20;
/** Freed ArrayBuffers past which V8 starts a major collection (its external-memory soft limit). */
export const GC_EXTERNAL_BYTES = 64 * 2 ** 20;

/**
 * Built-in footprints, measured with `edgetrain profile` on the development machine (x86-64 Linux, Deno
 * 2.9, lavapipe from Mesa 22 with LLVM 15): what the governor assumes when no profile with a footprint is
 * given. `adapt` and `train` measure the runtime, backend and model in their own process instead.
 */
export const BUILTIN_FOOTPRINTS: Record<"cpu" | "webgpu", Footprint> = {
  cpu: {
    backend: "cpu",
    runtime_bytes: 62 * 2 ** 20,
    backend_bytes: 0,
    step_bytes: 6 * 2 ** 20,
    heap_per_allocation_bytes: 2000,
    gc_slack_bytes: GC_SLACK_BYTES,
    tensors_in_process: true,
    source: "built-in (edgetrain profile on x86-64 Linux, Deno 2.9)",
  },
  webgpu: {
    backend: "webgpu",
    adapter: "llvmpipe (LLVM 15.0.6, 256 bits)",
    runtime_bytes: 62 * 2 ** 20,
    backend_bytes: 80 * 2 ** 20,
    step_bytes: 40 * 2 ** 20,
    heap_per_allocation_bytes: 1500,
    gc_slack_bytes: GC_SLACK_BYTES,
    tensors_in_process: true,
    source: "built-in (edgetrain profile on x86-64 Linux, Deno 2.9, lavapipe/LLVM 15)",
  },
};

/** The built-in footprint for a backend name ("cpu", "webgpu"; anything else is treated as "cpu"). */
export function builtinFootprint(backend: string): Footprint {
  return backend === "webgpu" ? BUILTIN_FOOTPRINTS.webgpu : BUILTIN_FOOTPRINTS.cpu;
}
