/**
 * Adaptation decoupled from prediction: how every adapting method meets a camera.
 *
 * Each chunk of frames (1 from a camera, 64 from a file) is first answered by the method's current model with
 * its target statistics (robust BN, tta.ts: never the statistics of the chunk itself), then offered to a
 * bounded memory bank (memory_bank.ts: category-balanced by pseudo-label, timely, certain). Every `every` new
 * frames the method learns one step on the bank: a class-balanced minibatch whatever order the camera shows
 * classes in, and the same steps whatever the chunk size. The target statistics follow either the bank (the
 * learning forward moves them; they follow the domain) or the stream (the last `every` frames move them; they
 * follow the current class) — docs/streaming.md measures both.
 *
 * The collapse guard lives here too (collapse.ts): it watches the answers over a window of frames and the
 * method's own predictions on its class-balanced bank, and restores the last healthy state, not the source.
 */
import { noGrad } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor.ts";
import { CollapseGuard } from "./collapse.ts";
import { MemoryBank } from "./memory_bank.ts";
import type { AdaptMethodName } from "./registry.ts";
import type { StreamSettings } from "./descriptor.ts";
import {
  learnMode,
  logitStats,
  predictMode,
  setStatsMomentum,
  type StepResult,
  type TtaMethod,
} from "./tta.ts";

/** The target statistics' settled momentum (RoTTA: 0.05, for streams of tens of thousands of frames). */
export const DEFAULT_MOMENTUM = 0.1;

/** What one learning step on the bank did. */
export interface LearnResult {
  updated: boolean;
  /** Bank frames that took part (after filters). */
  used: number;
  /** The method restored its source state itself (SAR's reset). */
  resetReason?: string;
  /** The learning model's predictions on the minibatch (the collapse guard's view of the bank). */
  predictions?: Int32Array;
  /** Mean softmax entropy of the learning forward (TENT's loss before its step). */
  entropy?: number;
}

/** A method's own part: how it answers, and how it learns from a minibatch of the bank. */
export interface StreamCore {
  readonly name: AdaptMethodName;
  readonly model: Module;
  /** Logits of x [n, ...] from the answering model with target statistics; records no graph. */
  predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }>;
  /** One step on a minibatch of the bank (ages in units of its capacity); absent for methods that learn nothing. */
  learn?(x: Tensor, ages: Float64Array): Promise<LearnResult>;
  /**
   * Move the target statistics toward x's without learning (statistics from the stream, or from the bank for
   * a method that learns nothing). Absent: one train-mode forward of the model.
   */
  statisticsPass?(x: Tensor): Promise<void>;
  trainables(): Tensor[];
  /** Back to the source state and a fresh optimizer. */
  reset(): void;
  state(): Promise<Record<string, Float32Array>>;
  loadState(state: Record<string, Float32Array>): void;
  dispose(): void;
}

export type StatsSource = "bank" | "stream";

export interface StreamingOptions {
  /** Frames the bank keeps: the minibatch of every learning step (RoTTA: 64). */
  capacity: number;
  /** Learn after this many new frames (default: capacity). */
  every?: number;
  /** Where the target statistics come from (default "bank"). */
  statsFrom?: StatsSource;
  /** Watch for collapse and restore the last healthy state (default true). */
  collapseGuard?: boolean;
  /** The bank takes every frame while it has room (MemoryBank fillFirst; default true). */
  fillFirst?: boolean;
  /** How far each learning step moves the target statistics (default 0.1). */
  momentum?: number;
  /**
   * Warm-up (default off): the n-th learning step after a reset moves the statistics by max(momentum, 1/n),
   * the first replacing the source statistics with the bank's. Adaptation starts at once on a shuffled
   * stream; on a camera that shows one class for a while the first banks hold that class alone and their
   * statistics move every answer away from the source's (10 points worse than the unadapted model on mild
   * corruptions in docs/streaming.md), so it is opt-in.
   */
  warmup?: boolean;
}

export class StreamingMethod implements TtaMethod {
  readonly name: AdaptMethodName;
  readonly model: Module;
  readonly bank: MemoryBank;
  every: number;
  readonly statsFrom: StatsSource;
  readonly momentum: number;
  readonly warmup: boolean;
  #pending = 0;
  /** Learning steps since the last reset (the warm-up schedule). */
  #steps = 0;
  /** The last `every` frames, for stream statistics. */
  #recent: MemoryBank | null;
  #guard: CollapseGuard | null;

