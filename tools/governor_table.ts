/**
 * Predicted vs measured peak memory, the budget sweep and the process table, for docs/governor.md:
 *
 *   deno run -A tools/governor_table.ts [--quick] [--sections ledger,sweep,process] [--out docs/governor.md]
 *
 * 1. For every registered method and store (fp32, fp16, int8, int4, mask) on each model and batch 4, 16, 64,
 *    with the runtime guard as adapt runs (train methods without): the estimator's prediction (src/governor/
 *    estimate.ts: the real step on the null backend) next to the ledger's measured peak of the real method
 *    on the CPU backend (src/governor/measure.ts: random images, filters opened so every batch updates).
 * 2. sweep: for budgets from 128 MiB to 2 GiB, `adapt --budget B --batch auto --method auto` spawned as a
 *    user runs it (tools/_process_runs.ts): its plan, the ledger's, the allocator's and the process's peaks,
 *    predicted and measured.
 * 3. process: the same at 512 MiB for the demo model and mobilenet_v2 at 224x224, on the CPU backend and on
 *    WebGPU (when an adapter exists).
 *
 * The ledger counts the same bytes on every backend (WebGPU adds per-kernel scratch, freed when the kernel
 * returns), so the CPU backend measures part 1. --quick: one model, batch 4 and 16 (a smoke run).
 * Rewrites the text between each section's markers in --out and prints the tables.
 */
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend } from "../src/backend/backend.ts";
import type { Module } from "../src/nn/module.ts";
import { buildMobileNetV3 } from "../src/nn/mobilenet_v3.ts";
import { loadModel } from "../src/onnx/model.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { type MethodName, METHODS } from "../src/methods/registry.ts";
import { Estimator } from "../src/governor/estimate.ts";
import { measurePeak } from "../src/governor/measure.ts";
import { GuardedBackend } from "../src/governor/guarded_backend.ts";
import { parseFlags } from "../src/cli/args.ts";
import { budgetSweep, processRuns, processTable } from "./_process_runs.ts";

const STORES = ["fp32", "fp16", "int8", "int4", "mask"] as const;
const MiB = 2 ** 20;

interface ModelSpec {
  name: string;
  input: number[];
  /** Makes the model on a backend (ONNX files are decoded once, before). */
  load(): Promise<(b: Backend) => Module>;
  /** Methods that cannot run on it, with why. */
  skip?: Partial<Record<MethodName, string>>;
}

const onnxModel = (path: string) => async () => {
  const onnx = await loadModel(path);
  return (b: Backend) => importOnnx(b, onnx);
};

const MODELS: ModelSpec[] = [
  {
    name: "mnist_irb.onnx",
    input: [1, 32, 32],
    load: onnxModel("fixtures/models/mnist_irb.onnx"),
  },
  {
    name: "MobileNetV3 (buildMobileNetV3 default, module tree)",
    input: [1, 32, 32],
    load: () => Promise.resolve((b: Backend) => buildMobileNetV3(b, { inChannels: 1, numClasses: 10 })),
  },
  {
    name: "mobilenet_v3_small_preserve.onnx",
    input: [3, 32, 32],
    load: onnxModel("fixtures/models/mobilenet_v3_small_preserve.onnx"),
    skip: { ecotta: "EcoTTA partitions MobileNetV2-style graphs only" },
  },
];

const mib = (b: number) => (b / MiB).toFixed(2);
const pct = (e: number) => `${e >= 0 ? "+" : ""}${(100 * e).toFixed(2)}%`;

interface Row {
  model: string;
  method: MethodName;
  store: string;
  cells: { batch: number; predicted: number; measured: number; leaked: number }[];
}

async function predictedVsMeasured(spec: ModelSpec, batches: number[]): Promise<Row[]> {
  const build = await spec.load();
  const est = new Estimator(build, spec.input);
  const rows: Row[] = [];
  for (const { name: method, task } of METHODS) {
    if (spec.skip?.[method]) continue;
    const guard = task === "adapt";
    for (const store of STORES) {
      const row: Row = { model: spec.name, method, store, cells: [] };
      // A fresh backend and model per row: bytes a run leaves live must not count in the next run's peak.
      const mb = new GuardedBackend(new CpuBackend());
      const fresh = build(mb);
      let leakedBefore = 0;
      for (const batch of batches) {
        const predicted = (await est.estimate({ method, batch, store, guard })).peak_bytes;
        const m = await measurePeak(mb, fresh, {
          method,
          batch,
          store,
          input: spec.input,
          batches: method === "eata" ? 4 : 2,
          guard,
        });
        row.cells.push({ batch, predicted, measured: m.peak_bytes - leakedBefore, leaked: m.leaked_bytes });
        leakedBefore += m.leaked_bytes;
        const e = predicted / m.peak_bytes - 1;
        console.error(
          `${spec.name} ${method} ${store} b${batch}: ${mib(predicted)} vs ${mib(m.peak_bytes)} MiB (${
            pct(e)
          })`,
        );
      }
      rows.push(row);
    }
  }
  return rows;
}

