/**
 * The planner: the best (method, batch, store) whose estimated peak fits a memory budget.
 *
 * "Best" is an order, not a score: the stronger method first (the registry's rank: EcoTTA > SAR > EATA >
 * TENT > BN for adapt; full > MobileTL > bias for train), then the larger batch (up to BATCH_CAP: beyond it BN statistics gain
 * little and each update waits for more of the stream), then the more faithful store (fp32 > fp16 > int8 >
 * mask > int4; a method whose descriptor prefers the mask store, MobileTL, starts there). A configuration
 * fits when its estimate of the *process's* peak (src/governor/process.ts: the runtime, host copies and the
 * allocator's high-water bytes around the ledger's tensors) is at most the budget less the safety margin
 * (10%: garbage-collector timing, JIT, drivers). Because the choice is
 * the first fitting one in a fixed order, a larger budget never picks a worse configuration. When no
 * configuration with a backward pass fits, `fallback` drops to BN adaptation (forward only).
 */
import type { ByCategory } from "../memory/ledger.ts";
import type { ConcreteStore, StoreName } from "../memory/policy.ts";
import { type MethodName, methodNamed } from "../methods/registry.ts";
import type { Estimate, Estimator } from "./estimate.ts";
import type { BankSettings } from "../methods/bank/mod.ts";
/** The largest batch the planner picks on its own. */
export const BATCH_CAP = 64;
/** Batch sizes tried, largest first (`--batch auto`). */
export const BATCH_CANDIDATES = [64, 48, 32, 24, 16, 12, 8, 6, 4, 2];
/** Stores from most to least faithful. */
export const STORE_PREFERENCE: readonly ConcreteStore[] = [
  "fp32",
  "fp16",
  "int8",
  "mask",
  "int4",
];
export const DEFAULT_MARGIN = 0.1;

export function storesFor(method: MethodName): ConcreteStore[] {
  const d = methodNamed(method);
  if (!d.backward) return ["fp32"];
  return [d.store, ...STORE_PREFERENCE.filter((s) => s !== d.store)];
}

export interface PlanRequest {
  budgetBytes: number;
  /** Safety margin as a fraction of the budget (0.1). */
  margin?: number;
  /** Candidate methods in preference order. */
  methods: readonly MethodName[];
  /** A fixed batch, or undefined for `auto` (BATCH_CANDIDATES up to `batchCap`). */
  batch?: number;
  batchCap?: number;
  /** A fixed store (`auto`: the method's default), or undefined to let the planner choose. */
  store?: StoreName;
  /** Drop to `bn` when no method with a backward pass fits (`--method auto`). */
  fallback?: boolean;
  topBlocks?: number;
  /** Method-specific settings for the estimates (MethodOptions.extra). */
  extra?: Record<string, unknown>;
  /** Adapt: frames answered at once, and what the target statistics follow (estimate options). */
  chunk?: number;
  statsFrom?: "bank" | "stream";
  /** Count the runtime guard's parameter copy (adapt runs with the guard). */
  guard?: boolean;
  /** Methods ruled out before any estimate, with why (listed among the alternatives). */
  unavailable?: Partial<Record<MethodName, string>>;
  /** The adapter bank every configuration runs with (--bank). */
  bank?: BankSettings;
}

export interface Alternative {
  method: MethodName;
  batch: number;
  store: string;
  predicted_peak_bytes: number;
  predicted_process_peak_bytes: number;
  fits: boolean;
  why: string;
}

export interface Plan {
  method: MethodName;
  batch: number;
  store: ConcreteStore;
  /** The ledger's predicted peak (tensors). */
  predicted_peak_bytes: number;
  /** Prediction by ledger category at the peak. */
  by_category: ByCategory;
  /** The process's predicted peak resident bytes: what must fit the budget. */
  predicted_process_peak_bytes: number;
  process_terms: Estimate["process_terms"];
  /** Device memory the tensors take on a GPU (not in the process), else null. */
  predicted_device_peak_bytes: number | null;
  budget_bytes: number;
  /** The budget less the margin: what the prediction must fit in. */
  usable_bytes: number;
  margin: number;
  /** False when nothing fits: the plan is then the cheapest configuration, reported so the caller can fail. */
  fits: boolean;
  reason: string;
  alternatives: Alternative[];
}

/** Bytes for a reason line: KiB below 1 MiB, else MiB or GiB with 3 significant digits. */
function human(bytes: number): string {
  const [v, unit] = bytes < 2 ** 20
    ? [bytes / 2 ** 10, "KiB"]
    : bytes < 2 ** 30
    ? [bytes / 2 ** 20, "MiB"]
    : [bytes / 2 ** 30, "GiB"];
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
}

