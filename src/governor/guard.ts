/**
 * The runtime guard: a step that runs out of device memory is undone and retried on the same images with a
 * smaller configuration, and the run goes on with it.
 *
 * On OutOfMemoryError (src/backend/backend.ts) from any point of a step, the guard
 * 1. frees what the failed step allocated: every storage born during it in the transient categories
 *    (activations, saved, workspace, grads; a partial graph holds its saved tensors through nodes nobody can
 *    reach any more) after dropping the parameters' partial gradients; optimizer state created lazily in the
 *    step is kept;
 * 2. puts the trainable parameters back from a device-side copy taken before the step (SAR perturbs them
 *    between its two passes; an optimizer may have updated some of them), so no adapted state is lost and
 *    none of the failed step's partial work leaks into it;
 * 3. backs off: a cheaper store first (fp32 -> fp16 -> int8 -> int4, the planner ranks batch above store
 *    fidelity), then half the batch, skipping steps the estimator predicts would not lower the peak;
 * 4. retries the same images, split into chunks of the new batch, and keeps that configuration after.
 * Each back-off is recorded (`backoffs` in the adapt report).
 *
 * `withMemoryLimit` gives any backend a soft cap that throws OutOfMemoryError like a full device: tests and
 * the governor table use it to simulate small devices on the CPU backend.
 */
import { type Backend, OutOfMemoryError, type Storage } from "../backend/backend.ts";
import type { Category } from "../memory/ledger.ts";
import { type StoreName, withStore } from "../memory/policy.ts";
import type { Module } from "../nn/module.ts";
import type { StepResult, TtaMethod } from "../methods/tta.ts";
import { keep, Tensor } from "../tensor.ts";
import type { Estimator } from "./estimate.ts";
import type { GovernedMethod } from "./config.ts";

type Store = Exclude<StoreName, "auto">;

/** The codec ladder a back-off walks down. */
const CODEC_LADDER: readonly Store[] = ["fp32", "fp16", "int8", "int4"];
const TRANSIENT: readonly Category[] = ["activations", "saved", "workspace", "grads"];

export interface Backoff {
  /** Steps completed before the failure. */
  step: number;
  from: { batch: number; store: Store };
  to: { batch: number; store: Store };
  /** What the failing allocation asked for, and the ledger's live bytes then. */
  requested_bytes: number | null;
  live_bytes: number | null;
  reason: string;
}

export interface GuardOptions {
  batch: number;
  store: Store;
  /** Whether the method saves anything for backward (a codec step changes nothing otherwise). */
  backward: boolean;
  /** Smallest batch to halve to (1). */
  minBatch?: number;
  /** Skips back-offs the estimator predicts would not lower the peak. */
  estimator?: Estimator;
  method?: GovernedMethod;
  /** Called after the failed step was undone and before the retry (tests inspect the state here). */
  onBackoff?: (b: Backoff) => void | Promise<void>;
}

/** A backend with a soft memory cap (see withMemoryLimit). */
export type LimitedBackend = Backend & {
  /** Live bytes past which an allocation throws OutOfMemoryError. */
  limitBytes: number;
  /** When set to n, the n-th allocation from now throws OutOfMemoryError once (an OOM at a chosen point). */
  failAfterAllocs: number | undefined;
  /** Allocations so far. */
  readonly allocations: number;
};

/** A soft memory cap over `backend`: an allocation past `limitBytes` live bytes throws OutOfMemoryError. */
export function withMemoryLimit(backend: Backend, limitBytes: number): LimitedBackend {
  const state: {
    limitBytes: number;
    failAfterAllocs?: number;
    allocations: number;
    alloc?: Backend["alloc"];
  } = {
    limitBytes,
    allocations: 0,
  };
  const capped: Backend["alloc"] = (length, options) => {
    const bytes = length * 4;
    const forced = state.failAfterAllocs !== undefined && --state.failAfterAllocs <= 0;
    if (forced) state.failAfterAllocs = undefined;
    if (forced || backend.ledger.liveBytes + bytes > state.limitBytes) {
      throw new OutOfMemoryError(
        `alloc(): ${bytes} bytes of ${options.category} would exceed the memory limit of ${state.limitBytes} ` +
          `bytes (${backend.ledger.liveBytes} live${forced ? ", simulated" : ""})`,
        bytes,
      );
    }
    state.allocations++;
    return backend.alloc(length, options);
  };
  // "alloc" may be replaced on the proxy (the guard's allocation tracker): the replacement lives here, so
  // it wraps the capped alloc instead of calling itself through the target.
  return new Proxy(backend, {
    get(target, prop) {
      if (prop === "limitBytes" || prop === "failAfterAllocs" || prop === "allocations") return state[prop];
      if (prop === "alloc") return state.alloc ?? capped;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
    set(target, prop, value) {
      if (prop === "limitBytes" || prop === "failAfterAllocs") state[prop] = value;
      else if (prop === "alloc") state.alloc = value;
      else return Reflect.set(target, prop, value, target);
      return true;
    },
    deleteProperty(target, prop) {
      if (prop === "alloc") state.alloc = undefined;
      else return Reflect.deleteProperty(target, prop);
      return true;
    },
  }) as LimitedBackend;
}

/** Everything `backend` allocates until stop(), and the ceiling an OutOfMemoryError revealed. */
function trackAllocations(backend: Backend) {
  const own = Object.prototype.hasOwnProperty.call(backend, "alloc");
  const orig = backend.alloc;
  const born: Storage[] = [];
  const failure = { requested: null as number | null, live: null as number | null };
  backend.alloc = (length, options) => {
    try {
      const s = orig.call(backend, length, options);
      born.push(s);
      return s;
    } catch (e) {
      if (e instanceof OutOfMemoryError) {
        failure.requested = length * 4;
        failure.live = backend.ledger.liveBytes;
      }
      throw e;
    }
  };
  return {
    born,
    failure,
    stop: () => {
      if (own) backend.alloc = orig;
      else delete (backend as { alloc?: unknown }).alloc;
    },
  };
}

/** Parameters whose gradients a failed step may have left: the model's, and EcoTTA's meta networks'. */
function gradientHolders(method: TtaMethod): Tensor[] {
  const meta = (method as { metaNets?: Module[] }).metaNets ?? [];
  return [...method.model.parameters(), ...meta.flatMap((m) => m.parameters())];
}

function copy(b: Backend, from: Tensor, to: Tensor): void {
  b.run("copy", { x: from.storage, out: to.storage, attrs: { n: from.size, srcOffset: 0, dstOffset: 0 } });
}

/** Rows [start, start + n) of x [N, ...] as a new tensor. */
function rows(x: Tensor, start: number, n: number): Tensor {
  const per = x.size / x.shape[0];
  const out = Tensor.empty(x.backend, [n, ...x.shape.slice(1)]);
  x.backend.run("copy", {
    x: x.storage,
    out: out.storage,
    attrs: { n: n * per, srcOffset: start * per, dstOffset: 0 },
  });
  return out;
}

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
    ...(reset?.resetReason ? { resetReason: reset.resetReason } : {}),
  };
}

