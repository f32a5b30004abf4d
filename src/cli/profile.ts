/**
 * `edgetrain profile [--out devices/NAME.json] [--name NAME] [--backend webgpu|cpu|auto] [--json]`: probe
 * this machine (WebGPU adapter name, limits and features; copy, matmul and conv throughput of edgetrain's
 * kernels) and write or print a schema-valid device profile of kind "probed" (src/devices/probe.ts).
 */
import { basename } from "node:path";
import { benchmark, probeAdapter, probedProfile } from "../devices/probe.ts";
import { formatBytes, parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openBackend } from "./common.ts";
import { rssBytes } from "../devices/footprint.ts";
import { measureFootprint } from "../devices/footprint_probe.ts";

export const HELP = `edgetrain profile [--out devices/NAME.json] [options]

  --out FILE                write the profile there (default: print it)
  --name NAME               the profile's name (default: from --out, else from the adapter)
  --backend webgpu|cpu|auto where to measure (default auto: WebGPU when an adapter exists; a machine without
                            one gets a CPU-only profile)
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
  const backend = await openBackend(flags.backend, !flags.json);
  try {
    const openedBytes = rssBytes();
    const adapter = backend.name === "webgpu" ? await probeAdapter() : null;
    // The footprint first: the benchmarks' buffers and pipelines would count as the runtime's otherwise.
    const footprint = await measureFootprint(backend, { runtimeBytes, openedBytes });
    const measured = await benchmark(backend, { minSeconds });
    const name = flags.name ?? (flags.out ? basename(flags.out).replace(/\.json$/i, "") : undefined);
    const p = { ...probedProfile(adapter, measured, { name }), footprint };
    const text = JSON.stringify({ $schema: "./schema.json", ...p }, null, 2) + "\n";
    if (flags.out) await Deno.writeTextFile(flags.out, text);
    if (flags.json || !flags.out) console.log(text.trimEnd());
    if (flags.out) {
      const m = p.measured!;
      console.error(
        `wrote ${flags.out}: ${p.display_name}; copy ${m.copy_gbps} GB/s, matmul ${m.matmul_gflops} GFLOP/s, ` +
          `conv ${m.conv_gflops} GFLOP/s, depthwise ${m.depthwise_gflops} GFLOP/s; plans with ` +
          `${formatBytes(p.memory.usable_bytes)}`,
      );
    }
  } finally {
    backend.dispose();
  }
  return 0;
}
