/**
 * The shared core of the entropy-minimising methods (TENT, EATA, SAR), a StreamCore (streaming.ts): answers
 * come from the model with its target statistics (robust BN); learning on a minibatch of the memory bank
 * runs a forward with batch statistics, reads the logits back once (host-side filters), builds the method's
 * loss on the device, backpropagates to the BN affine parameters only and steps the optimizer.
 */
import { backward, releaseGraph } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import { Adam, SGD } from "../ops/optim.ts";
import type { Tensor } from "../tensor.ts";
import type { AdaptMethodName } from "./registry.ts";
import {
  bnState,
  learnMode,
  type LogitStats,
  logitStats,
  predictMode,
  prefixed,
  setStatsMomentum,
  SourceState,
  trainBnAffine,
  unprefixed,
} from "./tta.ts";
import { DEFAULT_MOMENTUM, type LearnResult, predictLogits, type StreamCore } from "./streaming.ts";

export interface OptimizerConfig {
  kind: "adam" | "sgd";
  lr: number;
  momentum?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
}

const CONFIG_KEYS = ["kind", "lr", "momentum", "beta1", "beta2", "weightDecay"] as const;

/** `defaults` overridden by the optimizer settings `options` gives (undefined ones do not override). */
export function optimizerFrom(defaults: OptimizerConfig, options: Partial<OptimizerConfig>): OptimizerConfig {
  const out: OptimizerConfig = { ...defaults };
  for (const k of CONFIG_KEYS) {
    if (options[k] !== undefined) (out as unknown as Record<string, unknown>)[k] = options[k];
  }
  return out;
}

export function makeOptimizer(params: Tensor[], c: OptimizerConfig): Adam | SGD {
  return c.kind === "adam"
    ? new Adam(params, {
      lr: c.lr,
      beta1: c.beta1 ?? 0.9,
      beta2: c.beta2 ?? 0.999,
      weightDecay: c.weightDecay ?? 0,
    })
    : new SGD(params, { lr: c.lr, momentum: c.momentum ?? 0.9, weightDecay: c.weightDecay ?? 0 });
}

/** EATA's and SAR's SGD rate on a 10-class model (measured on the MNIST streams, docs/streaming.md). */
export const SGD_LR_AT_10_CLASSES = 0.02;

/**
 * A learning rate published for ImageNet's 1000 classes, scaled to C classes: log-linear in C from `at1000` to
 * `at10` (clamped). EATA and SAR publish SGD at 0.00025 for ResNet-50 on ImageNet; on a 10-class model that
 * barely moves the BN affine in hundreds of steps, so their rows would equal BN adaptation's.
 */
export function lrForClasses(classes: number, at1000: number, at10 = SGD_LR_AT_10_CLASSES): number {
  const t = Math.min(1, Math.max(0, (Math.log(classes) - Math.log(10)) / (Math.log(1000) - Math.log(10))));
  return Math.exp(Math.log(at10) + t * (Math.log(at1000) - Math.log(at10)));
}

/** Options every backprop method takes: its optimizer, the governor's plan switch (descriptor.ts), stats. */
export interface BackpropOptions extends Partial<OptimizerConfig> {
  plan?: boolean;
  /** Robust BN: whether learning moves the target statistics (they follow the bank), and by how much. */
  stats?: RobustStats;
}

/** How the target statistics move (tta.ts setStatsMomentum). */
export interface RobustStats {
  /** The learning forward moves them (statistics from the bank); false: something else does. */
  track: boolean;
  /** RoTTA's alpha (its 0.05; here DEFAULT_MOMENTUM, scheduled by streaming.ts). */
  momentum: number;
}

export const DEFAULT_STATS: RobustStats = { track: true, momentum: DEFAULT_MOMENTUM };

export interface LossPlan {
  /** The scalar loss to backpropagate, or null to skip the update (e.g. every sample filtered out). */
  loss: Tensor | null;
  used: number;
}

export abstract class BackpropMethod implements StreamCore {
  abstract readonly name: AdaptMethodName;
  protected params: Tensor[];
  protected optimizer: Adam | SGD;
  /** Take the most expensive side of every data-dependent branch (the governor's estimate). */
  protected readonly planning: boolean;
  protected readonly stats: RobustStats;

  protected constructor(
    readonly model: Module,
    protected readonly source: SourceState,
    protected readonly optimizerConfig: OptimizerConfig,
    options: BackpropOptions = {},
  ) {
    this.planning = options.plan ?? false;
    this.stats = options.stats ?? DEFAULT_STATS;
    setStatsMomentum(model, this.stats.momentum);
    predictMode(model);
    this.params = trainBnAffine(model);
    this.optimizer = makeOptimizer(this.params, optimizerConfig);
  }

  predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }> {
    return predictLogits(this.model, x);
  }

  protected static async prepare(model: Module): Promise<SourceState> {
    return await SourceState.of(model);
  }

  /** The learning rate for C classes when none was given (EATA, SAR: scaled from ImageNet's); null: as set. */
  protected lrFor(_classes: number): number | null {
    return null;
  }

  /** Build the loss from the batch's logits (still on the tape) and their host statistics. */
  protected abstract plan(logits: Tensor, stats: LogitStats, x: Tensor): LossPlan;

  /** Runs after the optimizer step (SAR's SAM second step, EMA bookkeeping); may request a reset. */
  protected afterStep(_x: Tensor, _stats: LogitStats, _used: number): Promise<string | null> {
    return Promise.resolve(null);
  }

  /** One step on a minibatch x of the memory bank (batch statistics), back in predict mode after. */
  async learn(x: Tensor): Promise<LearnResult> {
    learnMode(this.model, this.stats.track);
    try {
      const logits = this.model.call(x);
      const classes = logits.shape[1];
      const lr = this.lrFor(classes);
      if (lr !== null) this.optimizer.lr = lr;
      const stats = logitStats(await logits.data(), classes);
      const { loss, used } = this.plan(logits, stats, x);
      let updated = false;
      if (loss) {
        backward(loss);
        loss.dispose();
        updated = true;
      } else {
        releaseGraph(logits);
      }
      logits.dispose();
      const resetReason = updated ? await this.update(x, stats, used) : null;
      return {
        updated,
        used,
        predictions: stats.predictions,
        entropy: stats.meanEntropy,
        ...(resetReason ? { resetReason } : {}),
      };
    } finally {
      predictMode(this.model);
    }
  }

  /** The optimizer step for gradients already on the parameters. */
  protected async update(x: Tensor, stats: LogitStats, used: number): Promise<string | null> {
    this.optimizer.step();
    this.optimizer.zeroGrad();
    return await this.afterStep(x, stats, used);
  }

  trainables(): Tensor[] {
    return this.params;
  }

  reset(): void {
    this.source.restore(this.model);
    this.optimizer.dispose();
    this.optimizer = makeOptimizer(this.params, this.optimizerConfig);
    this.resetCounters();
  }

  protected resetCounters(): void {}

  /** The BN state (the rest of the model never changes) and the optimizer's. */
  async state(): Promise<Record<string, Float32Array>> {
    return {
      ...prefixed("model", await bnState(this.model)),
      ...prefixed("optimizer", await this.optimizer.state()),
    };
  }

  loadState(state: Record<string, Float32Array>): void {
    this.model.loadState(unprefixed("model", state), { strict: false });
    this.optimizer.loadState(unprefixed("optimizer", state));
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}
