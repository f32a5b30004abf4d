/**
 * Probing this machine for a device profile: the WebGPU adapter's name, limits and features, and short
 * micro-benchmarks of what edgetrain's own kernels reach on it (copy bandwidth, matmul, convolution and
 * depthwise convolution throughput), on the WebGPU backend when an adapter exists, else on the CPU backend.
 *
 * Each benchmark runs its kernel once to compile and warm up, then doubles the repetitions until one timed
 * batch takes at least `minSeconds`, and reports the rate of that batch (a few seconds in total on lavapipe).
 * WebGPU does not report how much memory a device has: the profile plans from system memory (right for
 * integrated GPUs, lavapipe and CPU-only boards); edit memory.* for a discrete GPU.
 */
import type { Backend, Storage } from "../backend/backend.ts";
import type { KernelArgs, KernelName } from "../backend/kernels.ts";
import { conv2dAttrs } from "../ops/conv.ts";
import type { DeviceProfile } from "./profile.ts";
import { parseProfile } from "./profile.ts";

export interface AdapterProbe {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  features: string[];
  limits: Record<string, number>;
}

/** The adapter navigator.gpu offers, or null (no WebGPU, no adapter). */
export async function probeAdapter(): Promise<AdapterProbe | null> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return null;
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    return null;
  }
  if (!adapter) return null;
  const limits: Record<string, number> = {};
  const src = adapter.limits as unknown as Record<string, number>;
  for (const k of Object.getOwnPropertyNames(Object.getPrototypeOf(adapter.limits))) {
    if (typeof src[k] === "number") limits[k] = src[k];
  }
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const text = (s: string | undefined) => (s ? s : undefined);
  return {
    vendor: text(info?.vendor),
    architecture: text(info?.architecture),
    device: text(info?.device),
    description: text(info?.description),
    features: [...adapter.features].map(String).sort(),
    limits,
  };
}

export interface Throughput {
  copy_gbps: number;
  matmul_gflops: number;
  conv_gflops: number;
  depthwise_gflops: number;
}

/** Seconds `reps` runs of `body` take, once the backend has finished them. */
async function timed(b: Backend, reps: number, body: () => void): Promise<number> {
  await b.sync();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) body();
  await b.sync();
  return (performance.now() - t0) / 1000;
}

/** Work units per second of `body` (one run = `work` units). */
async function rate(b: Backend, work: number, minSeconds: number, body: () => void): Promise<number> {
  // Warm up for a while, not once: the wasm backend's kernels start in V8's baseline tier and are recompiled
  // optimised in the background after their first runs (WebGPU compiles its pipelines on the first).
  const warm = performance.now() + Math.min(100, minSeconds * 1000);
  do await timed(b, 1, body); while (performance.now() < warm);
  for (let reps = 1;; reps *= 2) {
    const s = await timed(b, reps, body);
    if (s >= minSeconds || reps >= 1024) return (work * reps) / s;
  }
}

function run<K extends KernelName>(b: Backend, kernel: K, args: KernelArgs<K>): () => void {
  return () => b.run(kernel, args);
}

/** GFLOP/s of edgetrain's matmul, 3x3 conv and 3x3 depthwise conv kernels on one backend. */
export interface KernelRates {
  matmul_gflops: number;
  conv_gflops: number;
  depthwise_gflops: number;
  /** FLOPs of one run of each probe kernel. */
  work: { matmul: number; conv: number; depthwise: number };
}

type Buf = (n: number) => Storage;

async function rates(b: Backend, buf: Buf, min: number): Promise<KernelRates> {
  const m = 256;
  const a = buf(m * m), bb = buf(m * m), c = buf(m * m);
  const matmulAttrs = {
    batch: 1,
    m,
    n: m,
    k: m,
    transA: false,
    transB: false,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    accumulate: false,
  };
  const matmulWork = 2 * m ** 3;
  const matmul = await rate(b, matmulWork, min, run(b, "matmul", { a, b: bb, out: c, attrs: matmulAttrs }));
  const convRate = async (x: number[], w: number[], groups: number) => {
    const attrs = conv2dAttrs(x, w, { padding: 1, groups });
    const xs = buf(x.reduce((p, d) => p * d, 1)), ws = buf(w.reduce((p, d) => p * d, 1));
    const out = buf(attrs.n * attrs.cout * attrs.outH * attrs.outW);
    const flops = 2 * attrs.n * attrs.cout * attrs.outH * attrs.outW * (attrs.cin / groups) * attrs.kh *
      attrs.kw;
    return { flops, rate: await rate(b, flops, min, run(b, "conv2d", { x: xs, w: ws, out, attrs })) };
  };
  const conv = await convRate([4, 32, 16, 16], [32, 32, 3, 3], 1);
  const depthwise = await convRate([4, 64, 16, 16], [64, 1, 3, 3], 64);
  return {
    matmul_gflops: gflops(matmul),
    conv_gflops: gflops(conv.rate),
    depthwise_gflops: gflops(depthwise.rate),
    work: { matmul: matmulWork, conv: conv.flops, depthwise: depthwise.flops },
  };
}

const gflops = (v: number) => Math.round(v / 1e7) / 100;

/** Storages filled with 0.5, all released by `body`'s end. */
async function withBuffers<T>(b: Backend, body: (buf: Buf) => Promise<T>): Promise<T> {
  const live: Storage[] = [];
  const buf = (n: number) => {
    const s = b.alloc(n, { category: "workspace" });
    b.write(s, new Float32Array(n).fill(0.5));
    live.push(s);
    return s;
  };
  try {
    return await body(buf);
  } finally {
    for (const s of live) b.release(s);
  }
}

