/**
 * TENT (Wang et al., ICLR 2021): minimise the mean softmax entropy of each test batch by updating only the
 * BN affine parameters, normalising with test-batch statistics. Reference defaults: Adam, lr 1e-3,
 * betas (0.9, 0.999), one step per batch; the batch's predictions come from the forward before its update.
 */
import type { Module } from "../nn/module.ts";
import { entropy } from "../ops/loss.ts";
import type { Tensor } from "../tensor.ts";
import {
  BackpropMethod,
  type BackpropOptions,
  type LossPlan,
  type OptimizerConfig,
  optimizerFrom,
} from "./backprop_method.ts";
import { type AdaptDescriptor, methodSettings } from "./descriptor.ts";
import { streamed } from "./streaming.ts";
import type { SourceState } from "./tta.ts";

export const TENT_DEFAULTS: OptimizerConfig = { kind: "adam", lr: 1e-3, beta1: 0.9, beta2: 0.999 };

export class Tent extends BackpropMethod {
  readonly name = "tent" as const;

  private constructor(model: Module, source: SourceState, options: BackpropOptions) {
    super(model, source, optimizerFrom(TENT_DEFAULTS, options), options);
  }

  static async create(model: Module, options: BackpropOptions = {}): Promise<Tent> {
    return new Tent(model, await BackpropMethod.prepare(model), options);
  }

  protected plan(logits: Tensor): LossPlan {
    return { loss: entropy(logits), used: logits.shape[0] };
  }
}

export const tent: AdaptDescriptor<"tent"> = {
  name: "tent",
  task: "adapt",
  summary: "entropy minimisation on the BN affine parameters (Wang et al., ICLR 2021)",
  backward: true,
  store: "fp32",
  rank: 2,
  adapts: true,
  optimizer: TENT_DEFAULTS,
  create: async (model, o) => streamed(await Tent.create(model, methodSettings(o)), o),
};
