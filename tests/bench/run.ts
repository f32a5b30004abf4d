/**
 * `deno task bench`: edgetrain's WebGPU kernels and TENT step next to TF.js WebGPU, and the wasm backend next to
 * PyTorch CPU and onnxruntime-web (tests/bench/wasm_bench.ts), printed and written as JSON. The sections run
 * are replaced in the output file (default docs/bench.json) and the others kept, so one section can be re-run
 * on its own.
 *
 *   deno task bench [--sections kernels,tent_step,wasm] [--out docs/bench.json] [--quick] [--filter conv1x1]
 *                   [--no-tfjs] [--no-torch] [--no-ort] [--threads 2] [--min-ms 400] [--rounds 3]
 *
 * Each WebGPU section is an exported function (BenchContext) => Promise<SectionResult> in SECTIONS; without a
 * WebGPU adapter they are skipped with a note. Not part of `deno task test`.
 */
import type { Backend } from "../../src/backend/backend.ts";
import { createWebGpuBackend } from "../../src/backend/webgpu/mod.ts";
import { benchKernels, type KernelRow, type Timing } from "./kernels_bench.ts";
import { createTfjsPeer, type TfjsPeer } from "./tfjs_peer.ts";
import { edgetrainTentStep, TENT_BATCH, tfjsTentStep } from "./tent_step_bench.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { wasmSection, wasmTable } from "./wasm_bench.ts";

export interface BenchOptions {
  quick: boolean;
  filter?: string;
  minMs: number;
  rounds: number;
}

export interface BenchContext {
  backend: Backend;
  /** TF.js WebGPU, or null when disabled or unavailable. */
  peer: TfjsPeer | null;
  options: BenchOptions;
  /** Print one finished line (sections stream their rows so a slow run shows progress). */
  print(line: string): void;
}

export interface SectionResult {
  /** Rows as written to the JSON file. */
  rows: unknown[];
}

export type Section = (ctx: BenchContext) => Promise<SectionResult>;

function fmtTiming(t: Timing | { error: string } | null): string[] {
  if (!t) return ["-", "-"];
  if ("error" in t) return ["error", t.error.slice(0, 40)];
  return [t.ms.toFixed(2), t.gflops.toFixed(2)];
}

const KERNEL_HEADER = [
  "kernel",
  "GFLOP",
  "edgetrain ms",
  "GFLOP/s",
  "tfjs ms",
  "GFLOP/s",
  "ratio",
  "cpu ratio",
];
const WIDTHS = [44, 7, 13, 8, 10, 8, 6, 9];

function line(cells: string[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(WIDTHS[i]) : c.padStart(WIDTHS[i]))).join(" ");
}

/** GFLOP/s of matmul and convolutions (forward, grad_input, grad_weight), edgetrain / TF.js ratio. */
export async function kernelSection(ctx: BenchContext): Promise<SectionResult> {
  ctx.print(line(KERNEL_HEADER));
  ctx.print(
    "(ratio: edgetrain GFLOP/s over TF.js; cpu ratio: TF.js process CPU time per run over edgetrain's)",
  );
  const rows = await benchKernels(ctx.backend, ctx.peer, {
    quick: ctx.options.quick,
    filter: ctx.options.filter,
    minMs: ctx.options.minMs,
    rounds: ctx.options.rounds,
    onRow: (r: KernelRow) =>
      ctx.print(line([
        r.name,
        (r.flops / 1e9).toFixed(3),
        ...fmtTiming(r.edgetrain),
        ...fmtTiming(r.tfjs),
        r.ratio === null ? "-" : r.ratio.toFixed(2),
        r.cpuRatio === null ? "-" : r.cpuRatio.toFixed(2),
      ])),
  });
  return { rows };
}

/** The TENT-like step at batch 100 (issue #2): edgetrain WebGPU next to TF.js WebGPU from the same weights. */
async function tentSection(ctx: BenchContext): Promise<SectionResult> {
  if (ctx.options.filter && !"tent_step".includes(ctx.options.filter)) return { rows: [] };
  const steps = ctx.options.quick ? 1 : ctx.options.rounds;
  const ours = await edgetrainTentStep(ctx.backend, steps);
  ctx.print(
    `tent step b${TENT_BATCH}  edgetrain ${
      ours.ms_per_step.toFixed(0)
    } ms/step  (saved activations ${ours.peak_saved_bytes} B)`,
  );
  const row: Record<string, unknown> = { name: "tent_step", batch: TENT_BATCH, edgetrain: ours };
  if (ctx.peer) {
    const net = buildIrbNet(new CpuBackend(), { inChannels: 1, numClasses: 10 });
    const peer = await tfjsTentStep(net, steps);
    row.tfjs = peer;
    row.ratio = peer.ms_per_step / ours.ms_per_step;
    row.first_loss_gap = Math.abs(peer.first_loss - ours.first_loss);
    ctx.print(
      `tent step b${TENT_BATCH}  tfjs ${peer.ms_per_step.toFixed(0)} ms/step  -> edgetrain ${
        (row.ratio as number).toFixed(2)
      }x faster; first-step loss ${ours.first_loss.toFixed(6)} vs ${peer.first_loss.toFixed(6)} (same work)`,
    );
  }
  return { rows: [row] };
}

export const SECTIONS: Record<string, Section> = {
  kernels: kernelSection,
  tent_step: tentSection,
};

