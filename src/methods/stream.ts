/**
 * The one stream loop of adaptation: `adapt` (run.ts), `train`'s evaluation and `serve` (service/engine.ts)
 * all push chunks of frames through it. A chunk is answered and learned from by the method (through the
 * runtime guard when there is one: out-of-memory back-off; the method's own collapse guard may restore an
 * earlier state), and every event goes to the observers — the progress bar, the JSON report, metrics,
 * checkpoints — so the loop itself knows none of them.
 */
import type { Backoff, RuntimeGuard } from "../governor/guard.ts";
import type { Tensor } from "../tensor.ts";
import { type AdapterChunk, type AdapterEvent, bankOf } from "./bank/mod.ts";
import { type LogitStats, logitStats, type StepResult, type TtaMethod } from "./tta.ts";

/** Where a chunk sits in the stream: adapt's --images segment and the chunk's index in it. */
export interface StreamPosition {
  domain: number;
  chunk: number;
}

export interface ChunkEvent extends StreamPosition {
  rows: number;
  result: StepResult;
  /** Predictions, per-row entropies and probabilities of the chunk (online: before its own update). */
  stats: LogitStats;
  /** Wall time of the step (forward, backward, update) in ms. */
  ms: number;
  /** The adapter bank's slot for the chunk and what it changed (with --bank). */
  adapters?: AdapterChunk;
}

export type ResetCause = "method" | "collapse" | "protocol" | "api";

export interface ResetEvent extends StreamPosition {
  cause: ResetCause;
  reason: string;
}

/** What watches a stream; every hook is optional. */
export interface StreamObserver {
  chunk?(e: ChunkEvent): void;
  reset?(e: ResetEvent): void;
  backoff?(e: Backoff): void;
  /** The adapter bank switched, opened, merged or evicted a slot (before the chunk's answers). */
  adapter?(e: AdapterEvent & StreamPosition): void;
}

export interface StreamOptions {
  /** Runs each step (out-of-memory back-off); without it the method steps directly. */
  guard?: RuntimeGuard;
}

export class AdaptStream {
  readonly #observers: StreamObserver[] = [];
  #position: StreamPosition = { domain: 0, chunk: 0 };

  constructor(readonly method: TtaMethod, readonly options: StreamOptions = {}) {
    if (options.guard) {
      const previous = options.guard.options.onBackoff;
      options.guard.options.onBackoff = async (b) => {
        await previous?.(b);
        for (const o of this.#observers) o.backoff?.(b);
      };
    }
  }

  observe(o: StreamObserver): this {
    this.#observers.push(o);
    return this;
  }

  /** Predict on x [n, c, h, w] and adapt on it; `at` places the chunk in the stream for the observers. */
  async process(x: Tensor, at: StreamPosition = this.#next()): Promise<ChunkEvent> {
    this.#position = at;
    const t0 = performance.now();
    const guard = this.options.guard;
    const result = guard ? await guard.run(this.method, x) : await this.method.step(x);
    const ms = performance.now() - t0;
    const stats = logitStats(result.logits, result.classes);
    const adapters = bankOf(this.method)?.takeChunk();
    for (const e of adapters?.events ?? []) for (const o of this.#observers) o.adapter?.({ ...e, ...at });
    const event: ChunkEvent = {
      ...at,
      rows: x.shape[0],
      result,
      stats,
      ms,
      ...(adapters ? { adapters } : {}),
    };
    for (const o of this.#observers) o.chunk?.(event);
    if (result.reset) this.#emitReset(result.resetCause ?? "method", result.resetReason ?? "method reset");
    return event;
  }

  /** Back to the source state for a reason outside the method (a new domain, the API). */
  reset(cause: Exclude<ResetCause, "method" | "collapse">, reason: string): void {
    this.method.reset();
    this.#emitReset(cause, reason);
  }

  #next(): StreamPosition {
    return { domain: this.#position.domain, chunk: this.#position.chunk + 1 };
  }

  #emitReset(cause: ResetCause, reason: string): void {
    for (const o of this.#observers) o.reset?.({ ...this.#position, cause, reason });
  }
}
