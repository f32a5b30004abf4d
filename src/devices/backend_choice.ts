/**
 * `--backend auto`: WebGPU on a real GPU adapter, the wasm backend (SIMD on worker threads) otherwise.
 *
 * A CPU adapter (Mesa's lavapipe/llvmpipe, SwiftShader, WARP: WebGPU emulated on the same cores wasm would
 * use) is taken only when a short measured probe finds it faster than wasm on this machine. The verdict is
 * cached per adapter, thread count and runtime version in EDGETRAIN_CACHE_DIR (default
 * $XDG_CACHE_HOME/edgetrain or ~/.cache/edgetrain), so only the first run on a machine pays for the probe
 * (about a second); without a writable cache every run probes. EDGETRAIN_DEBUG=backend prints the verdict.
 */
import type { Backend } from "../backend/backend.ts";
import { CpuBackend } from "../backend/cpu.ts";
import { createWasmBackend } from "../backend/wasm/mod.ts";
import { type KernelRates, kernelRates } from "./probe.ts";

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
}

/** Software adapters, by what they report: WebGPU's fallback flag or a known software rasteriser's name. */
export function isCpuAdapter(a: AdapterSummary): boolean {
  if (a.isFallbackAdapter) return true;
  const text = `${a.vendor} ${a.architecture} ${a.device} ${a.description}`.toLowerCase();
  return /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b|\bcpu\b/.test(text);
}

export async function adapterSummary(): Promise<AdapterSummary | null> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return null;
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return null;
    const info = (adapter as { info?: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).info;
    return {
      vendor: info?.vendor ?? "",
      architecture: info?.architecture ?? "",
      device: info?.device ?? "",
      description: info?.description ?? "",
      isFallbackAdapter: Boolean(
        info?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
      ),
    };
  } catch {
    return null;
  }
}

export interface ProbeVerdict {
  backend: "webgpu" | "wasm";
  /** Seconds each backend took for the probe's fixed work (matmul, conv, depthwise conv). */
  webgpu_s: number;
  wasm_s: number;
  date: string;
}

/** Seconds a backend needs for one of each probe kernel, from its measured rates. */
function probeSeconds(r: KernelRates): number {
  return r.work.matmul / (r.matmul_gflops * 1e9) + r.work.conv / (r.conv_gflops * 1e9) +
    r.work.depthwise / (r.depthwise_gflops * 1e9);
}

function cacheFile(): string | null {
  try {
    const dir = Deno.env.get("EDGETRAIN_CACHE_DIR") ??
      (Deno.env.get("XDG_CACHE_HOME") ? `${Deno.env.get("XDG_CACHE_HOME")}/edgetrain` : null) ??
      (Deno.env.get("HOME") ? `${Deno.env.get("HOME")}/.cache/edgetrain` : null);
    return dir ? `${dir}/backend-choice.json` : null;
  } catch {
    return null; // no --allow-env
  }
}

function readCache(path: string | null): Record<string, ProbeVerdict> {
  if (!path) return {};
  try {
    const v = JSON.parse(Deno.readTextFileSync(path));
    return v && typeof v === "object" && v.entries && typeof v.entries === "object" ? v.entries : {};
  } catch {
    return {};
  }
}

function writeCache(path: string | null, entries: Record<string, ProbeVerdict>): void {
  if (!path) return;
  try {
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    const tmp = `${path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify({ version: 1, entries }, null, 2) + "\n");
    Deno.renameSync(tmp, path);
  } catch {
    // A read-only home or a sandbox: the next run probes again.
  }
}

/** Measure the CPU adapter against wasm (both already open); the faster one wins. */
export async function probeCpuAdapter(webgpu: Backend, wasm: Backend): Promise<ProbeVerdict> {
  const [g, w] = [
    await kernelRates(webgpu, { minSeconds: 0.05 }),
    await kernelRates(wasm, { minSeconds: 0.05 }),
  ];
  const webgpu_s = probeSeconds(g), wasm_s = probeSeconds(w);
  return {
    backend: webgpu_s < wasm_s ? "webgpu" : "wasm",
    webgpu_s,
    wasm_s,
    date: new Date().toISOString().slice(0, 10),
  };
}

export interface AutoOptions {
  threads?: number;
  /** Prints the probe's verdict on stderr when one is run (the CLI sets it for EDGETRAIN_DEBUG=backend). */
  log?: boolean;
  /** Opens the WebGPU backend (common.ts passes its own, which keeps the Vulkan loader quiet). */
  openWebGpu: () => Promise<Backend>;
}

export async function autoBackend(options: AutoOptions): Promise<Backend> {
  const adapter = await adapterSummary();
  if (adapter && !isCpuAdapter(adapter)) {
    try {
      return await options.openWebGpu();
    } catch {
      // The adapter exists but no device could be had: wasm still runs.
    }
  }
  let wasm: Backend;
  try {
    wasm = await createWasmBackend({ threads: options.threads });
  } catch (e) {
    // A runtime without WebAssembly SIMD or shared memory: the reference backend still runs everything.
    console.error(
      `edgetrain: the wasm backend could not start (${(e as Error).message}); using the CPU backend`,
    );
    return new CpuBackend();
  }
  if (!adapter) return wasm;
  const threads = (wasm as { threads?: number }).threads ?? 1;
  const key =
    `${adapter.description}|${adapter.vendor}|${adapter.device}|threads=${threads}|deno ${Deno.version.deno}`;
  const path = cacheFile();
  const cache = readCache(path);
  let verdict = cache[key];
  if (!verdict) {
    let webgpu: Backend;
    try {
      webgpu = await options.openWebGpu();
    } catch {
      return wasm;
    }
    verdict = await probeCpuAdapter(webgpu, wasm);
    if (verdict.backend === "wasm") webgpu.dispose();
    writeCache(path, { ...readCache(path), [key]: verdict });
    if (options.log) {
      console.error(
        `edgetrain: CPU WebGPU adapter "${adapter.description}" took ${
          (verdict.webgpu_s * 1e3).toFixed(0)
        } ms ` +
          `for the backend probe, wasm (${threads} threads) ${(verdict.wasm_s * 1e3).toFixed(0)} ms: using ` +
          `${verdict.backend}`,
      );
    }
    if (verdict.backend === "webgpu") {
      wasm.dispose();
      return webgpu;
    }
    return wasm;
  }
  if (verdict.backend === "webgpu") {
    try {
      const webgpu = await options.openWebGpu();
      wasm.dispose();
      return webgpu;
    } catch {
      return wasm;
    }
  }
  return wasm;
}