  constructor(readonly core: StreamCore, options: StreamingOptions) {
    this.name = core.name;
    this.model = core.model;
    this.bank = new MemoryBank({ capacity: options.capacity, fillFirst: options.fillFirst });
    this.every = options.every ?? options.capacity;
    if (!(Number.isInteger(this.every) && this.every >= 1)) {
      throw new Error(`streaming: every must be a positive integer, got ${this.every}`);
    }
    this.statsFrom = options.statsFrom ?? "bank";
    this.momentum = options.momentum ?? DEFAULT_MOMENTUM;
    this.warmup = options.warmup ?? false;
    // A FIFO of the last `every` frames: a bank without class balance whose oldest item always goes first.
    this.#recent = this.statsFrom === "stream" ? new MemoryBank({ capacity: this.every, lambdaU: 0 }) : null;
    this.#guard = options.collapseGuard === false ? null : new CollapseGuard();
  }

  async step(x: Tensor): Promise<StepResult> {
    const { logits, classes } = await this.core.predict(x);
    const stats = logitStats(logits, classes);
    this.bank.add(x, stats.predictions, stats.entropies, classes);
    this.#recent?.add(x, new Int32Array(x.shape[0]), new Float64Array(x.shape[0]), 1);
    this.#pending += x.shape[0];
    let updated = false, used = 0, learned = 0;
    let resetReason: string | undefined, resetCause: StepResult["resetCause"];
    while (this.#pending >= this.every) {
      this.#pending -= this.every;
      this.#steps++;
      setStatsMomentum(this.model, this.warmup ? Math.max(this.momentum, 1 / this.#steps) : this.momentum);
      if (this.#recent) await this.#streamStatistics();
      const r = await this.#learn();
      if (!r) continue;
      learned++;
      updated ||= r.updated;
      used += r.used;
      if (r.resetReason) {
        this.#reset();
        resetReason = r.resetReason;
        resetCause = "method";
        break;
      }
      const collapse = await this.#guard?.afterLearn(this, r, this.bank.labels(), classes);
      if (collapse) {
        resetReason = collapse;
        resetCause = "collapse";
        break;
      }
    }
    if (!resetReason && this.#guard) {
      const collapse = await this.#guard.afterAnswers(this, stats.predictions, classes);
      if (collapse) {
        resetReason = collapse;
        resetCause = "collapse";
      }
    }
    return {
      logits,
      classes,
      entropy: stats.meanEntropy,
      updated,
      used,
      reset: resetReason !== undefined,
      ...(resetReason ? { resetReason, resetCause } : {}),
      learned,
      bank: { size: this.bank.size, capacity: this.bank.capacity, bytes: this.bank.bytes },
    };
  }

  /** One learning step on the bank (null when the method learns nothing). */
  async #learn(): Promise<LearnResult | null> {
    const batch = this.bank.batch();
    if (!batch) return null;
    try {
      if (this.core.learn) return await this.core.learn(batch, this.bank.ages());
      // Nothing to learn (BN adaptation): the forward over the bank moves the target statistics.
      if (this.statsFrom === "bank") await this.#statisticsPass(batch);
      return { updated: false, used: 0 };
    } finally {
      batch.dispose();
    }
  }

  /** The target statistics follow the last `every` frames (statsFrom "stream"). */
  async #streamStatistics(): Promise<void> {
    const recent = this.#recent!.batch();
    if (!recent) return;
    try {
      await this.#statisticsPass(recent);
    } finally {
      recent.dispose();
    }
  }

  /** Moves the target statistics toward x's (the core's own pass, or one train-mode forward). */
  async #statisticsPass(x: Tensor): Promise<void> {
    if (this.core.statisticsPass) return await this.core.statisticsPass(x);
    await statisticsForward(this.model, x);
  }

  trainables(): Tensor[] {
    return this.core.trainables();
  }

  /** Learn on minibatches of n frames (out-of-memory back-off): a smaller bank, learning as often per frame. */
  setLearningBatch(n: number): void {
    if (n >= this.bank.capacity) return;
    this.every = Math.max(1, Math.round(this.every * n / this.bank.capacity));
    this.bank.shrink(n);
  }

