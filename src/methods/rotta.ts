/**
 * RoTTA (Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023), the service's default.
 *
 * - Robust BN (tta.ts): every answer normalises with target statistics, an average started from the source's
 *   and moved by 0.1 per learning step (RoTTA: 0.05) — never with the statistics of the frames being answered.
 * - Category-balanced memory with timeliness and uncertainty (memory_bank.ts, CSTU), capacity 64; one
 *   learning step every 64 new frames (streaming.ts).
 * - A mean teacher: the teacher answers and labels; it is the student's BN state kept apart (bn_store.ts; the
 *   backbone is frozen and shared), its affine an EMA of the student's (nu = 0.001), its statistics moved by
 *   its own forward over the bank; the n-th step after a reset moves it by max(nu, 1/(n+1)), the mean
 *   teacher's ramp-up. The student learns from a strong augmentation of the bank: the teacher's
 *   soft labels as cross-entropy targets, each sample weighted by its timeliness exp(-a) / (1 + exp(-a)) for
 *   its age a in units of the capacity (eq. 6-7).
 * - Adam, lr 1e-3, betas (0.9, 0.999), on the BN affine parameters.
 *
 * Deviations: the learning forward normalises with the minibatch's own statistics and then moves the target
 * statistics (RoTTA normalises with the already-moved average); the strong augmentation is intensity-only
 * (contrast, brightness, noise: augment.ts) where RoTTA also flips, crops and blurs.
 */
import { backward, noGrad } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor.ts";
import { Rng } from "../random.ts";
import { augment } from "./augment.ts";
import {
  type BackpropOptions,
  DEFAULT_STATS,
  makeOptimizer,
  type OptimizerConfig,
  optimizerFrom,
  type RobustStats,
} from "./backprop_method.ts";
import { BnStore } from "./bn_store.ts";
import { type AdaptDescriptor, methodSettings } from "./descriptor.ts";
import { softCrossEntropy } from "./losses.ts";
import type { Adam, SGD } from "../ops/optim.ts";
import {
  type LearnResult,
  predictLogits,
  statisticsForward,
  type StreamCore,
  streamed,
} from "./streaming.ts";
import {
  bnState,
  learnMode,
  logitStats,
  predictMode,
  prefixed,
  setStatsMomentum,
  SourceState,
  trainBnAffine,
  unprefixed,
} from "./tta.ts";

export const ROTTA_DEFAULTS: OptimizerConfig = { kind: "adam", lr: 1e-3, beta1: 0.9, beta2: 0.999 };

export interface RottaOptions extends BackpropOptions {
  /** The teacher's EMA rate (0.001). */
  nu?: number;
  /** Seed of the strong augmentation. */
  seed?: number;
}

export class Rotta implements StreamCore {
  readonly name = "rotta" as const;
  readonly #params: Tensor[];
  #optimizer: Adam | SGD;
  readonly #config: OptimizerConfig;
  readonly #stats: RobustStats;
  readonly #nu: number;
  readonly #teacher: BnStore;
  /** Scratch for the student's BN state while the teacher runs. */
  readonly #student: BnStore;
  #rng: Rng;
  readonly #seed: number;
  /** Learning steps since the last reset (the teacher's ramp-up). */
  #learned = 0;

  private constructor(readonly model: Module, private readonly source: SourceState, options: RottaOptions) {
    this.#config = optimizerFrom(ROTTA_DEFAULTS, options);
    this.#stats = options.stats ?? DEFAULT_STATS;
    this.#nu = options.nu ?? 0.001;
    this.#seed = options.seed ?? 0;
    this.#rng = new Rng(this.#seed);
    setStatsMomentum(model, this.#stats.momentum);
    predictMode(model);
    this.#params = trainBnAffine(model);
    this.#optimizer = makeOptimizer(this.#params, this.#config);
    this.#teacher = BnStore.of(model);
    this.#student = BnStore.of(model, "workspace");
  }

  static async create(model: Module, options: RottaOptions = {}): Promise<Rotta> {
    return new Rotta(model, await SourceState.of(model), options);
  }

  /** fn with the teacher's BN state in the model; the teacher keeps what fn's forwards did to its statistics. */
  async #asTeacher<T>(fn: () => Promise<T>): Promise<T> {
    this.#student.copyFrom();
    this.#teacher.copyTo();
    try {
      return await fn();
    } finally {
      this.#teacher.copyFrom();
      this.#student.copyTo();
    }
  }

