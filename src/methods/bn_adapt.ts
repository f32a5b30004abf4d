/**
 * BN adaptation (Schneider et al. 2020; TENT's "norm" baseline), on the stream: normalise with target
 * statistics that follow the test domain (robust BN, tta.ts: an average moved by every minibatch of the memory
 * bank, or of the last frames); nothing is trained and nothing is kept for backward. And the unadapted source
 * model, for comparison.
 */
import { noGrad } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor.ts";
import { type AdaptDescriptor, statsOf } from "./descriptor.ts";
import { DEFAULT_MOMENTUM, predictLogits, type StreamCore, streamed } from "./streaming.ts";
import {
  bnState,
  logitStats,
  predictMode,
  prefixed,
  setStatsMomentum,
  SourceState,
  type StepResult,
  type TtaMethod,
  unprefixed,
} from "./tta.ts";

/** A forward without recording anything: the step of methods that learn nothing. */
async function predictOnly(model: Module, x: Tensor): Promise<StepResult> {
  const logits = noGrad(() => model.call(x));
  const classes = logits.shape[1];
  const host = Float32Array.from(await logits.data());
  logits.dispose();
  const entropy = logitStats(host, classes).meanEntropy;
  return { logits: host, classes, entropy, updated: false, used: 0, reset: false };
}

/** BN adaptation's core: answers with the target statistics; the stream's statistics passes move them. */
export class BnAdapt implements StreamCore {
  readonly name = "bn" as const;

  private constructor(readonly model: Module, private readonly source: SourceState, momentum: number) {
    setStatsMomentum(model, momentum);
    predictMode(model);
    model.setTrainable(() => false);
  }

  static async create(model: Module, options: { momentum?: number } = {}): Promise<BnAdapt> {
    return new BnAdapt(model, await SourceState.of(model), options.momentum ?? DEFAULT_MOMENTUM);
  }

  predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }> {
    return predictLogits(this.model, x);
  }

  trainables(): Tensor[] {
    return [];
  }

  reset(): void {
    this.source.restore(this.model);
  }

  async state(): Promise<Record<string, Float32Array>> {
    return prefixed("model", await bnState(this.model));
  }

  loadState(state: Record<string, Float32Array>): void {
    this.model.loadState(unprefixed("model", state), { strict: false });
  }

  dispose(): void {}
}

/**
 * The model as it is, predicting only: no mode or trainability changes, nothing to reset (evaluation of a
 * model in training, which the stream loop runs like any method).
 */
export function frozenPredictor(model: Module): TtaMethod {
  return {
    name: "source",
    model,
    step: (x) => predictOnly(model, x),
    trainables: () => [],
    reset: () => {},
    state: () => Promise.resolve({}),
    loadState: () => {},
    dispose: () => {},
  };
}

/** The unadapted source model in eval mode (running statistics), as a baseline with the same interface. */
export class SourceOnly implements TtaMethod {
  readonly name = "source" as const;

  constructor(readonly model: Module) {
    model.eval();
    model.setTrainable(() => false);
  }

  step(x: Tensor): Promise<StepResult> {
    return predictOnly(this.model, x);
  }

  trainables(): Tensor[] {
    return [];
  }

  reset(): void {}

  state(): Promise<Record<string, Float32Array>> {
    return Promise.resolve({});
  }

  loadState(): void {}

  dispose(): void {}
}

export const source: AdaptDescriptor<"source"> = {
  name: "source",
  task: "adapt",
  summary: "the unadapted model with its running statistics (the baseline)",
  backward: false,
  store: "fp32",
  rank: 0,
  adapts: false,
  create: (model) => Promise.resolve(new SourceOnly(model)),
};

export const bn: AdaptDescriptor<"bn"> = {
  name: "bn",
  task: "adapt",
  summary: "normalise with statistics that follow the test domain, train nothing (Schneider et al. 2020)",
  backward: false,
  store: "fp32",
  rank: 1,
  adapts: true,
  create: async (model, o) => streamed(await BnAdapt.create(model, statsOf(o)), o),
};
