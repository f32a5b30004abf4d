/**
 * Predicted vs measured peak memory, and the budget sweep, for docs/governor.md:
 *
 *   deno run -A tools/governor_table.ts [--quick] [--out docs/governor.md]
 *
 * 1. For every registered method and store (fp32, fp16, int8, int4, mask) on each model and batch 4, 16, 64,
 *    with the runtime guard as adapt runs (train methods without): the estimator's prediction (src/governor/
 *    estimate.ts: the real step on the null backend) next to the ledger's measured peak of the real method
 *    on the CPU backend (src/governor/measure.ts: random images, filters opened so every batch updates).
 * 2. For budgets from 16 MiB to 2 GiB: what `adapt --budget B --batch auto --method auto` plans and what it
 *    then measures over a real stream with the real filters and the runtime guard, as the CLI runs it.
 *
 * The ledger counts the same bytes on every backend (WebGPU adds per-kernel scratch, freed when the kernel
 * returns), so the CPU backend measures here. --quick: one model, batch 4 and 16 (a smoke run).
 * Rewrites the text between the governor-table markers of --out and prints the tables.
 */
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend } from "../src/backend/backend.ts";
import type { Module } from "../src/nn/module.ts";
import { buildMobileNetV3 } from "../src/nn/mobilenet_v3.ts";
import { loadModel } from "../src/onnx/model.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { readIdxImages } from "../src/data/idx.ts";
import type { ImageSet } from "../src/data/images.ts";
import type { PreprocessOptions } from "../src/data/preprocess.ts";
import { withStore } from "../src/memory/policy.ts";
import {
  autoCandidates,
  createMethod,
  type MethodName,
  methodNamed,
  METHODS,
} from "../src/methods/registry.ts";
import { runAdaptation } from "../src/methods/run.ts";
import { Estimator } from "../src/governor/estimate.ts";
import { measurePeak, randomImages } from "../src/governor/measure.ts";
import { planRun } from "../src/governor/planner.ts";
import { RuntimeGuard } from "../src/governor/guard.ts";
import { GuardedBackend } from "../src/governor/guarded_backend.ts";
import { parseFlags } from "../src/cli/args.ts";

const STORES = ["fp32", "fp16", "int8", "int4", "mask"] as const;
const MiB = 2 ** 20;

