/**
 * The WebGPU backend's entry point. `createWebGpuBackend()` without options returns one shared backend per
 * process (one device: pipelines and pooled buffers are reused by every caller); options that change its
 * behaviour (a memory cap, an injected `gpu`) get a backend of their own on a new device.
 */
import { acquireDevice, type DeviceOptions } from "./device.ts";
import { WebGpuBackend, type WebGpuBackendOptions } from "./webgpu_backend.ts";

export { WebGpuBackend, type WebGpuBackendOptions, type WebGpuMemoryStats } from "./webgpu_backend.ts";
export { acquireDevice, debugFlags, type DeviceOptions } from "./device.ts";

export type CreateWebGpuOptions = WebGpuBackendOptions & DeviceOptions;

let shared: Promise<WebGpuBackend> | null = null;

export function createWebGpuBackend(options: CreateWebGpuOptions = {}): Promise<WebGpuBackend> {
  if (Object.keys(options).length > 0) return create(options);
  if (!shared) {
    const p = create({});
    shared = p;
    p.then((b) => {
      b.onDispose = () => {
        if (shared === p) shared = null;
      };
    }, () => {
      if (shared === p) shared = null; // let a later call retry (e.g. after installing a driver)
    });
  }
  return shared;
}

async function create(options: CreateWebGpuOptions): Promise<WebGpuBackend> {
  const acquired = await acquireDevice(options);
  return new WebGpuBackend(acquired, options);
}
