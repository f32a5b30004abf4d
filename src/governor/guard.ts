/**
 * The runtime guard: a step that runs out of device memory is undone and retried on the same images with a
 * smaller configuration, and the stream goes on with it.
 *
 * On OutOfMemoryError (src/backend/backend.ts) from any point of a step, the guard
 * 1. rolls back what the failed step allocated (GuardedBackend, guarded_backend.ts) after dropping the
 *    method's partial gradients;
 * 2. puts the trainable parameters back from a device-side copy taken before the step (SAR perturbs them
 *    between its two passes; an optimizer may have updated some of them), so no adapted state is lost and
 *    none of the failed step's partial work leaks into it;
 * 3. backs off: a cheaper store first (fp32 -> fp16 -> int8 -> int4, the planner ranks batch above store
 *    fidelity), then half the batch — the learning minibatch of a streaming method (its memory bank), and
 *    the largest chunk answered at once — skipping steps the estimator predicts would not lower the peak;
 * 4. retries the same images, split into chunks of the new batch, and keeps that configuration after. (A
 *    streaming method may then see the retried frames twice in its bank: they were offered before the
 *    failure.)
 * Each back-off is recorded and reported to `onBackoff` (the stream loop's observers).
 */
import { OutOfMemoryError } from "../backend/backend.ts";
import { type ConcreteStore, withStore } from "../memory/policy.ts";
import type { StepResult, TtaMethod } from "../methods/tta.ts";
import { copyInto, copyRows } from "../ops/copy.ts";
import { keep, Tensor } from "../tensor.ts";
import type { GuardedBackend } from "./guarded_backend.ts";

/** The codec ladder a back-off walks down. */
const CODEC_LADDER: readonly ConcreteStore[] = ["fp32", "fp16", "int8", "int4"];

export interface Backoff {
  /** Steps completed before the failure. */
  step: number;
  from: { batch: number; store: ConcreteStore };
  to: { batch: number; store: ConcreteStore };
  /** What the failing allocation asked for, and the ledger's live bytes then. */
  requested_bytes: number | null;
  live_bytes: number | null;
  reason: string;
}

export interface GuardOptions {
  batch: number;
  store: ConcreteStore;
  /** Whether the method saves anything for backward (a codec step changes nothing otherwise). */
  backward: boolean;
  /** Smallest batch to halve to (1). */
  minBatch?: number;
  /** The predicted peak of a configuration (the estimator's, with the guard): back-offs it says would not
   * lower the peak are skipped. */
  peakOf?: (batch: number, store: ConcreteStore) => Promise<number>;
  /** Called after the failed step was undone and before the retry (observers; tests inspect the state). */
  onBackoff?: (b: Backoff) => void | Promise<void>;
}

/** One StepResult for the chunks a batch was split into. */
function merge(parts: StepResult[]): StepResult {
  if (parts.length === 1) return parts[0];
  const n = (r: StepResult) => r.logits.length / r.classes;
  const total = parts.reduce((s, r) => s + n(r), 0);
  const logits = new Float32Array(parts.reduce((s, r) => s + r.logits.length, 0));
  let o = 0;
  for (const r of parts) {
    logits.set(r.logits, o);
    o += r.logits.length;
  }
  const reset = parts.find((r) => r.reset);
  return {
    logits,
    classes: parts[0].classes,
    entropy: parts.reduce((s, r) => s + r.entropy * n(r), 0) / total,
    updated: parts.some((r) => r.updated),
    used: parts.reduce((s, r) => s + r.used, 0),
    reset: reset !== undefined,
    ...(reset?.resetReason ? { resetReason: reset.resetReason, resetCause: reset.resetCause } : {}),
    learned: parts.reduce((s, r) => s + (r.learned ?? 0), 0),
    ...(parts.at(-1)!.bank ? { bank: parts.at(-1)!.bank } : {}),
  };
}