interface RunOptions extends BenchOptions {
  out: string;
  tfjs: boolean;
  torch: boolean;
  ort: boolean;
  threads: number;
  sections: string[];
}

const ALL_SECTIONS = [...Object.keys(SECTIONS), "wasm"];

function parseArgs(args: string[]): RunOptions {
  const o: RunOptions = {
    out: new URL("../../docs/bench.json", import.meta.url).pathname,
    tfjs: true,
    torch: true,
    ort: true,
    threads: 2,
    quick: false,
    filter: undefined as string | undefined,
    minMs: 400,
    rounds: 3,
    sections: ALL_SECTIONS,
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`bench: ${a} needs a value`);
      return v;
    };
    if (a === "--out") o.out = value();
    else if (a === "--quick") o.quick = true;
    else if (a === "--no-tfjs") o.tfjs = false;
    else if (a === "--no-torch") o.torch = false;
    else if (a === "--no-ort") o.ort = false;
    else if (a === "--threads") o.threads = Number(value());
    else if (a === "--sections") o.sections = value().split(",");
    else if (a === "--filter") o.filter = value();
    else if (a === "--min-ms") o.minMs = Number(value());
    else if (a === "--rounds") o.rounds = Number(value());
    else throw new Error(`bench: unknown argument "${a}"`);
  }
  if (!(o.minMs > 0) || !(o.rounds >= 1)) throw new Error(`bench: --min-ms and --rounds must be positive`);
  if (!(Number.isInteger(o.threads) && o.threads >= 1)) throw new Error(`bench: --threads must be >= 1`);
  for (const name of o.sections) {
    if (!ALL_SECTIONS.includes(name)) {
      throw new Error(`bench: unknown section "${name}" (${ALL_SECTIONS.join(", ")})`);
    }
  }
  return o;
}

async function readReport(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return {};
  }
}

export async function main(args: string[]): Promise<number> {
  const o = parseArgs(args);
  const previous = await readReport(o.out);
  const sections: Record<string, unknown> = (previous.sections as Record<string, unknown>) ?? {};
  // When each section was measured, and how: a report written before section_runs existed describes all of
  // its sections with its top-level fields.
  const meta: Record<string, unknown> = (previous.section_runs as Record<string, unknown>) ??
    Object.fromEntries(
      Object.keys(sections).map((name) => [name, {
        date: previous.date,
        adapter: previous.adapter,
        tfjs: previous.tfjs,
        options: previous.options,
      }]),
    );
  const runOptions = {
    quick: o.quick,
    filter: o.filter ?? null,
    minMs: o.minMs,
    rounds: o.rounds,
    threads: o.threads,
  };
  const gpuSections = o.sections.filter((s) => s in SECTIONS);
  let backend: Backend | null = null;
  let adapter = "none";
  let peer: TfjsPeer | null = null;
  let peerError: string | null = null;
  if (gpuSections.length) {
    try {
      backend = await createWebGpuBackend();
      adapter = (backend as { adapterDescription?: string }).adapterDescription ?? "unknown";
    } catch (e) {
      console.log(`WebGPU unavailable, sections ${gpuSections.join(", ")} skipped: ${(e as Error).message}`);
    }
  }
  if (backend && o.tfjs) {
    const p = await createTfjsPeer();
    if ("peer" in p) peer = p.peer;
    else peerError = p.error;
  }
  if (backend) {
    console.log(`edgetrain bench on ${adapter}${peer ? `; TF.js WebGPU on ${peer.description}` : ""}`);
  }
  if (peerError) console.log(`TF.js peer unavailable: ${peerError}`);
  const date = new Date().toISOString();
  if (backend) {
    const ctx: BenchContext = { backend, peer, options: o, print: (l) => console.log(l) };
    for (const name of gpuSections) {
      console.log(`\n== ${name}`);
      sections[name] = (await SECTIONS[name](ctx)).rows;
      meta[name] = {
        date,
        adapter,
        tfjs: peer ? { adapter: peer.description } : { error: peerError ?? "disabled (--no-tfjs)" },
        options: runOptions,
      };
    }
  }
  if (o.sections.includes("wasm")) {
    console.log(`\n== wasm (edgetrain --backend wasm next to PyTorch CPU and onnxruntime-web wasm)`);
    sections.wasm = await wasmSection({
      rounds: o.rounds,
      quick: o.quick,
      threads: o.threads,
      torch: o.torch,
      ort: o.ort,
      print: (l) => console.log(l),
    });
    meta.wasm = { date, cpu: cpuName(), cores: navigator.hardwareConcurrency, options: runOptions };
    console.log(`\n${wasmTable(sections.wasm as unknown[]).join("\n")}`);
  }
  const report = {
    ...previous,
    ...(backend
      ? { adapter, tfjs: meta[gpuSections[0]] && (meta[gpuSections[0]] as { tfjs: unknown }).tfjs }
      : {}),
    date,
    deno: Deno.version.deno,
    options: {
      quick: o.quick,
      filter: o.filter ?? null,
      minMs: o.minMs,
      rounds: o.rounds,
      threads: o.threads,
    },
    section_runs: meta,
    sections,
  };
  await Deno.writeTextFile(o.out, JSON.stringify(report, null, 2) + "\n");
  console.log(`\nwrote ${o.out}`);
  peer?.dispose();
  backend?.dispose();
  return 0;
}

function cpuName(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    return info.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? Deno.build.arch;
  } catch {
    return Deno.build.arch;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