  /**
   * The statistics loaded from a domain's stored state are settled: the next learning steps move them by
   * `momentum`, not by the 1/n that replaces the source statistics after a reset (the adapter bank's return).
   */
  settle(): void {
    // From here 1/n <= momentum. A momentum of 0 (statistics kept as stored) gets a finite count all the same:
    // the count is saved in checkpoints, which refuse non-finite values.
    this.#steps = this.momentum > 0 ? Math.ceil(1 / this.momentum) : 2 ** 24;
  }

  /** Back to the source state; the bank forgets its frames (they were labelled by the state being left). */
  reset(): void {
    this.#reset();
    this.#guard?.forget();
  }

  #reset(): void {
    this.core.reset();
    this.bank.clear();
    this.#recent?.clear();
    this.#pending = 0;
    this.#steps = 0;
  }

  /** The core's state, the bank's frames and bookkeeping, and the frames since the last step: a restart from
   * a checkpoint goes on exactly as the uninterrupted stream. */
  async state(): Promise<Record<string, Float32Array>> {
    return {
      ...await this.core.state(),
      ...await this.bank.state("bank"),
      ...(this.#recent ? await this.#recent.state("recent") : {}),
      "stream.pending": Float32Array.of(this.#pending),
      "stream.steps": Float32Array.of(this.#steps),
    };
  }

  loadState(state: Record<string, Float32Array>): void {
    const core: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(state)) {
      if (!isVariableStateKey(k)) core[k] = v;
    }
    this.core.loadState(core);
    const backend = this.core.trainables()[0]?.backend ?? this.model.namedState()[0][1].backend;
    this.bank.loadState("bank", state, backend);
    this.#recent?.loadState("recent", state, backend);
    this.#pending = state["stream.pending"]?.[0] ?? 0;
    this.#steps = state["stream.steps"]?.[0] ?? 0;
  }

  /** The core's state alone (the collapse guard's snapshots). */
  coreState(): Promise<Record<string, Float32Array>> {
    return this.core.state();
  }

  /** The collapse guard's restore: an earlier state of the core; the bank, labelled by the collapsing state, is emptied. */
  restoreHealthy(state: Record<string, Float32Array>): void {
    this.core.loadState(state);
    this.bank.clear();
    this.#pending = 0;
  }

  dispose(): void {
    this.core.dispose();
    this.bank.dispose();
    this.#recent?.dispose();
  }
}

/**
 * State entries whose size depends on the stream so far (the memory bank's frames and bookkeeping, the adapter
 * bank's slots): a checkpoint's shape check skips them.
 */
export function isVariableStateKey(key: string): boolean {
  return /^(bank|recent|stream|slots)\./.test(key);
}

/** A forward in train mode that only moves the BN running statistics toward x's. */
export async function statisticsForward(model: Module, x: Tensor): Promise<void> {
  learnMode(model, true);
  try {
    const out = noGrad(() => model.call(x));
    out.dispose();
    await x.backend.sync();
  } finally {
    predictMode(model);
  }
}

/** Logits of x from `model` in predict mode (target statistics), without recording a graph. */
export async function predictLogits(
  model: Module,
  x: Tensor,
): Promise<{ logits: Float32Array; classes: number }> {
  predictMode(model);
  const out = noGrad(() => model.call(x));
  try {
    const host = await out.data();
    return { logits: host instanceof Float32Array ? host : Float32Array.from(host), classes: out.shape[1] };
  } finally {
    out.dispose();
  }
}

/** Builds the method around a core and its stream options (the adapter bank, src/methods/bank/). */
export type StreamWrap = (core: StreamCore, options: StreamingOptions) => TtaMethod;

/**
 * A core wrapped for the stream with the run's settings (MethodOptions.stream; RoTTA's defaults), by
 * MethodOptions.wrap when there is one.
 */
export function streamed(core: StreamCore, o: { stream?: StreamSettings; wrap?: StreamWrap }): TtaMethod {
  const s = o.stream ?? {};
  const capacity = s.capacity ?? 64;
  const options: StreamingOptions = {
    capacity,
    every: s.every ?? capacity,
    statsFrom: s.statsFrom ?? "bank",
    collapseGuard: s.collapseGuard,
    fillFirst: s.fillFirst,
    momentum: s.momentum,
    warmup: s.warmup,
  };
  return o.wrap ? o.wrap(core, options) : new StreamingMethod(core, options);
}