export class RuntimeGuard {
  batch: number;
  store: Store;
  readonly backoffs: Backoff[] = [];
  #steps = 0;
  #snapshot = new Map<Tensor, Tensor>();

  constructor(readonly options: GuardOptions) {
    this.batch = options.batch;
    this.store = options.store;
  }

  /** method.step(x) in chunks of the current batch, backing off on OutOfMemoryError. */
  async run(method: TtaMethod, x: Tensor): Promise<StepResult> {
    const n = x.shape[0];
    if (n <= this.batch) return await this.#attempt(method, x);
    const parts: StepResult[] = [];
    for (let start = 0; start < n; start += this.batch) {
      const chunk = rows(x, start, Math.min(this.batch, n - start));
      try {
        parts.push(await this.#attempt(method, chunk));
      } finally {
        chunk.dispose();
      }
    }
    return merge(parts);
  }

  /** Device copies of the trainable parameters, refreshed before each step (bytes: their size, "optimizer"). */
  #save(method: TtaMethod): void {
    for (const p of method.model.trainableParameters()) {
      let c = this.#snapshot.get(p);
      if (!c) {
        c = keep(Tensor.empty(p.backend, p.shape, { category: "optimizer" }));
        this.#snapshot.set(p, c);
      }
      copy(p.backend, p, c);
    }
  }

  async #attempt(method: TtaMethod, x: Tensor): Promise<StepResult> {
    const backend = x.backend;
    this.#save(method);
    const tracker = trackAllocations(backend);
    try {
      const result = await withStore(this.store, () => method.step(x));
      this.#steps++;
      return result;
    } catch (e) {
      if (!(e instanceof OutOfMemoryError)) throw e;
      tracker.stop();
      this.#undo(method, backend, tracker.born);
      const next = this.#next(x.shape[0]);
      if (!next) throw e;
      const b: Backoff = {
        step: this.#steps,
        from: { batch: this.batch, store: this.store },
        to: next,
        requested_bytes: tracker.failure.requested,
        live_bytes: tracker.failure.live,
        reason: e.message,
      };
      this.backoffs.push(b);
      this.batch = next.batch;
      this.store = next.store;
      await this.options.onBackoff?.(b);
      return await this.run(method, x);
    } finally {
      tracker.stop();
    }
  }

  #undo(method: TtaMethod, backend: Backend, born: Storage[]): void {
    for (const p of gradientHolders(method)) {
      p.grad?.dispose();
      p.grad = null;
    }
    for (const s of born) {
      if (!TRANSIENT.includes(s.category)) continue;
      while (s.refs > 0) backend.release(s);
    }
    for (const [p, c] of this.#snapshot) copy(backend, c, p);
  }

  /** The next configuration down the ladder, or null at the bottom. */
  #next(inputRows: number): { batch: number; store: Store } | null {
    const { estimator, method, backward } = this.options;
    const peak = (batch: number, store: Store) =>
      estimator && method ? estimator.estimate({ method, batch, store, guard: true }).peak_bytes : null;
    const current = peak(Math.min(this.batch, inputRows), this.store);
    const ladder: { batch: number; store: Store }[] = [];
    if (backward) {
      // mask keeps floats in fp32 (plus 1-bit step masks): its next step down is int8.
      const from = this.store === "mask" ? CODEC_LADDER.indexOf("fp16") : CODEC_LADDER.indexOf(this.store);
      for (const store of CODEC_LADDER.slice(from + 1)) {
        ladder.push({ batch: this.batch, store });
      }
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
      const p = peak(Math.min(c.batch, inputRows), c.store);
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