/** Matmul, conv and depthwise conv throughput of one backend (what `--backend auto` and profiles compare). */
export function kernelRates(b: Backend, options: { minSeconds?: number } = {}): Promise<KernelRates> {
  return withBuffers(b, (buf) => rates(b, buf, options.minSeconds ?? 0.25));
}

/** Copy bandwidth (read + write) and matmul, conv and depthwise conv throughput on `b`. */
export async function benchmark(b: Backend, options: { minSeconds?: number } = {}): Promise<Throughput> {
  const min = options.minSeconds ?? 0.25;
  return await withBuffers(b, async (buf) => {
    const n = 1 << 22; // 16 MiB
    const src = buf(n), dst = buf(n);
    const copy = await rate(
      b,
      8 * n,
      min,
      run(b, "copy", { x: src, out: dst, attrs: { n, srcOffset: 0, dstOffset: 0 } }),
    );
    const r = await rates(b, buf, min);
    return {
      copy_gbps: gflops(copy),
      matmul_gflops: r.matmul_gflops,
      conv_gflops: r.conv_gflops,
      depthwise_gflops: r.depthwise_gflops,
    };
  });
}

/** Fraction of available system memory a probed profile plans with (WebGPU reports no device memory). */
export const PROBED_USABLE_FRACTION = 0.5;

function apiOfOs(): "vulkan" | "metal" | "d3d12" {
  return Deno.build.os === "darwin" ? "metal" : Deno.build.os === "windows" ? "d3d12" : "vulkan";
}

export function profileName(s: string): string {
  const n = s.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+/, "").replace(/-+$/, "");
  return n || "probed";
}

/** What one backend measured: GFLOP/s of the probe kernels, and how it ran them. */
export interface BackendFigures {
  matmul_gflops: number;
  conv_gflops: number;
  depthwise_gflops: number;
  threads?: number;
  simd?: string;
  adapter?: string;
}

export type BackendName = "cpu" | "wasm" | "webgpu";

export interface ProbedOptions {
  name?: string;
  date?: string;
  /** The backend `measured` (bandwidth_gbps, fp32_gflops) comes from. Default: webgpu with an adapter, else cpu. */
  backend?: BackendName;
  /** Every backend measured on this device, so the planner can use real speeds for each. */
  backends?: Partial<Record<BackendName, BackendFigures>>;
}

/** A schema-valid "probed" profile from an adapter probe (or null: no WebGPU) and measured throughput. */
export function probedProfile(
  adapter: AdapterProbe | null,
  measured: Throughput,
  options: ProbedOptions = {},
): DeviceProfile {
  const mem = Deno.systemMemoryInfo();
  const date = options.date ?? new Date().toISOString().slice(0, 10);
  const backend = options.backend ?? (adapter ? "webgpu" : "cpu");
  const what = adapter
    ? adapter.description ?? [adapter.vendor, adapter.architecture].filter(Boolean).join(" ")
    : "";
  const cores = navigator.hardwareConcurrency || 1;
  const display = adapter && backend === "webgpu"
    ? `Probed WebGPU adapter: ${what || "unnamed"}`
    : `Probed CPU (${Deno.build.arch}, ${cores} cores, ${backend} backend${
      adapter ? `; WebGPU adapter ${what || "unnamed"} not used` : ", no WebGPU"
    })`;
  const kernels = backend === "webgpu" ? "WebGPU" : backend === "wasm" ? "wasm SIMD" : "CPU reference";
  const profile: DeviceProfile = {
    name: profileName(options.name ?? (adapter ? `probed-${what || "webgpu"}` : "probed-cpu")),
    display_name: display,
    kind: "probed",
    memory: {
      total_bytes: mem.total,
      shared: true,
      usable_bytes: Math.min(mem.total, Math.floor(mem.available * PROBED_USABLE_FRACTION)),
      note:
        `${PROBED_USABLE_FRACTION * 100}% of the system memory available when probed; WebGPU reports no ` +
        "device memory, so this assumes memory shared with the CPU (edit for a discrete GPU)",
    },
    bandwidth_gbps: measured.copy_gbps,
    fp32_gflops: Math.max(measured.matmul_gflops, measured.conv_gflops),
    // available: edgetrain runs on WebGPU here. An adapter the profile was not measured on (a CPU adapter
    // that the wasm backend outruns, or --backend wasm/cpu) is recorded in `adapter` and named in the note.
    webgpu: adapter && backend === "webgpu" ? { available: true, api: apiOfOs() } : adapter
      ? {
        available: false,
        api: apiOfOs(),
        note: `WebGPU adapter "${what || "unnamed"}" present; edgetrain runs on its ${backend} backend here`,
      }
      : {
        available: false,
        api: "none",
        note: `no WebGPU adapter: edgetrain runs on its ${backend} backend`,
      },
    measured: { date, ...measured, ...(options.backends ? { backends: options.backends } : {}) },
    sources: [
      `edgetrain profile on ${date}: ${adapter ? "adapter info and limits from WebGPU, " : ""}throughput ` +
      `measured with edgetrain's own ${kernels} kernels (bandwidth_gbps = copy read + write, ` +
      "fp32_gflops = the better of matmul 256^3 and 3x3 conv" +
      (options.backends ? "; measured.backends: the same kernels on every backend available here)" : ")"),
    ],
  };
  if (adapter) {
    profile.adapter = {
      ...(adapter.vendor ? { vendor: adapter.vendor } : {}),
      ...(adapter.architecture ? { architecture: adapter.architecture } : {}),
      ...(adapter.device ? { device: adapter.device } : {}),
      ...(adapter.description ? { description: adapter.description } : {}),
      features: adapter.features,
      limits: adapter.limits,
    };
  }
  return parseProfile(JSON.parse(JSON.stringify(profile)), profile.name);
}
