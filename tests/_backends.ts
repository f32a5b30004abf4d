/**
 * One test body, run on every backend (STYLE.md rule 5): `backendTest("relu() ...", async (b) => {...})`
 * registers "[cpu] relu() ...", "[webgpu] relu() ..." and "[wasm] relu() ...". WebGPU tests are skipped with a
 * visible name when no adapter exists (set EDGETRAIN_REQUIRE_WEBGPU=1, as CI does, to make that a failure
 * instead). The wasm backend runs everywhere Deno does; its tests share one backend per process (one memory
 * and worker pool), as WebGPU's share one device.
 */
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
// Static, so the wasm runtime takes the Web Worker constructor before onnxruntime-web can replace it.
import { createWasmBackend } from "../src/backend/wasm/mod.ts";

export type BackendName = "cpu" | "webgpu" | "wasm";

let webgpu: Promise<Backend | null> | undefined;

export function webgpuBackend(): Promise<Backend | null> {
  webgpu ??= (async () => {
    try {
      const { createWebGpuBackend } = await import("../src/backend/webgpu/mod.ts");
      return await createWebGpuBackend();
    } catch (e) {
      if (Deno.env.get("EDGETRAIN_REQUIRE_WEBGPU") === "1") throw e;
      console.warn(`WebGPU unavailable, its tests are skipped: ${(e as Error).message}`);
      return null;
    }
  })();
  return webgpu;
}

export async function wasmBackend(): Promise<Backend> {
  return await createWasmBackend();
}

export async function getBackend(name: BackendName): Promise<Backend | null> {
  if (name === "cpu") return new CpuBackend();
  return name === "wasm" ? await wasmBackend() : await webgpuBackend();
}

export function backendTest(
  name: string,
  body: (b: Backend) => Promise<void> | void,
  options: { backends?: BackendName[] } = {},
): void {
  for (const which of options.backends ?? ["cpu", "webgpu", "wasm"]) {
    Deno.test({
      name: `[${which}] ${name}`,
      // WebGPU and wasm keep process-wide resources across tests by design (one device, one worker pool).
      sanitizeResources: which === "cpu",
      sanitizeOps: which === "cpu",
      fn: async (t) => {
        const b = await getBackend(which);
        if (!b) {
          console.warn(`skipped: no WebGPU adapter`);
          return;
        }
        void t;
        await body(b);
      },
    });
  }
}