  /** The teacher answers. */
  predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }> {
    return this.#asTeacher(() => predictLogits(this.model, x));
  }

  async learn(x: Tensor, ages: Float64Array): Promise<LearnResult> {
    // The teacher's soft labels on the clean minibatch (its forward moves its own target statistics).
    const teacher = await this.#asTeacher(async () => {
      learnMode(this.model, this.#stats.track);
      try {
        const out = noGrad(() => this.model.call(x));
        const host = await out.data();
        const classes = out.shape[1];
        out.dispose();
        return logitStats(host, classes);
      } finally {
        predictMode(this.model);
      }
    });
    const weights = Float32Array.from(ages, (a) => Math.exp(-a) / (1 + Math.exp(-a)));
    learnMode(this.model, this.#stats.track);
    try {
      const strong = augment(x, this.#rng);
      const logits = this.model.call(strong);
      strong.dispose();
      const loss = softCrossEntropy(logits, teacher.probs, weights);
      logits.dispose();
      backward(loss);
      loss.dispose();
      this.#optimizer.step();
      this.#optimizer.zeroGrad();
    } finally {
      predictMode(this.model);
    }
    // Mean-teacher ramp-up (Tarvainen & Valpola 2017): the n-th step moves the teacher by max(nu, 1/(n+1)).
    // With nu = 0.001 alone the teacher needs thousands of steps (RoTTA's CIFAR streams have them); on a
    // domain of a few thousand frames it would stay the source's and answer exactly as BN adaptation does.
    this.#learned++;
    this.#teacher.emaAffineFrom(Math.max(this.#nu, 1 / (this.#learned + 1)));
    return { updated: true, used: x.shape[0], predictions: teacher.predictions };
  }

  /** Statistics from the stream: both the teacher's and the student's move toward x's. */
  async statisticsPass(x: Tensor): Promise<void> {
    await this.#asTeacher(() => statisticsForward(this.model, x));
    await statisticsForward(this.model, x);
  }

  trainables(): Tensor[] {
    return this.#params;
  }

  reset(): void {
    this.source.restore(this.model);
    this.#teacher.copyFrom();
    this.#optimizer.dispose();
    this.#optimizer = makeOptimizer(this.#params, this.#config);
    this.#rng = new Rng(this.#seed);
    this.#learned = 0;
  }

  async state(): Promise<Record<string, Float32Array>> {
    return {
      ...prefixed("model", await bnState(this.model)),
      ...await this.#teacher.state("teacher"),
      ...prefixed("optimizer", await this.#optimizer.state()),
      "rotta.learned": Float32Array.of(this.#learned),
    };
  }

  loadState(state: Record<string, Float32Array>): void {
    this.model.loadState(unprefixed("model", state), { strict: false });
    this.#teacher.loadState("teacher", state);
    this.#optimizer.loadState(unprefixed("optimizer", state));
    this.#learned = state["rotta.learned"]?.[0] ?? 0;
  }

  dispose(): void {
    this.#optimizer.dispose();
    this.#teacher.dispose();
    this.#student.dispose();
  }
}

export const rotta: AdaptDescriptor<"rotta"> = {
  name: "rotta",
  task: "adapt",
  summary: "robust BN, category-balanced memory, time-weighted mean teacher (Yuan et al., CVPR 2023)",
  backward: true,
  store: "fp32",
  rank: 6,
  adapts: true,
  optimizer: ROTTA_DEFAULTS,
  create: async (model, o) => streamed(await Rotta.create(model, methodSettings(o)), o),
};