/** Choose a configuration for `request` with `estimator`'s predictions. */
export async function planRun(estimator: Estimator, request: PlanRequest): Promise<Plan> {
  const margin = request.margin ?? DEFAULT_MARGIN;
  const usable = Math.floor(request.budgetBytes * (1 - margin));
  // The estimator caches by configuration: asking twice costs nothing.
  const estimate = (method: MethodName, batch: number, store: StoreName): Promise<Estimate> =>
    estimator.estimate({
      method,
      batch,
      store,
      topBlocks: request.topBlocks,
      extra: request.extra,
      guard: request.guard,
      chunk: request.chunk,
      statsFrom: request.statsFrom,
      bank: request.bank,
    });
  const batchesFor = (method: MethodName): number[] => {
    if (request.batch !== undefined) return [request.batch];
    const cap = request.batchCap ?? BATCH_CAP;
    const list = BATCH_CANDIDATES.filter((b) => b <= cap);
    // A model whose export fixed a batch below every candidate takes exactly that many.
    if (!list.length) return [cap];
    return method === "source" ? [...list, 1] : list;
  };
  const storesOf = (method: MethodName): StoreName[] =>
    request.store !== undefined ? [request.store] : storesFor(method);

  interface Outcome {
    method: MethodName;
    /** The first fitting configuration in preference order. */
    best?: Estimate;
    /** The cheapest configuration tried. */
    smallest?: Estimate;
    /** A larger batch than `best` that did not fit, with its cheapest store. */
    largerBatch?: Estimate;
    /** A more faithful store than `best`'s at its batch, that did not fit. */
    betterStore?: Estimate;
    error?: string;
  }
  const outcomes: Outcome[] = [];
  const methods = [...request.methods];
  if (request.fallback && !methods.includes("bn")) methods.push("bn");
  for (const method of methods) {
    const o: Outcome = { method };
    outcomes.push(o);
    const ruledOut = request.unavailable?.[method];
    if (ruledOut) {
      o.error = ruledOut;
      continue;
    }
    try {
      const stores = storesOf(method);
      for (const batch of batchesFor(method)) {
        const byStore: Estimate[] = [];
        for (const s of stores) byStore.push(await estimate(method, batch, s));
        const low = byStore.reduce((a, e) => (need(e) < need(a) ? e : a));
        if (!o.smallest || need(low) < need(o.smallest)) o.smallest = low;
        const k = byStore.findIndex((e) => need(e) <= usable);
        if (k >= 0) {
          o.best = byStore[k];
          if (k > 0) o.betterStore = byStore[k - 1];
          break;
        }
        o.largerBatch = low;
      }
    } catch (err) {
      o.error = (err as Error).message;
    }
  }
  const chosenAt = outcomes.findIndex((o) => o.best);
  const backward = (m: MethodName) => methodNamed(m).backward;
  const fellBack = chosenAt >= 0 && request.fallback && !backward(outcomes[chosenAt].method) &&
    request.methods.some(backward);
  const cheapest = outcomes.map((o) => o.smallest).filter((e): e is Estimate => e !== undefined)
    .reduce<Estimate | null>((a, e) => (!a || need(e) < need(a) ? e : a), null);
  const e = chosenAt >= 0 ? outcomes[chosenAt].best! : cheapest;
  if (!e) {
    // One method asked for: its own message (it names the fix); several: each one's.
    if (outcomes.length === 1) throw new Error(`${outcomes[0].method}: ${outcomes[0].error}`);
    throw new Error(
      `plan: no method can run on this model (${outcomes.map((o) => `${o.method}: ${o.error}`).join("; ")})`,
    );
  }
  const fits = chosenAt >= 0;
  const alternatives: Alternative[] = [];
  outcomes.forEach((o, i) => {
    if (o.error) {
      alternatives.push({
        method: o.method,
        batch: 0,
        store: "-",
        predicted_peak_bytes: 0,
        predicted_process_peak_bytes: 0,
        fits: false,
        why: o.error,
      });
    } else if (i === chosenAt) {
      if (o.largerBatch) {
        const l = o.largerBatch;
        alternatives.push(
          alt(l, false, `batch ${l.batch} needs ${human(need(l))} even with ${l.store}`),
        );
      }
      if (o.betterStore) {
        const b = o.betterStore;
        alternatives.push(alt(b, false, `${b.store} at batch ${b.batch} needs ${human(need(b))}`));
      }
    } else if (o.best) {
      alternatives.push(alt(o.best, true, `fits, but ${e.method} is preferred`));
    } else if (o.smallest) {
      const sm = o.smallest;
      alternatives.push(
        alt(sm, false, `needs at least ${human(need(sm))} (batch ${sm.batch}, ${sm.store})`),
      );
    }
  });
  const reason = !fits
    ? `nothing fits in ${human(usable)} (${human(request.budgetBytes)} less the ${
      margin * 100
    }% margin); the smallest ` +
      `configuration, ${e.method} at batch ${e.batch} with ${e.store}, needs ${human(need(e))}`
    : `${e.method} at batch ${e.batch} with ${e.store} needs ${human(need(e))} (${
      human(e.peak_bytes)
    } of tensors) of ${human(usable)} usable ` +
      `(${human(request.budgetBytes)} less the ${margin * 100}% margin)` +
      (fellBack ? "; no method with a backward pass fits, so BN adaptation (forward only)" : "");
  return {
    method: e.method,
    batch: e.batch,
    store: e.store,
    predicted_peak_bytes: e.peak_bytes,
    by_category: e.at_peak,
    predicted_process_peak_bytes: e.process_peak_bytes,
    process_terms: e.process_terms,
    predicted_device_peak_bytes: e.device_peak_bytes,
    budget_bytes: request.budgetBytes,
    usable_bytes: usable,
    margin,
    fits,
    reason,
    alternatives,
  };
}

/** What must fit the budget: the process's peak (the device's, for tensors on a GPU, when larger). */
export function need(e: Estimate): number {
  return Math.max(e.process_peak_bytes, e.device_peak_bytes ?? 0);
}

function alt(e: Estimate, fits: boolean, why: string): Alternative {
  return {
    method: e.method,
    batch: e.batch,
    store: e.store,
    predicted_peak_bytes: e.peak_bytes,
    predicted_process_peak_bytes: e.process_peak_bytes,
    fits,
    why,
  };
}
