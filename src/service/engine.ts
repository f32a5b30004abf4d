/**
 * The adapted model of a running service: the stream loop (src/methods/stream.ts) that `adapt` runs, fed
 * batch by batch from the Batcher (online predictions, collapse guard, out-of-memory back-off through the
 * runtime guard), plus the counters, metrics and checkpoints that make it a long-running process — observers
 * of the stream's events. Every method here is called from the Batcher, one at a time.
 */
import type { Backend } from "../backend/backend.ts";
import type { RuntimeGuard } from "../governor/guard.ts";
import { AdaptStream, type ResetEvent } from "../methods/stream.ts";
import { isVariableStateKey } from "../methods/streaming.ts";
import type { TtaMethod } from "../methods/tta.ts";
import { Tensor } from "../tensor.ts";
import { type Checkpoint, type CheckpointStore, checkSameTensors, sha256Hex } from "./checkpoint.ts";
import { Histogram, type MetricsText, STEP_BUCKETS } from "./metrics.ts";
import { bankOf } from "../methods/bank/mod.ts";
import { renderBankMetrics } from "../methods/bank/metrics.ts";
import { renderReport } from "../report/html.ts";
import { Timeline } from "../report/timeline.ts";

export interface Prediction {
  class: number;
  probabilities: number[];
  entropy: number;
  /** The adaptation step (1-based, over the state's life) whose forward made this prediction. */
  step: number;
  /** Size of the batch the input was adapted in. */
  batch: number;
}

export interface EngineOptions {
  backend: Backend;
  method: TtaMethod;
  /** [C, H, W] of one input. */
  shape: [number, number, number];
  modelPath: string;
  modelSha256: string;
  store: CheckpointStore | null;
  /** Write a checkpoint every this many steps (0: only on shutdown and reset). */
  checkpointEvery: number;
  /** Runs each step with out-of-memory back-off (its backend must be the model's GuardedBackend). */
  guard?: RuntimeGuard;
  log?: (message: string) => void;
}

export interface CheckpointInfo {
  path: string;
  step: number;
  time: string;
}

/** Counters that continue across restarts (stored in checkpoints). */
const PERSISTED = ["predictions", "updates", "resets"] as const;

export class AdaptEngine {
  readonly method: TtaMethod;
  /** Steps of the adapted state's whole life (continues from the resumed checkpoint). */
  steps = 0;
  /** Lifetime counters, restored from checkpoints. */
  total = { predictions: 0, updates: 0, resets: 0 };
  /** Counters since this process started (Prometheus counters). */
  process = { steps: 0, predictions: 0, updates: 0, resets: 0, skipped: 0, errors: 0, checkpoints: 0 };
  resetReasons = new Map<string, number>();
  lastEntropy = NaN;
  entropySum = 0;
  readonly stepLatency = new Histogram(STEP_BUCKETS);
  lastCheckpoint: CheckpointInfo | null = null;
  resumedFrom: CheckpointInfo | null = null;
  readonly started = new Date();
  readonly stream: AdaptStream;
  /** The stream since this process started, for GET /v1/report (bounded: its resolution halves). */
  readonly timeline: Timeline;
  #log: (m: string) => void;

