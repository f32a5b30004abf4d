/**
 * The adapter bank on recurring domains, for docs/adapters.md (`deno task bank`):
 *
 *   deno run -A tools/bank_recurring.ts [--method rotta] [--conditions fog,brightness,contrast] [--rounds 2]
 *     [--visit 640] [--clean 500] [--chunks 64,1] [--adapters none,bn,bn/source,lora,conv1x1] [--slots 8]
 *     [--reversed] [--control none,bn] [--threshold X] [--backend cpu|wasm] [--json FILE] [--md FILE]
 *     [--report FILE.html] [--screenshot FILE.png]
 *
 * The stream: every condition (a corruption of the 2,000 held-out test digits of mnistSplit(), severity 5,
 * seed 0) visited once per round, `visit` frames a visit, different frames in every round (round r takes
 * digits [r * visit, (r + 1) * visit); --reversed: the blocks in the opposite order; --control KINDS runs
 * those again with the other order, so that each block is seen once in each round and the rounds compare on
 * the same digits); then `clean` clean digits never shown before (the last ones). Run
 * continually (no reset), once without the bank and once per adapter kind (KIND/OPEN: a new slot opens from
 * `window`, the default, `source` or `nearest`), at each chunk size.
 *
 * Per visit: the online error, and over its first and last 200 frames. Per run: each round's mean; the clean
 * tail's error against the source model's on the same frames; how often the slot that answered a frame is
 * the one its condition used most (selection quality; never used to pick); the ledger bytes of the bank
 * against the governor's plan for the same bank.
 */
import { parseArgs } from "node:util";
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWasmBackend } from "../src/backend/wasm/mod.ts";
import { corrupt } from "../src/data/corruptions.ts";
import { type ImageSet, subset } from "../src/data/images.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import { loadPreprocessSidecar } from "../src/data/preprocess.ts";
import { Estimator } from "../src/governor/estimate.ts";
import {
  type AdapterChoice,
  bankOf,
  type BankSummary,
  type OpenFrom,
  withBank,
} from "../src/methods/bank/mod.ts";
import { createMethod, type MethodName } from "../src/methods/registry.ts";
import { type Domain, runAdaptation } from "../src/methods/run.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { loadModel } from "../src/onnx/model.ts";
import { renderReport } from "../src/report/html.ts";
import { runReportInfo } from "../src/report/run_report.ts";
import { Timeline } from "../src/report/timeline.ts";
import { f1, markdown } from "./bank_tables.ts";
import { findChromium, headless } from "./chromium.ts";

export interface Visit {
  condition: string;
  round: number;
  error: number;
  first200: number;
  last200: number;
}

export interface RecurringRun {
  method: string;
  chunk: number;
  adapter: "none" | AdapterChoice;
  open: OpenFrom | null;
  /** The rounds' digit blocks in the opposite order (the control for their difficulty). */
  reversed: boolean;
  visits: Visit[];
  /** Mean online error (%) of each round's visits. */
  rounds: number[];
  clean: number;
  /** Share of frames (%) answered by the slot their condition used most; null without a bank. */
  selection: number | null;
  /** Condition -> its most used slot. */
  slots: Record<string, number> | null;
  bank: (BankSummary & { predicted_bytes: number; predicted_bytes_per_slot: number }) | null;
  ms_per_frame: number;
}

const pct = (wrong: number, n: number) => (n ? (100 * wrong) / n : NaN);

function sequence(
  test: ImageSet,
  conditions: string[],
  rounds: number,
  visit: number,
  clean: number,
  reversed = false,
): Domain[] {
  if (rounds * visit + clean > test.n) {
    throw new Error(
      `${rounds} rounds of ${visit} frames and ${clean} clean frames need more than ${test.n} digits`,
    );
  }
  const range = (from: number, n: number) => subset(test, Array.from({ length: n }, (_, i) => from + i));
  const out: Domain[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const c of conditions) {
      // Reversed: round r shows the digits that round (rounds - 1 - r) shows otherwise (a control for their difficulty).
      const block = reversed ? rounds - 1 - r : r;
      out.push({
        name: `${c}#${r + 1}`,
        set: corrupt(range(block * visit, visit), c, { severity: 5, seed: 0 }),
      });
    }
  }
  out.push({ name: "clean", set: range(test.n - clean, clean) });
  return out;
}