function ledgerTable(rows: Row[], batches: number[]): string {
  const errors = rows.flatMap((r) => r.cells.map((c) => c.predicted / c.measured - 1));
  const worst = Math.max(...errors.map(Math.abs));
  const leaks = [
    ...new Set(rows.filter((r) => r.cells.some((c) => c.leaked)).map((r) => `${r.model} ${r.method}`)),
  ];
  const out: string[] = [];
  out.push(
    `Predicted vs measured peak (MiB), ${
      rows.length * batches.length
    } runs on the CPU backend; largest |error| ` +
      `${(100 * worst).toFixed(2)}%.` +
      (leaks.length
        ? ` Runs that left bytes live after dispose (counted in their measurement): ${leaks.join(", ")}.`
        : ""),
    "",
  );
  out.push(
    `| model | method | store | ${
      batches.map((b) => `b${b} predicted | b${b} measured | b${b} error`).join(" | ")
    } |`,
  );
  out.push(`|---|---|---|${batches.map(() => "---:|---:|---:").join("|")}|`);
  for (const r of rows) {
    const cells = r.cells.map((c) =>
      `${mib(c.predicted)} | ${mib(c.measured)} | ${pct(c.predicted / c.measured - 1)}`
    );
    out.push(`| ${r.model} | ${r.method} | ${r.store} | ${cells.join(" | ")} |`);
  }
  return out.join("\n");
}

/** Replace the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `doc`. */
function withSection(doc: string, name: string, text: string, cmd: string): string {
  const start = `<!-- ${name}:start -->`, end = `<!-- ${name}:end -->`;
  const i = doc.indexOf(start), j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`the document has no ${start} ... ${end} markers`);
  return `${doc.slice(0, i + start.length)}\n\nMade by \`${cmd}\`.\n\n${text}\n\n${doc.slice(j)}`;
}

if (import.meta.main) {
  const flags = parseFlags("governor_table", Deno.args, {
    quick: { type: "boolean", default: false },
    sections: { type: "string", default: "ledger,sweep,process" },
    out: { type: "string", default: "docs/governor.md" },
  });
  const sections = new Set(flags.sections!.split(","));
  const cmd = `deno run -A --unstable-webgpu tools/governor_table.ts${flags.quick ? " --quick" : ""}`;
  let doc = await Deno.readTextFile(flags.out!);
  if (sections.has("ledger")) {
    const batches = flags.quick ? [4, 16] : [4, 16, 64];
    const rows: Row[] = [];
    for (const spec of flags.quick ? MODELS.slice(0, 1) : MODELS) {
      rows.push(...await predictedVsMeasured(spec, batches));
    }
    const text = ledgerTable(rows, batches);
    console.log(text);
    doc = withSection(doc, "governor-table", text, `${cmd} --sections ledger`);
  }
  if (sections.has("sweep")) {
    const budgets = (flags.quick ? [160, 512] : [128, 160, 192, 256, 512, 1024, 2048]).map((m) => m * MiB);
    const text = processTable(await budgetSweep(budgets));
    console.log(text);
    doc = withSection(doc, "budget-sweep", text, `${cmd} --sections sweep`);
  }
  if (sections.has("process")) {
    const gpu = await (globalThis.navigator as { gpu?: GPU }).gpu?.requestAdapter().catch(() => null);
    const text = processTable(await processRuns(gpu ? ["cpu", "webgpu"] : ["cpu"]));
    console.log(text);
    doc = withSection(doc, "process-table", text, `${cmd} --sections process`);
  }
  await Deno.writeTextFile(flags.out!, doc);
  // deno fmt aligns markdown tables: format here so the file is as `deno fmt --check` wants it.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", flags.out!], stdout: "null", stderr: "null" })
    .output();
}