interface ModelSpec {
  name: string;
  input: number[];
  /** Makes the model on a backend (ONNX files are decoded once, before). */
  load(): Promise<(b: Backend) => Module>;
  /** Methods that cannot run on it, with why. */
  skip?: Partial<Record<MethodName, string>>;
  /** A real stream for the budget sweep (else random images). */
  stream?: { images: string; preprocess: PreprocessOptions };
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
    stream: {
      images: "fixtures/streams/mnist_c/fog-s5-images-idx3-ubyte.gz",
      preprocess: { pad: 2, mean: [0.1307], std: [0.3081] },
    },
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

interface SweepRow {
  model: string;
  budget: number;
  method: string;
  batch: number;
  store: string;
  predicted: number;
  measured: number;
  backoffs: number;
}

async function sweep(spec: ModelSpec, budgets: number[], n: number): Promise<SweepRow[]> {
  const b = new GuardedBackend(new CpuBackend());
  const build = await spec.load();
  const module = build(b);
  const est = new Estimator(build, spec.input);
  let set: ImageSet, preprocess: PreprocessOptions;
  if (spec.stream) {
    const all = await readIdxImages(spec.stream.images);
    set = { ...all, n, pixels: all.pixels.subarray(0, n * all.height * all.width) };
    preprocess = spec.stream.preprocess;
  } else {
    set = randomImages(n, spec.input, { seed: 1 });
    preprocess = { mean: [0.5], std: [0.25] };
  }
  const source = await module.state();
  const rows: SweepRow[] = [];
  for (const budget of budgets) {
    // What `adapt --method auto --batch auto --budget B` plans (no EcoTTA warm-up data here).
    const plan = await planRun(est, {
      budgetBytes: budget,
      methods: autoCandidates("adapt").map((m) => m.name),
      fallback: true,
      guard: true,
      unavailable: { ecotta: "no warm-up data" },
    });
    if (!plan.fits) {
      rows.push({
        model: spec.name,
        budget,
        method: "-",
        batch: 0,
        store: "-",
        predicted: plan.predicted_peak_bytes,
        measured: 0,
        backoffs: 0,
      });
      continue;
    }
    const m = await createMethod(plan.method, module);
    const guard = new RuntimeGuard(b, {
      batch: plan.batch,
      store: plan.store,
      backward: methodNamed(plan.method).backward,
      peakOf: async (batch, store) =>
        (await est.estimate({ method: plan.method, batch, store, guard: true })).peak_bytes,
    });
    const report = await withStore(
      plan.store,
      () =>
        runAdaptation(b, m, [{ name: "sweep", set }], {
          batch: plan.batch,
          preprocess,
          guard,
        }),
    );
    m.dispose();
    guard.dispose();
    module.loadState(source);
    rows.push({
      model: spec.name,
      budget,
      method: plan.method,
      batch: plan.batch,
      store: plan.store,
      predicted: plan.predicted_peak_bytes,
      measured: report.peak_bytes,
      backoffs: guard.backoffs.length,
    });
    console.error(
      `${spec.name} budget ${mib(budget)} MiB: ${plan.method}/${plan.batch}/${plan.store} measured ${
        mib(report.peak_bytes)
      } MiB`,
    );
  }
  return rows;
}

function tables(rows: Row[], batches: number[], swept: SweepRow[]): string {
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
  out.push(
    "",
    "Budget sweep: `adapt --budget B --batch auto --method auto` (no EcoTTA warm-up data), measured:",
    "",
  );
  out.push(
    "| model | budget | method | batch | store | predicted MiB | measured MiB | within budget | back-offs |",
  );
  out.push("|---|---:|---|---:|---|---:|---:|---|---:|");
  for (const s of swept) {
    out.push(
      `| ${s.model} | ${
        s.budget >= 2 ** 30 ? `${s.budget / 2 ** 30} GiB` : `${s.budget / MiB} MiB`
      } | ${s.method} | ` +
        `${s.batch} | ${s.store} | ${mib(s.predicted)} | ${
          s.method === "-" ? "nothing fits" : mib(s.measured)
        } | ` +
        `${s.method === "-" || s.measured <= s.budget ? "yes" : "**no**"} | ${s.backoffs} |`,
    );
  }
  return out.join("\n");
}

if (import.meta.main) {
  const flags = parseFlags("governor_table", Deno.args, {
    quick: { type: "boolean", default: false },
    out: { type: "string", default: "docs/governor.md" },
  });
  const batches = flags.quick ? [4, 16] : [4, 16, 64];
  const models = flags.quick ? MODELS.slice(0, 1) : MODELS;
  const rows: Row[] = [];
  for (const spec of models) rows.push(...await predictedVsMeasured(spec, batches));
  const budgets = (flags.quick ? [16, 256] : [16, 32, 64, 128, 256, 512, 1024, 2048]).map((m) => m * MiB);
  const swept: SweepRow[] = [];
  for (const spec of [MODELS[0], MODELS[2]].slice(0, flags.quick ? 1 : 2)) {
    swept.push(...await sweep(spec, budgets, 128));
  }
  const text = tables(rows, batches, swept);
  console.log(text);
  const start = "<!-- governor-table:start -->", end = "<!-- governor-table:end -->";
  let doc = "";
  try {
    doc = await Deno.readTextFile(flags.out!);
  } catch {
    doc = `${start}\n${end}\n`;
  }
  const i = doc.indexOf(start), j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`${flags.out} has no ${start} ... ${end} markers`);
  const cmd = `deno run -A tools/governor_table.ts${flags.quick ? " --quick" : ""}`;
  await Deno.writeTextFile(
    flags.out!,
    `${doc.slice(0, i + start.length)}\n\nMade by \`${cmd}\`.\n\n${text}\n\n${doc.slice(j)}`,
  );
  // deno fmt aligns markdown tables: format here so the file is as `deno fmt --check` wants it.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", flags.out!], stdout: "null", stderr: "null" })
    .output();
}
