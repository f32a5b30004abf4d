/**
 * What each method trains and which BatchNorms normalise with batch statistics, read from the methods' own
 * selection code (trainBnAffine, useBatchStatistics, prepareTransfer) applied to the model and then undone,
 * so the estimate follows the methods when they change instead of a second copy of their rules.
 */
import type { Tensor } from "../tensor.ts";
import type { Module } from "../nn/module.ts";
import { BatchNorm2d } from "../nn/layers.ts";
import { trainBnAffine, useBatchStatistics } from "../methods/tta.ts";
import { prepareTransfer, type TransferMethod } from "../methods/mobiletl.ts";
import type { MethodConfig } from "./shapes.ts";

export const ADAPT_METHODS = ["source", "bn", "tent", "eata", "sar", "ecotta"] as const;
export const TRAIN_METHODS = ["full", "bias", "mobiletl"] as const;
export type AdaptMethod = typeof ADAPT_METHODS[number];
export type TrainMethod = typeof TRAIN_METHODS[number];
export type GovernedMethod = AdaptMethod | TrainMethod;

export function isTrainMethod(m: string): m is TrainMethod {
  return (TRAIN_METHODS as readonly string[]).includes(m);
}

export function isGovernedMethod(m: string): m is GovernedMethod {
  return isTrainMethod(m) || (ADAPT_METHODS as readonly string[]).includes(m);
}

/** Methods that run a backward pass (the others only normalise with batch statistics or predict). */
export function hasBackward(m: GovernedMethod): boolean {
  return m !== "source" && m !== "bn";
}

export interface ConfigOptions {
  /** Transfer methods: inverted residual blocks to train, from the output (default all). */
  topBlocks?: number;
}

/** Apply `method`'s choices to `model`, record them, and restore the model's flags. */
export function methodConfig(
  model: Module,
  method: GovernedMethod,
  options: ConfigOptions = {},
): MethodConfig {
  const params = model.namedParameters().map(([, t]) => t);
  const modules = model.namedModules().map(([, m]) => m);
  const bns = modules.filter((m): m is BatchNorm2d => m instanceof BatchNorm2d);
  const grad = new Map(params.map((p) => [p, p.requiresGrad]));
  const mode = new Map(modules.map((m) => [m, m.training]));
  const track = new Map(bns.map((b) => [b, b.trackRunningStats]));
  try {
    switch (method) {
      case "source":
      case "ecotta":
        model.eval();
        model.setTrainable(() => false);
        break;
      case "bn":
        useBatchStatistics(model);
        model.setTrainable(() => false);
        break;
      case "tent":
      case "eata":
      case "sar":
        useBatchStatistics(model);
        trainBnAffine(model);
        break;
      default:
        prepareTransfer(model, method as TransferMethod, { topBlocks: options.topBlocks });
    }
    const trains = new Set<Tensor>(params.filter((p) => p.requiresGrad));
    const training = new Map(modules.map((m) => [m, m.training]));
    const tracks = new Map(bns.map((b) => [b, b.trackRunningStats]));
    return {
      trains: (t) => trains.has(t),
      training: (m) => training.get(m) ?? m.training,
      tracks: (b) => tracks.get(b) ?? b.trackRunningStats,
    };
  } finally {
    for (const [p, g] of grad) p.requiresGrad = g;
    for (const [m, t] of mode) m.training = t;
    for (const [b, t] of track) b.trackRunningStats = t;
  }
}

/** Elements of the parameters `config` trains. */
export function trainableElements(model: Module, config: MethodConfig): number {
  return model.parameters().filter((p) => config.trains(p)).reduce((s, p) => s + p.size, 0);
}
