/**
 * `edgetrain plan --model M.onnx [--budget B | --device NAME|auto] [--method auto|METHOD] [--batch N|auto]
 * [--store S|auto] [--json]`: what the governor would run in a memory budget, with the predicted peak per
 * ledger category and the alternatives that did not fit. Also the glue `adapt` and `train` share for
 * `--budget`, `--device`, `--method auto`, `--batch auto` and `--store auto` (see `governed`).
 */
import type { Backend } from "../backend/backend.ts";
import { innermost } from "../backend/decorator.ts";
import { NullBackend } from "../backend/null.ts";
import { CATEGORIES } from "../memory/ledger.ts";
import { type ConcreteStore, isStore } from "../memory/policy.ts";
import { loadProfile } from "../devices/profile.ts";
import type { Estimate, Estimator } from "../governor/estimate.ts";
import { measuredBase, processEstimator } from "./memory.ts";
import { maxBatch } from "../onnx/import.ts";
import { BATCH_CAP, DEFAULT_MARGIN, type Plan, planRun } from "../governor/planner.ts";
import {
  autoCandidates,
  methodHelp,
  type MethodName,
  methodNamed,
  names,
  resolveStore,
} from "../methods/registry.ts";
import { formatBytes, parseBytes, parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, type LoadedModel, openBackend, openModel } from "./common.ts";
import type { BankSettings } from "../methods/bank/mod.ts";
import { UsageError } from "./errors.ts";

export const HELP = `edgetrain plan --model M.onnx [--budget B | --device NAME|auto] [options]

  --budget B                memory budget (256MiB, 1.5GiB, ...)
  --device NAME|auto        a device profile's usable memory (devices/*.json name or a profile file);
                            auto (the default): half of the available system memory, or the backend's cap
  --method auto|METHOD      auto (default): the strongest method of --task that fits (${
  autoCandidates("adapt").map((m) => m.name).join(" > ")
}; ecotta only with warm-up data; train: ${autoCandidates("train").map((m) => m.name).join(" > ")})
${methodHelp("adapt", "                              ")}
${methodHelp("train", "                              ")}
  --task adapt|train        which methods --method auto ranks (default adapt)
  --batch N|auto            auto (default): the largest batch up to ${BATCH_CAP} that fits
  --store fp32|fp16|int8|int4|mask|auto   auto (default): the most faithful store that fits
  --top-blocks K            train methods: blocks to train from the output (default all)
  --warmup                  adapt will have EcoTTA warm-up data (--warmup-images): auto may pick ecotta
  --input C,H,W             one sample's shape when the model does not fix it
  --margin F                safety margin as a fraction of the budget (default ${DEFAULT_MARGIN})
  --samples N               images the run will feed (default: a long stream); freed host memory waiting for
                            the garbage collector grows with them, up to a bound
  --backend webgpu|cpu|auto the backend the run will use (default auto: WebGPU when an adapter exists): its
                            allocator and its footprint (the --device profile's, else built in) go into the
                            process's predicted peak, which is what must fit the budget
  --json                    print one JSON object on stdout`;

export interface Budget {
  bytes: number;
  source: string;
}

/** Half of the available system memory (WebGPU reports no device memory), or a backend's own cap. */
export const AUTO_FRACTION = 0.5;

export function autoBudget(backend?: Backend): Budget {
  const cap = (backend && innermost(backend) as { memoryLimitBytes?: number })?.memoryLimitBytes;
  if (cap !== undefined && Number.isFinite(cap)) return { bytes: cap, source: "the backend's memory limit" };
  const info = Deno.systemMemoryInfo();
  return {
    bytes: Math.floor(info.available * AUTO_FRACTION),
    source: `auto: ${AUTO_FRACTION * 100}% of the ${formatBytes(info.available)} of available system memory`,
  };
}

/** The budget from --budget, --device NAME or auto. */
export async function resolveBudget(budget?: string, device?: string, backend?: Backend): Promise<Budget> {
  if (budget !== undefined && device !== undefined) {
    throw new UsageError("--budget and --device exclude each other");
  }
  if (budget !== undefined) return { bytes: parseBytes("budget", budget), source: `--budget ${budget}` };
  if (device !== undefined && device !== "auto") {
    const p = await loadProfile(device);
    return { bytes: p.memory.usable_bytes, source: `device ${p.name} (usable memory)` };
  }
  return autoBudget(backend);
}

export const GOVERNOR_FLAGS = {
  budget: { type: "string" as const },
  device: { type: "string" as const },
};

