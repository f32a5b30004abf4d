/**
 * `edgetrain profile [--out devices/NAME.json] [--name NAME] [--backend webgpu|wasm|cpu|auto] [--json]`:
 * probe this machine (WebGPU adapter name, limits and features; copy, matmul and conv throughput of
 * edgetrain's kernels on the chosen backend, and the GFLOP/s of every backend available here) and write or
 * print a schema-valid device profile of kind "probed" (src/devices/probe.ts).
 */
import { basename } from "node:path";
import type { Backend } from "../backend/backend.ts";
import { CpuBackend } from "../backend/cpu.ts";
import { createWasmBackend, type WasmBackend } from "../backend/wasm/mod.ts";
import {
  type AdapterProbe,
  type BackendFigures,
  type BackendName,
  benchmark,
  kernelRates,
  probeAdapter,
  probedProfile,
  type Throughput,
} from "../devices/probe.ts";
import { formatBytes, parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openBackend } from "./common.ts";
import { rssBytes } from "../devices/footprint.ts";
import { measureFootprint } from "../devices/footprint_probe.ts";

export const HELP = `edgetrain profile [--out devices/NAME.json] [options]

  --out FILE                write the profile there (default: print it)
  --name NAME               the profile's name (default: from --out, else from the adapter)
  --backend webgpu|wasm|cpu|auto   whose figures the profile plans with (default auto: WebGPU on a GPU,
                            else wasm); every backend available is measured too (measured.backends);
                            cpu measures the CPU backends only and records no WebGPU adapter
  --threads N               wasm backend threads (default: the machine's cores)
  --seconds S               shortest timed run of each micro-benchmark (default 0.25)
  --json                    print the profile on stdout even with --out`;

export default async function profile(args: string[]): Promise<number> {
  const flags = parseFlags("profile", args, {
    out: { type: "string" },
    name: { type: "string" },
    seconds: { type: "string", default: "0.25" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const minSeconds = parseNumber("seconds", flags.seconds, { min: 0.01, max: 10 })!;
  const runtimeBytes = rssBytes();
  const backend = await openBackend(flags, !flags.json);
  try {
    const openedBytes = rssBytes();
    // The footprint first: the benchmarks' buffers and pipelines would count as the runtime's otherwise.
    const footprint = await measureFootprint(backend, { runtimeBytes, openedBytes });
    // Any adapter is recorded (wasm may be the backend beside a CPU adapter); --backend cpu records none.
    const adapter = flags.backend === "cpu" ? null : await probeAdapter();
    const measured = await benchmark(backend, { minSeconds });
    const backends = await measureBackends(backend, measured, adapter, flags.threads, minSeconds);
    const name = flags.name ?? (flags.out ? basename(flags.out).replace(/\.json$/i, "") : undefined);
    const p = {
      ...probedProfile(adapter, measured, { name, backend: backend.name as BackendName, backends }),
      footprint,
    };
    const text = JSON.stringify({ $schema: "./schema.json", ...p }, null, 2) + "\n";
    if (flags.out) await Deno.writeTextFile(flags.out, text);
    if (flags.json || !flags.out) console.log(text.trimEnd());
    if (flags.out) {
      const m = p.measured!;
      console.error(
        `wrote ${flags.out}: ${p.display_name}; copy ${m.copy_gbps} GB/s, matmul ${m.matmul_gflops} GFLOP/s, ` +
          `conv ${m.conv_gflops} GFLOP/s, depthwise ${m.depthwise_gflops} GFLOP/s on ${backend.name}; plans with ` +
          `${formatBytes(p.memory.usable_bytes)}`,
      );
    }
  } finally {
    backend.dispose();
  }
  return 0;
}

/** The probe kernels on every backend available here: the chosen one's figures, the others measured now. */
async function measureBackends(
  chosen: Backend,
  measured: Throughput,
  adapter: AdapterProbe | null,
  threads: string | undefined,
  minSeconds: number,
): Promise<Partial<Record<BackendName, BackendFigures>>> {
  const out: Partial<Record<BackendName, BackendFigures>> = {};
  const names: BackendName[] = adapter ? ["cpu", "wasm", "webgpu"] : ["cpu", "wasm"];
  for (const name of names) {
    let b: Backend = chosen;
    if (chosen.name !== name) {
      b = name === "cpu"
        ? new CpuBackend()
        : name === "wasm"
        ? await createWasmBackend({ threads: threads === undefined ? undefined : Number(threads) })
        : await openBackend({ backend: "webgpu" }, false);
    }
    try {
      const r = b === chosen ? measured : await kernelRates(b, { minSeconds });
      out[name] = {
        matmul_gflops: r.matmul_gflops,
        conv_gflops: r.conv_gflops,
        depthwise_gflops: r.depthwise_gflops,
        ...(name === "wasm" ? { threads: (b as WasmBackend).threads, simd: (b as WasmBackend).simd } : {}),
        ...(name === "webgpu" && adapter?.description ? { adapter: adapter.description } : {}),
      };
    } finally {
      // The shared wasm/WebGPU backends stay open for the process (the CLI exits right after).
      if (b !== chosen && name === "cpu") b.dispose();
    }
  }
  return out;
}
