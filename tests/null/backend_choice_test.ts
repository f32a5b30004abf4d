import { equal, ok } from "node:assert/strict";
import { isCpuAdapter } from "../../src/devices/backend_choice.ts";

const adapter = (over: Partial<Parameters<typeof isCpuAdapter>[0]>) => ({
  vendor: "",
  architecture: "",
  device: "",
  description: "",
  isFallbackAdapter: false,
  ...over,
});

Deno.test("isCpuAdapter() tells software WebGPU adapters from GPUs by the fallback flag or the driver's name", () => {
  // What Deno reports for Mesa's lavapipe on this machine.
  ok(
    isCpuAdapter(adapter({ vendor: "65541", device: "0", description: "llvmpipe (LLVM 15.0.6, 256 bits)" })),
  );
  ok(isCpuAdapter(adapter({ isFallbackAdapter: true, description: "anything" })));
  ok(isCpuAdapter(adapter({ description: "SwiftShader Device (Subzero)" })));
  ok(isCpuAdapter(adapter({ description: "Microsoft Basic Render Driver" })));
  equal(isCpuAdapter(adapter({ vendor: "nvidia", description: "NVIDIA Tegra Orin (nvgpu)" })), false);
  equal(
    isCpuAdapter(
      adapter({ vendor: "intel", architecture: "gen-12lp", description: "Intel(R) UHD Graphics" }),
    ),
    false,
  );
  equal(isCpuAdapter(adapter({ vendor: "apple", architecture: "common-3", description: "Apple M2" })), false);
});