export interface GovernOptions {
  task: "adapt" | "train";
  method: string;
  /** "auto" or an integer: images per step (train), the learning minibatch = memory bank (adapt). */
  batch: string;
  /** Adapt: frames answered at once (default: the batch). */
  chunk?: number;
  /** Adapt: what the target statistics follow. */
  statsFrom?: "bank" | "stream";
  store: string;
  budget?: string;
  device?: string;
  /** A budget already resolved (plan), instead of --budget/--device. */
  resolved?: Budget;
  /** Throw when nothing fits (default true); plan reports the miss instead. */
  requireFit?: boolean;
  model: LoadedModel;
  /** One sample's [C, H, W] as the images preprocess to. */
  input: readonly number[];
  backend?: Backend;
  topBlocks?: number;
  margin?: number;
  /** The run keeps the runtime guard's parameter copy (adapt). */
  guard?: boolean;
  /** EcoTTA gets clean warm-up data; without it `--method auto` does not pick EcoTTA (see planFor). */
  warmup?: boolean;
  /** Samples the run will feed in all (decode buffers waiting for the garbage collector are bounded by it). */
  samples?: number;
  /** The backend the run uses, when it is not open (plan): "cpu" or "webgpu", with its adapter. */
  target?: { backend: "cpu" | "webgpu"; adapter?: string; maxBufferSize?: number };
  /** The adapter bank the run keeps (--bank): counted in every estimate. */
  bank?: BankSettings;
}

export interface Governed {
  method: MethodName;
  batch: number;
  store: ConcreteStore;
  /** null when the estimator cannot model this graph (the run goes on without a prediction). */
  predicted_peak_bytes: number | null;
  /** The chosen configuration's estimate (ledger, allocator and process), when there is one. */
  estimate: Estimate | null;
  estimator: Estimator;
  /** Present when the planner chose (a budget, a device, or an auto flag). */
  plan?: Plan & { budget_source: string };
}

/**
 * What `adapt`/`train` run: the flags as given, or the planner's choice when a budget, a device or an `auto`
 * asks for one. Throws (exit 1) when nothing fits the budget.
 */
export async function governed(o: GovernOptions): Promise<Governed> {
  const known = names(o.task);
  if (o.method !== "auto" && !known.includes(o.method)) {
    throw new UsageError(`--method "${o.method}" is not one of ${[...known, "auto"].join(", ")}`);
  }
  if (!isStore(o.store)) {
    throw new UsageError(`--store "${o.store}" is not one of fp32, fp16, int8, int4, mask, auto`);
  }
  const batch = o.batch === "auto" ? undefined : parseNumber("batch", o.batch, { integer: true, min: 1 })!;
  const plans = o.method === "auto" || batch === undefined || o.budget !== undefined ||
    o.device !== undefined || o.resolved !== undefined;
  const estimator = await processEstimator(o);
  const common = {
    topBlocks: o.topBlocks,
    guard: o.guard,
    chunk: o.chunk,
    statsFrom: o.statsFrom,
    bank: o.bank,
  };
  // A model exported with a batch baked into its graph takes at most that many images at once.
  const most = maxBatch(o.model.module);
  if (batch !== undefined && batch > most) {
    throw new UsageError(
      `--${
        o.task === "adapt" ? "memory" : "batch"
      } ${batch}: model "${o.model.path}" takes at most ${most} ` +
        `image${most === 1 ? "" : "s"} at once (its export fixed the batch: re-export with dynamic_axes)`,
    );
  }
  if (!plans) {
    const method = o.method as MethodName;
    let e: Estimate | null = null;
    const store = resolveStore(o.store, method);
    try {
      e = await estimator.estimate({ method, batch: batch!, store, ...common });
    } catch {
      // No prediction (flags the method itself will reject with its own message when it runs): the run goes
      // on and reports predicted_peak_bytes null.
    }
    return {
      method,
      batch: batch!,
      store,
      predicted_peak_bytes: e?.peak_bytes ?? null,
      estimate: e,
      estimator,
    };
  }
  const budget = o.resolved ?? await resolveBudget(o.budget, o.device, o.backend);
  const candidates = o.method === "auto" ? autoCandidates(o.task) : [methodNamed(o.method)];
  const unavailable: Partial<Record<MethodName, string>> = {};
  if (o.method === "auto") {
    for (const m of candidates) {
      const why = m.task === "adapt" ? m.unavailableForAuto?.({ warmup: o.warmup ?? false }) : null;
      if (why) unavailable[m.name] = why;
    }
  }
  const request = {
    budgetBytes: budget.bytes,
    margin: o.margin,
    methods: candidates.map((m) => m.name),
    batch,
    store: o.store === "auto" ? undefined : o.store,
    fallback: o.method === "auto" && o.task === "adapt",
    ...common,
    batchCap: Math.min(BATCH_CAP, most),
    unavailable,
  };
  let plan = await planRun(estimator, request);
  // Planning runs many estimates, and the JS heap they grew stays resident: plan again from the base measured
  // now (the estimates are cached, so this costs little) until it no longer grows.
  for (let k = 0; k < 3 && o.backend; k++) {
    const base = measuredBase(o.backend);
    if (base <= (estimator.process.measuredBaseBytes ?? Infinity)) break;
    estimator.process.measuredBaseBytes = base;
    plan = await planRun(estimator, request);
  }
  if (!plan.fits && o.requireFit !== false) throw new Error(plan.reason);
  return {
    method: plan.method,
    batch: plan.batch,
    store: plan.store,
    predicted_peak_bytes: plan.predicted_peak_bytes,
    estimate: await estimator.estimate({
      method: plan.method,
      batch: plan.batch,
      store: plan.store,
      ...common,
    }),
    estimator,
    plan: { ...plan, budget_source: budget.source },
  };
}

