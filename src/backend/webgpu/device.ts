/**
 * Acquiring a WebGPU device with the adapter's full limits, and the EDGETRAIN_DEBUG switch.
 *
 * Defaults (128 MiB storage bindings, 256 MiB buffers, 16 KiB workgroup memory) are far below what edge GPUs
 * and llvmpipe offer, so every limit the kernels depend on is requested at the adapter's maximum.
 */
import { BackendError } from "../backend.ts";

/** Limits the backend and its kernels rely on; each is requested at the adapter's value. */
const WANTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
  "maxBindingsPerBindGroup",
] as const;

export interface DeviceOptions {
  /** The navigator.gpu to use (tests inject fakes); defaults to the global one. */
  gpu?: GPU | null;
  powerPreference?: GPUPowerPreference;
}

export interface AcquiredDevice {
  adapter: GPUAdapter;
  device: GPUDevice;
  /** Adapter description for reports, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
}

const HOW_TO_ENABLE = 'run deno with --unstable-webgpu (or "unstable": ["webgpu"] in deno.json)';
const HOW_TO_GET_ADAPTER = "install a Vulkan driver: on machines without a GPU, Mesa's lavapipe " +
  "(apt-get install mesa-vulkan-drivers) provides a CPU adapter";

export async function acquireDevice(options: DeviceOptions = {}): Promise<AcquiredDevice> {
  const gpu = "gpu" in options ? options.gpu : (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) throw new BackendError(`WebGPU is not available (navigator.gpu is missing): ${HOW_TO_ENABLE}`);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? "high-performance" });
  } catch (e) {
    throw new BackendError(`WebGPU requestAdapter() failed: ${(e as Error).message}; ${HOW_TO_GET_ADAPTER}`);
  }
  if (!adapter) throw new BackendError(`No WebGPU adapter found: ${HOW_TO_GET_ADAPTER}`);
  const requiredLimits: Record<string, number> = {};
  const limits = adapter.limits as unknown as Record<string, number>;
  for (const k of WANTED_LIMITS) if (typeof limits[k] === "number") requiredLimits[k] = limits[k];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits });
  } catch (e) {
    throw new BackendError(`WebGPU requestDevice() failed: ${(e as Error).message}`);
  }
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const description = info ? (info.description || `${info.vendor} ${info.architecture}`.trim()) : "unknown";
  return { adapter, device, description };
}

/** `real` with some limits made stricter (lower max*, higher min*); looser values are refused. */
export function stricterLimits(
  real: GPUSupportedLimits,
  wanted: Partial<Record<string, number>>,
): GPUSupportedLimits {
  const out: Record<string, number> = {};
  const source = real as unknown as Record<string, number>;
  for (const k of Object.getOwnPropertyNames(Object.getPrototypeOf(real))) {
    if (typeof source[k] === "number") out[k] = source[k];
  }
  for (const [k, v] of Object.entries(wanted)) {
    if (v === undefined || !(k in out)) throw new BackendError(`webgpu: unknown limit "${k}"`);
    const ok = k.startsWith("min") ? v >= out[k] : v <= out[k];
    if (!ok) throw new BackendError(`webgpu: limit ${k} = ${v} is looser than the device's ${out[k]}`);
    out[k] = v;
  }
  return out as unknown as GPUSupportedLimits;
}

/** EDGETRAIN_DEBUG=shaders,dispatch,memory: what to print to stderr. */
export interface DebugFlags {
  shaders: boolean;
  dispatch: boolean;
  memory: boolean;
}

export function debugFlags(value?: string): DebugFlags {
  let v = value;
  if (v === undefined) {
    try {
      v = Deno.env.get("EDGETRAIN_DEBUG") ?? "";
    } catch {
      v = ""; // no --allow-env: debugging is simply off
    }
  }
  const set = new Set(v.split(",").map((s) => s.trim()));
  const all = set.has("all") || set.has("1");
  return {
    shaders: all || set.has("shaders"),
    dispatch: all || set.has("dispatch"),
    memory: all || set.has("memory"),
  };
}

const encoder = new TextEncoder();

/** One line to stderr, synchronously so it interleaves correctly with a crash. */
export function debugLog(topic: string, line: string): void {
  Deno.stderr.writeSync(encoder.encode(`[edgetrain ${topic}] ${line}\n`));
}