  constructor(readonly options: EngineOptions) {
    this.method = options.method;
    this.#log = options.log ?? ((m) => console.error(`edgetrain serve: ${m}`));
    this.stream = new AdaptStream(options.method, { guard: options.guard }).observe({
      chunk: (e) => {
        this.stepLatency.observe(e.ms / 1000);
        this.steps++;
        this.process.steps++;
        if (e.result.updated) {
          this.total.updates++;
          this.process.updates++;
        }
        this.lastEntropy = e.result.entropy;
        this.entropySum += e.result.entropy * e.rows;
        this.total.predictions += e.rows;
        this.process.predictions += e.rows;
      },
      reset: (e) => this.#countReset(e),
      backoff: (b) =>
        this.#log(
          `out of memory: batch ${b.from.batch} ${b.from.store} -> ${b.to.batch} ${b.to.store} (${b.reason})`,
        ),
      adapter: (e) =>
        this.#log(
          `adapter bank: ${e.action} ${e.from >= 0 ? `slot ${e.from}` : ""}${
            e.to >= 0 ? ` -> slot ${e.to}` : ""
          }` +
            (Number.isFinite(e.distance) ? ` (distance ${e.distance.toPrecision(3)})` : ""),
        ),
    });
    this.timeline = new Timeline(options.backend.ledger);
    this.stream.observe(this.timeline.observer());
  }

  /** Loads the newest valid checkpoint of the store (bad ones are set aside); null when starting fresh. */
  async resume(): Promise<CheckpointInfo | null> {
    const store = this.options.store;
    if (!store) return null;
    // The bank's entries grow with the stream: only the fixed-size state must match the checkpoint's.
    const current = Object.fromEntries(
      Object.entries(await this.method.state()).filter(([k]) => !isVariableStateKey(k)),
    );
    const accept = (ck: Checkpoint) => {
      checkSameTensors(ck, current);
      try {
        this.method.loadState(ck.state);
      } catch (e) {
        this.method.reset();
        throw e;
      }
    };
    const got = await store.resume(accept);
    if (!got) return null;
    this.steps = got.header.step;
    for (const k of PERSISTED) this.total[k] = Number(got.header.counters?.[k] ?? 0);
    this.resumedFrom = { path: got.path, step: got.header.step, time: got.header.created };
    this.lastCheckpoint = this.resumedFrom;
    return this.resumedFrom;
  }

  /** One adaptation step on `xs` (each C*H*W floats); returns each input's online prediction. */
  async step(xs: Float32Array[]): Promise<Prediction[]> {
    const [c, h, w] = this.options.shape;
    const per = c * h * w;
    const x = new Float32Array(xs.length * per);
    xs.forEach((v, i) => x.set(v, i * per));
    const input = Tensor.from(this.options.backend, x, [xs.length, c, h, w]);
    let stats;
    try {
      ({ stats } = await this.stream.process(input, { domain: 0, chunk: this.steps }));
    } catch (e) {
      this.process.errors++;
      throw e;
    } finally {
      input.dispose();
    }
    const k = stats.probs.length / xs.length;
    return xs.map((_, i): Prediction => ({
      class: stats.predictions[i],
      probabilities: Array.from(stats.probs.subarray(i * k, (i + 1) * k)),
      entropy: stats.entropies[i],
      step: this.steps,
      batch: xs.length,
    }));
  }

  /** Whether the step just taken is one to checkpoint after (the caller schedules it after the replies). */
  checkpointDue(): boolean {
    const every = this.options.checkpointEvery;
    return this.options.store !== null && every > 0 && this.steps % every === 0 &&
      this.lastCheckpoint?.step !== this.steps;
  }

  #countReset(e: ResetEvent): void {
    this.total.resets++;
    this.process.resets++;
    const key = e.cause === "method" ? e.reason.split(/[:(]/)[0].trim() || "reset" : e.cause;
    this.resetReasons.set(key, (this.resetReasons.get(key) ?? 0) + 1);
    if (e.cause === "collapse") this.#log(e.reason);
  }

  /** Back to the source state (POST /v1/reset); checkpointed so that a restart does not undo it. */
  async reset(): Promise<void> {
    this.stream.reset("api", "POST /v1/reset");
    await this.checkpoint("reset");
  }

  async checkpoint(why: string): Promise<CheckpointInfo | null> {
    const store = this.options.store;
    if (!store) return null;
    const t0 = performance.now();
    const path = await store.write(this.steps, await this.method.state(), { ...this.total });
    this.process.checkpoints++;
    this.lastCheckpoint = { path, step: this.steps, time: new Date().toISOString() };
    if (why !== "periodic") {
      this.#log(`checkpoint at step ${this.steps} (${why}) in ${(performance.now() - t0).toFixed(0)} ms`);
    }
    return this.lastCheckpoint;
  }

  /** SHA-256 over the method's state (model, optimizer, counters): proves whether the state changed. */
  async digest(): Promise<string> {
    const state = await this.method.state();
    const parts: Uint8Array[] = [];
    for (const k of Object.keys(state).sort()) {
      parts.push(
        new TextEncoder().encode(k),
        new Uint8Array(state[k].buffer, state[k].byteOffset, state[k].byteLength),
      );
    }
    const all = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return await sha256Hex(all);
  }

  /** What GET /v1/state returns. */
  describe(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      method: this.method.name,
      model: this.options.modelPath,
      model_sha256: this.options.modelSha256,
      backend: this.options.backend.name,
      input_shape: this.options.shape,
      steps: this.steps,
      predictions: this.total.predictions,
      updates: this.total.updates,
      resets: this.total.resets,
      skipped: this.process.skipped,
      mean_entropy: this.process.predictions ? this.entropySum / this.process.predictions : null,
      last_entropy: Number.isNaN(this.lastEntropy) ? null : this.lastEntropy,
      last_checkpoint: this.lastCheckpoint,
      resumed_from: this.resumedFrom,
      started: this.started.toISOString(),
      uptime_s: (Date.now() - this.started.getTime()) / 1000,
      ...this.#adapters(),
      ...extra,
    };
  }

  /** The adapter bank for GET /v1/state: its counters and every open slot. */
  #adapters(): Record<string, unknown> {
    const bank = bankOf(this.method);
    return bank ? { adapters: { ...bank.summary(), slot_list: bank.slotViews() } } : {};
  }

  /** GET /v1/report: the stream since this process started, as one self-contained page. */
  report(): string {
    const bank = bankOf(this.method);
    const t = this.timeline.data();
    const s = bank?.summary();
    return renderReport({
      title: `edgetrain serve: ${this.method.name}${bank ? " + adapter bank" : ""}`,
      facts: [
        ["model", this.options.modelPath],
        ["backend", this.options.backend.name],
        ["since", this.started.toISOString()],
        ["frames", `${t.frames} since start (${this.total.predictions} over the state's life)`],
      ],
      cards: [
        [
          "mean entropy (nats)",
          this.process.predictions ? (this.entropySum / this.process.predictions).toFixed(3) : "–",
        ],
        ["adaptation steps of the state", String(this.steps)],
        ...(s
          ? [
            ["adapter slots open", `${s.open} / ${s.slots}`] as [string, string],
            [
              "switches · opened · merged · evicted",
              `${s.switches} · ${s.opened} · ${s.merged} · ${s.evicted}`,
            ] as [
              string,
              string,
            ],
          ]
          : []),
        ["peak device memory (ledger)", `${(t.peakBytes / 2 ** 20).toFixed(2)} MiB`],
      ],
      threshold: bank?.selector.threshold ?? null,
      generated: `edgetrain serve, ${
        new Date().toISOString()
      }; no labels reach a service, so there is no error panel`,
    }, t);
  }

  render(text: MetricsText): MetricsText {
    const snap = this.options.backend.ledger.snapshot();
    const out = text
      .counter(
        "edgetrain_predictions_total",
        "Inputs predicted (and adapted on) since start.",
        this.process.predictions,
      )
      .counter(
        "edgetrain_adaptation_steps_total",
        "Adaptation steps (batches) since start.",
        this.process.steps,
      )
      .counter("edgetrain_updates_total", "Steps that updated parameters since start.", this.process.updates)
      .gauge(
        "edgetrain_step",
        "Steps of the adapted state, continued across restarts from checkpoints.",
        this.steps,
      )
      .gauge(
        "edgetrain_mean_entropy",
        "Mean softmax entropy of predictions since start (NaN before the first).",
        this.process.predictions ? this.entropySum / this.process.predictions : NaN,
      )
      .gauge("edgetrain_last_batch_entropy", "Mean softmax entropy of the last batch.", this.lastEntropy)
      .counter(
        "edgetrain_resets_total",
        "Returns to the source state since start, by reason.",
        [...this.resetReasons].map(([reason, v]) => [{ reason }, v]),
      )
      .counter(
        "edgetrain_skipped_inputs_total",
        "Inputs refused (undecodable, wrong size, NaN) since start.",
        this.process.skipped,
      )
      .counter(
        "edgetrain_step_errors_total",
        "Adaptation steps that failed since start.",
        this.process.errors,
      )
      .counter("edgetrain_checkpoints_total", "Checkpoints written since start.", this.process.checkpoints)
      .gauge(
        "edgetrain_last_checkpoint_step",
        "Step of the newest checkpoint (-1: none).",
        this.lastCheckpoint?.step ?? -1,
      )
      .gauge(
        "edgetrain_ledger_bytes",
        "Live device memory by ledger category.",
        Object.entries(snap.live).map(([category, v]) => [{ category }, v]),
      )
      .gauge("edgetrain_ledger_peak_bytes", "Peak device memory since start (ledger).", snap.peakBytes)
      .histogram(
        "edgetrain_step_seconds",
        "Latency of one adaptation step (forward, backward, update).",
        this.stepLatency,
      );
    const bank = bankOf(this.method);
    return bank ? renderBankMetrics(out, bank) : out;
  }
}