function parseInput(value: string | undefined, model: LoadedModel): number[] {
  if (value !== undefined) {
    const dims = value.split(/[,x]/).map(Number);
    if (dims.length !== 3 || !dims.every((d) => Number.isInteger(d) && d >= 1)) {
      throw new UsageError(`--input "${value}" must be C,H,W (three positive integers)`);
    }
    return dims;
  }
  if (!model.inputShape) {
    throw new UsageError(`model "${model.path}" does not fix its input shape: give --input C,H,W`);
  }
  return [...model.inputShape];
}

/** The ledger's categories at the predicted peak, then the terms of the process's predicted peak. */
export function planTable(plan: Plan): string[] {
  const row = (name: string, bytes: number) => `  ${name.padEnd(14)} ${formatBytes(bytes).padStart(10)}`;
  const lines = ["tensors (ledger):", ...CATEGORIES.map((c) => row(c, plan.by_category[c]))];
  lines.push(row("total", plan.predicted_peak_bytes), "process:");
  for (const [k, v] of Object.entries(plan.process_terms)) lines.push(row(k.replace(/_bytes$/, ""), v));
  lines.push(row("total", plan.predicted_process_peak_bytes));
  if (plan.predicted_device_peak_bytes !== null) {
    lines.push(row("device memory", plan.predicted_device_peak_bytes));
  }
  return lines;
}

/** The backend `adapt` would open for --backend (an adapter's description and limits for WebGPU). */
async function planTarget(choice: string | undefined): Promise<NonNullable<GovernOptions["target"]>> {
  if (choice === "cpu") return { backend: "cpu" };
  const b = await openBackend(choice, false);
  try {
    const gpu = b as Backend & { adapterDescription?: string; limits?: GPUSupportedLimits };
    return b.name === "webgpu"
      ? { backend: "webgpu", adapter: gpu.adapterDescription, maxBufferSize: gpu.limits?.maxBufferSize }
      : { backend: "cpu" };
  } finally {
    b.dispose();
  }
}

export default async function plan(args: string[]): Promise<number> {
  const flags = parseFlags("plan", args, {
    model: { type: "string" },
    ...GOVERNOR_FLAGS,
    method: { type: "string", default: "auto" },
    task: { type: "string", default: "adapt" },
    batch: { type: "string", default: "auto" },
    store: { type: "string", default: "auto" },
    "top-blocks": { type: "string" },
    warmup: { type: "boolean", default: false },
    input: { type: "string" },
    margin: { type: "string" },
    samples: { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (flags.task !== "adapt" && flags.task !== "train") {
    throw new UsageError(`--task "${flags.task}" is not adapt or train`);
  }
  const task = flags.method !== "auto" && names("train").includes(flags.method!) ? "train" : flags.task;
  const model = await openModel(new NullBackend(), flags.model);
  const input = parseInput(flags.input, model);
  const margin = parseNumber("margin", flags.margin, { min: 0, max: 0.9 });
  const topBlocks = parseNumber("top-blocks", flags["top-blocks"], { integer: true, min: 0 });
  const budget = await resolveBudget(flags.budget, flags.device);
  const target = await planTarget(flags.backend);
  const g = await governed({
    task,
    method: flags.method!,
    batch: flags.batch!,
    store: flags.store!,
    resolved: budget,
    device: flags.device,
    requireFit: false,
    model,
    input,
    topBlocks,
    margin,
    guard: task === "adapt",
    warmup: flags.warmup,
    target,
    samples: parseNumber("samples", flags.samples, { integer: true, min: 1 }),
  });
  const p = g.plan!;
  if (flags.json) {
    console.log(JSON.stringify({ model: model.path, task, input, backend: target.backend, ...p }));
    return p.fits ? 0 : 1;
  }
  console.log(
    `plan for ${model.path} (input ${input.join("x")}), budget ${
      formatBytes(p.budget_bytes)
    } from ${p.budget_source}, ` +
      `margin ${p.margin * 100}%`,
  );
  console.log(
    `${p.method}, batch ${p.batch}, store ${p.store}: predicted peak ${formatBytes(p.predicted_peak_bytes)}` +
      ` of tensors, ${formatBytes(p.predicted_process_peak_bytes)} for the process on ${target.backend}`,
  );
  for (const l of planTable(p)) console.log(l);
  console.log(`why: ${p.reason}`);
  if (p.alternatives.length) console.log("alternatives:");
  for (const a of p.alternatives) {
    const what = a.batch ? `${a.method}, batch ${a.batch}, ${a.store}` : a.method;
    console.log(`  ${a.fits ? "fits" : "no  "} ${what}: ${a.why}`);
  }
  if (!p.fits) console.error(`edgetrain plan: ${p.reason}`);
  return p.fits ? 0 : 1;
}