export class RuntimeGuard {
  batch: number;
  store: ConcreteStore;
  readonly backoffs: Backoff[] = [];
  #steps = 0;
  #snapshot = new Map<Tensor, Tensor>();

  constructor(readonly backend: GuardedBackend, readonly options: GuardOptions) {
    this.batch = options.batch;
    this.store = options.store;
  }

  /** method.step(x) in chunks of the current batch, backing off on OutOfMemoryError. */
  async run(method: TtaMethod, x: Tensor): Promise<StepResult> {
    const n = x.shape[0];
    if (n <= this.batch) return await this.#attempt(method, x);
    const parts: StepResult[] = [];
    for (let start = 0; start < n; start += this.batch) {
      const chunk = copyRows(x, start, Math.min(this.batch, n - start));
      try {
        parts.push(await this.#attempt(method, chunk));
      } finally {
        chunk.dispose();
      }
    }
    return merge(parts);
  }

  /** Device copies of the trainable tensors, refreshed before each step (their bytes count as "optimizer"). */
  #save(method: TtaMethod): void {
    for (const p of method.trainables()) {
      let c = this.#snapshot.get(p);
      if (!c) {
        c = keep(Tensor.empty(p.backend, p.shape, { category: "optimizer" }));
        this.#snapshot.set(p, c);
      }
      copyInto(p, c);
    }
  }

  async #attempt(method: TtaMethod, x: Tensor): Promise<StepResult> {
    this.#save(method);
    this.backend.begin();
    let result: StepResult;
    try {
      result = await withStore(this.store, () => method.step(x));
    } catch (e) {
      if (!(e instanceof OutOfMemoryError)) {
        this.backend.commit();
        throw e;
      }
      for (const p of method.trainables()) {
        p.grad?.dispose();
        p.grad = null;
      }
      const failure = this.backend.rollback();
      for (const [p, c] of this.#snapshot) copyInto(c, p);
      const next = await this.#next(x.shape[0]);
      if (!next) throw e;
      const b: Backoff = {
        step: this.#steps,
        from: { batch: this.batch, store: this.store },
        to: next,
        requested_bytes: failure?.requestedBytes ?? null,
        live_bytes: failure?.liveBytes ?? null,
        reason: e.message,
      };
      this.backoffs.push(b);
      this.batch = next.batch;
      this.store = next.store;
      method.setLearningBatch?.(next.batch);
      await this.options.onBackoff?.(b);
      return await this.run(method, x);
    }
    this.backend.commit();
    this.#steps++;
    return result;
  }

  /** The next configuration down the ladder, or null at the bottom. */
  async #next(inputRows: number): Promise<{ batch: number; store: ConcreteStore } | null> {
    const { peakOf, backward } = this.options;
    const peak = async (batch: number, store: ConcreteStore) => peakOf ? await peakOf(batch, store) : null;
    const current = await peak(Math.min(this.batch, inputRows), this.store);
    const ladder: { batch: number; store: ConcreteStore }[] = [];
    if (backward) {
      // mask keeps floats in fp32 (plus 1-bit step masks): its next step down is int8.
      const from = this.store === "mask" ? CODEC_LADDER.indexOf("fp16") : CODEC_LADDER.indexOf(this.store);
      for (const store of CODEC_LADDER.slice(from + 1)) ladder.push({ batch: this.batch, store });
    }
    for (
      let b = Math.ceil(Math.min(this.batch, inputRows) / 2);
      b >= (this.options.minBatch ?? 1);
      b = Math.ceil(b / 2)
    ) {
      ladder.push({ batch: b, store: backward ? CODEC_LADDER.at(-1)! : this.store });
      if (b === 1) break;
    }
    for (const c of ladder) {
      const p = await peak(Math.min(c.batch, inputRows), c.store);
      if (current === null || p === null || p < current) return c;
    }
    return null;
  }

  /** Free the parameter copies. */
  dispose(): void {
    for (const c of this.#snapshot.values()) c.dispose();
    this.#snapshot.clear();
  }
}
