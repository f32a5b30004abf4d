/**
 * Device profiles: what the governor plans against (usable memory, bandwidth, throughput, WebGPU).
 * A profile is a built-in name (devices/*.json) or a path to a JSON file; both are schema-validated.
 */
import { builtinProfiles, profileSchema } from "./builtin.ts";
import type { Footprint } from "./footprint.ts";
import { validate } from "./schema.ts";

export interface DeviceProfile {
  name: string;
  display_name: string;
  kind: "jetson" | "laptop" | "desktop" | "board" | "probed";
  memory: { total_bytes: number; shared: boolean; usable_bytes: number; note?: string };
  bandwidth_gbps: number;
  fp32_gflops: number;
  webgpu: { available: boolean; api?: string; note?: string };
  adapter?: {
    vendor?: string;
    architecture?: string;
    device?: string;
    description?: string;
    features?: string[];
    limits?: Record<string, number>;
  };
  measured?: {
    date?: string;
    copy_gbps?: number;
    matmul_gflops?: number;
    conv_gflops?: number;
    depthwise_gflops?: number;
    /** GFLOP/s of the same kernels on each backend measured on the device (edgetrain profile). */
    backends?: Partial<
      Record<"cpu" | "wasm" | "webgpu", {
        matmul_gflops: number;
        conv_gflops: number;
        depthwise_gflops: number;
        threads?: number;
        simd?: string;
        adapter?: string;
      }>
    >;
  };
  sources: string[];
  notes?: string;
  /** What the process costs beyond its tensors on this device (edgetrain profile measures it). */
  footprint?: Footprint;
}

export class ProfileError extends Error {
  override name = "ProfileError";
}

/** Validate parsed JSON as a profile; `origin` names the file in errors. */
export function parseProfile(value: unknown, origin: string): DeviceProfile {
  const errors = validate(value, profileSchema);
  if (errors.length) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : "";
    throw new ProfileError(`Invalid device profile "${origin}": ${errors[0]}${more}`);
  }
  const p = value as DeviceProfile;
  if (p.memory.usable_bytes > p.memory.total_bytes) {
    throw new ProfileError(
      `Invalid device profile "${origin}": memory.usable_bytes ${p.memory.usable_bytes} exceeds total_bytes ${p.memory.total_bytes}`,
    );
  }
  return p;
}

export function builtinProfileNames(): string[] {
  return Object.keys(builtinProfiles).sort();
}

/** A built-in profile by name, or a profile file by path. */
export async function loadProfile(nameOrPath: string): Promise<DeviceProfile> {
  const builtin = builtinProfiles[nameOrPath];
  if (builtin) return parseProfile(builtin, nameOrPath);
  let text: string;
  try {
    text = await Deno.readTextFile(nameOrPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new ProfileError(
        `Unknown device "${nameOrPath}": not a built-in profile (${
          builtinProfileNames().join(", ")
        }) nor a file`,
      );
    }
    throw new ProfileError(`Cannot read device profile "${nameOrPath}": ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ProfileError(`Device profile "${nameOrPath}" is not valid JSON: ${(e as Error).message}`);
  }
  return parseProfile(json, nameOrPath);
}