/** Ledger bytes of the bank's slots as the governor plans them (every slot holding a state). */
async function plannedBank(model: string, method: MethodName, adapter: AdapterChoice, slots: number) {
  const est = Estimator.forOnnx(await loadModel(model), [1, 32, 32]);
  const at = async (n: number) =>
    (await est.estimate({ method, batch: 64, store: "fp32", guard: true, bank: { slots: n, adapter } }))
      .peak_by_category.adapters;
  const [two, three, all] = [await at(2), await at(3), await at(slots)];
  return { predicted_bytes: all, predicted_bytes_per_slot: three - two };
}

export async function runRecurring(o: {
  model: string;
  method: MethodName;
  chunk: number;
  adapter: "none" | AdapterChoice;
  open?: OpenFrom;
  domains: Domain[];
  slots: number;
  /** The selector's distance threshold (default: the bank's). */
  threshold?: number;
  report?: string;
  reversed?: boolean;
  /** A backend the runs share (the wasm one); default a fresh CPU backend per run. */
  backend?: Backend;
}): Promise<RecurringRun> {
  const backend = o.backend ?? new CpuBackend();
  const module = importOnnx(backend, await loadModel(o.model));
  const preprocess = await loadPreprocessSidecar(o.model);
  const options = { stream: { capacity: 64 } };
  const m = await createMethod(
    o.method,
    module,
    o.adapter === "none"
      ? options
      : withBank(options, { slots: o.slots, adapter: o.adapter, open: o.open, threshold: o.threshold }),
  );
  const correct: boolean[][] = o.domains.map((d) => new Array(d.set.n).fill(false));
  const slotOf: number[][] = o.domains.map((d) => new Array(d.set.n).fill(-1));
  const timeline = o.report ? new Timeline(backend.ledger) : null;
  const t0 = performance.now();
  const report = await runAdaptation(backend, m, o.domains, {
    batch: o.chunk,
    preprocess,
    observers: [{
      predicted: (e) => {
        const labels = o.domains[e.domain].set.labels!;
        e.indices.forEach((i, k) => {
          let best = 0;
          for (let c = 1; c < e.classes; c++) {
            if (e.logits[k * e.classes + c] > e.logits[k * e.classes + best]) best = c;
          }
          correct[e.domain][i] = best === labels[i];
        });
      },
      chunk: (e) => {
        if (e.adapters) {
          for (let k = 0; k < e.rows; k++) slotOf[e.domain][e.chunk * o.chunk + k] = e.adapters.active;
        }
      },
    }, ...(timeline ? [timeline.observer()] : [])],
  });
  const ms = performance.now() - t0;
  const visits: Visit[] = o.domains.slice(0, -1).map((d, i) => {
    const ok = correct[i];
    const wrong = (a: number, b: number) => ok.slice(a, b).filter((v) => !v).length;
    const [condition, round] = d.name.split("#");
    return {
      condition,
      round: Number(round),
      error: pct(wrong(0, ok.length), ok.length),
      first200: pct(wrong(0, 200), Math.min(200, ok.length)),
      last200: pct(wrong(ok.length - 200, ok.length), Math.min(200, ok.length)),
    };
  });
  const rounds = [...new Set(visits.map((v) => v.round))].map((r) => {
    const vs = visits.filter((v) => v.round === r);
    return vs.reduce((s, v) => s + v.error, 0) / vs.length;
  });
  const cleanOk = correct.at(-1)!;
  const clean = pct(cleanOk.filter((v) => !v).length, cleanOk.length);
  const bank = bankOf(m);
  let selection: number | null = null, slots: Record<string, number> | null = null;
  if (bank) {
    const byCondition = new Map<string, Map<number, number>>();
    o.domains.forEach((d, i) => {
      const c = d.name.split("#")[0];
      const tally = byCondition.get(c) ?? new Map<number, number>();
      for (const s of slotOf[i]) tally.set(s, (tally.get(s) ?? 0) + 1);
      byCondition.set(c, tally);
    });
    slots = Object.fromEntries(
      [...byCondition].map(([c, t]) => [c, [...t].reduce((a, b) => (b[1] > a[1] ? b : a))[0]]),
    );
    let hits = 0, total = 0;
    o.domains.forEach((d, i) => {
      const want = slots![d.name.split("#")[0]];
      for (const s of slotOf[i]) {
        total++;
        if (s === want) hits++;
      }
    });
    selection = pct(hits, total);
  }
  const summary = bank
    ? { ...bank.summary(), ...await plannedBank(o.model, o.method, o.adapter as AdapterChoice, o.slots) }
    : null;
  if (timeline && o.report) {
    const info = runReportInfo(report, {
      model: o.model,
      backend: backend.name,
      chunk: o.chunk,
      memory: 64,
      threshold: bank?.selector.threshold ?? null,
    });
    info.title = `Recurring domains: ${o.method}${
      bank ? ` + adapter bank (${o.adapter})` : ""
    }, chunk ${o.chunk}`;
    info.classes = 10;
    await Deno.writeTextFile(o.report, renderReport(info, timeline.data()));
  }
  m.dispose();
  module.dispose();
  return {
    method: o.method,
    chunk: o.chunk,
    adapter: o.adapter,
    open: o.adapter === "none" ? null : o.open ?? "window",
    reversed: o.reversed ?? false,
    visits,
    rounds,
    clean,
    selection,
    slots,
    bank: summary,
    ms_per_frame: ms / report.n,
  };
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
      method: { type: "string", default: "rotta" },
      conditions: { type: "string", default: "fog,brightness,contrast" },
      rounds: { type: "string", default: "2" },
      visit: { type: "string", default: "640" },
      clean: { type: "string", default: "500" },
      chunks: { type: "string", default: "64,1" },
      adapters: { type: "string", default: "none,bn,bn/source,lora,conv1x1" },
      slots: { type: "string", default: "8" },
      json: { type: "string" },
      md: { type: "string" },
      report: { type: "string" },
      screenshot: { type: "string" },
      reversed: { type: "boolean", default: false },
      control: { type: "string" },
      threshold: { type: "string" },
      backend: { type: "string", default: "cpu" },
    },
  });
  // The wasm backend on one thread, shared by every run (about ten times the CPU backend's speed here).
  const shared = a.backend === "wasm" ? await createWasmBackend({ threads: 1 }) : undefined;
  const { test } = await mnistSplit();
  const order = (reversed: boolean) =>
    sequence(test, a.conditions!.split(","), Number(a.rounds), Number(a.visit), Number(a.clean), reversed);
  const base = {
    model: a.model!,
    method: a.method as MethodName,
    slots: Number(a.slots),
    threshold: a.threshold === undefined ? undefined : Number(a.threshold),
    backend: shared,
  };
  const source = await runRecurring({
    ...base,
    domains: order(a.reversed!),
    method: "source",
    chunk: 64,
    adapter: "none",
  });
  console.log(`source: rounds ${source.rounds.map(f1).join(" ")} clean ${f1(source.clean)}`);
  const runs: RecurringRun[] = [];
  const plan: { chunk: number; spec: string; reversed: boolean }[] = [];
  for (const chunk of a.chunks!.split(",").map(Number)) {
    for (const spec of a.adapters!.split(",")) plan.push({ chunk, spec, reversed: a.reversed! });
    for (const spec of a.control ? a.control.split(",") : []) {
      plan.push({ chunk, spec, reversed: !a.reversed });
    }
  }
  for (const { chunk, spec, reversed } of plan) {
    const [adapter, open] = spec.split("/") as ["none" | AdapterChoice, OpenFrom | undefined];
    const report = a.report && spec === "bn" && !reversed
      ? a.report.replace(/\.html$/, `_chunk${chunk}.html`)
      : undefined;
    const r = await runRecurring({
      ...base,
      domains: order(reversed),
      chunk,
      adapter,
      open,
      report,
      reversed,
    });
    runs.push(r);
    console.log(
      `${spec.padEnd(10)} chunk ${String(chunk).padStart(2)}${reversed ? " reversed" : ""}: rounds ${
        r.rounds.map(f1).join(" ")
      } clean ${f1(r.clean)}` +
        (r.selection !== null ? ` selection ${f1(r.selection)}% ${JSON.stringify(r.slots)}` : "") +
        ` visits ${
          r.visits.map((v) => `${v.condition}${v.round}:${f1(v.error)}/${f1(v.first200)}/${f1(v.last200)}`)
            .join(" ")
        }` +
        ` ${f1(r.ms_per_frame)} ms/frame`,
    );
    if (a.json) await Deno.writeTextFile(a.json, JSON.stringify({ source, runs }, null, 1));
  }
  const md = markdown(runs, source);
  console.log(md);
  if (a.md) await Deno.writeTextFile(a.md, md + "\n");
  if (a.screenshot && a.report) await screenshot(a.report.replace(/\.html$/, "_chunk64.html"), a.screenshot);
  shared?.dispose();
}

/** A PNG of a report page by headless chromium (the committed picture of docs/adapters.md). */
async function screenshot(page: string, png: string): Promise<void> {
  const browser = findChromium();
  if (!browser) throw new Error("--screenshot needs chromium on PATH (apt-get install -y chromium)");
  const out = await headless(browser, page, [
    "--hide-scrollbars",
    `--screenshot=${png}`,
    "--window-size=1080,1240",
  ]);
  if (!out.success) throw new Error(`chromium could not take the screenshot: ${out.stderr}`);
}
