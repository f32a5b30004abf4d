/**
 * The memory estimator: predicted peak bytes of a (method, batch, store) choice, per ledger category, from
 * the model graph alone — no trial run. The model's forward is replayed on a symbolic ledger (sim.ts) with
 * the shapes of shapes.ts and the per-op save rules of sim_ops.ts, then each method's step (steps.ts,
 * ecotta_sim.ts) runs a few times so lazily created optimizer state is counted as it is from the second
 * batch of a real run. What it predicts is what the ledger measures: weights + gradients + optimizer state +
 * saved activations under the store's codecs + the live activations and workspace at the worst moment of
 * the forward/backward, including the input batch and the logits. docs/governor.md compares both.
 */
import type { Module } from "../nn/module.ts";
import type { ByCategory } from "../memory/ledger.ts";
import { resolveStore, type StoreName } from "../memory/policy.ts";
import { OnnxModule } from "../onnx/import.ts";
import type { OnnxModel } from "../onnx/model.ts";
import { type GovernedMethod, hasBackward, methodConfig, trainableElements } from "./config.ts";
import { callModule, type Forward, SimContext, stateBytes } from "./shapes.ts";
import { onnxProgram } from "./shapes_onnx.ts";
import { Sim, type SimPolicy } from "./sim.ts";
import { optimizerSlots, type RunState, SimOptimizer, simulateStep } from "./steps.ts";
import { type EcottaOptions, ecottaPlan } from "./ecotta_sim.ts";

export {
  ADAPT_METHODS,
  type GovernedMethod,
  hasBackward,
  isGovernedMethod,
  TRAIN_METHODS,
} from "./config.ts";
export { maskBytes, savedBytes } from "./sim.ts";

export interface EstimateOptions {
  method: GovernedMethod;
  batch: number;
  /** `auto` resolves as the CLI does (mask for mobiletl, fp32 otherwise). */
  store?: StoreName;
  /** Transfer methods: blocks to train from the output (default all). */
  topBlocks?: number;
  ecotta?: EcottaOptions;
  /** The runtime guard keeps a device copy of the model's trainable parameters (guard.ts). */
  guard?: boolean;
  /** Batches to simulate (4: enough for lazily created state to be live after EATA's 2 Fisher batches). */
  steps?: number;
}

export interface Estimate {
  method: GovernedMethod;
  batch: number;
  store: Exclude<StoreName, "auto">;
  /** Predicted peak of the ledger's total over a run. */
  peak_bytes: number;
  /** Breakdown by category at that peak. */
  at_peak: ByCategory;
  /** The peak of each category on its own. */
  peak_by_category: ByCategory;
  weights_bytes: number;
  trainable_parameters: number;
}

export function policyOf(store: Exclude<StoreName, "auto">): SimPolicy {
  return store === "mask" ? { codec: "fp32", stepMasks: true } : { codec: store, stepMasks: false };
}

export class Estimator {
  readonly inputShape: readonly number[];
  readonly #forward: Forward;
  readonly #weights: number;
  readonly #configs = new Map<string, ReturnType<typeof methodConfig>>();
  readonly #ecotta = new Map<string, ReturnType<typeof ecottaPlan>>();

  /**
   * `input` is one sample's shape [C, H, W]. An imported ONNX model needs its decoded graph (`onnx`): the
   * compiled OnnxModule does not expose its node order.
   */
  constructor(readonly model: Module, input: readonly number[], options: { onnx?: OnnxModel } = {}) {
    this.inputShape = [...input];
    if (model instanceof OnnxModule) {
      if (!options.onnx) {
        throw new Error("Estimator: an imported ONNX model needs its decoded graph (options.onnx)");
      }
      const p = onnxProgram(options.onnx, model);
      this.#forward = p.forward;
      this.#weights = stateBytes(model) + p.ownedBytes;
    } else {
      this.#forward = (ctx, x) => callModule(ctx, model, x);
      this.#weights = stateBytes(model);
    }
  }

  get weightsBytes(): number {
    return this.#weights;
  }

  #config(method: GovernedMethod, topBlocks?: number) {
    const key = `${method}/${topBlocks ?? "all"}`;
    let c = this.#configs.get(key);
    if (!c) {
      c = methodConfig(this.model, method, { topBlocks });
      this.#configs.set(key, c);
    }
    return c;
  }

  #ecottaPlan(options: EcottaOptions = {}) {
    const key = JSON.stringify(options);
    let p = this.#ecotta.get(key);
    if (!p) {
      p = ecottaPlan(this.model, options);
      this.#ecotta.set(key, p);
    }
    return p;
  }

  estimate(options: EstimateOptions): Estimate {
    const { method, batch } = options;
    if (!(Number.isInteger(batch) && batch >= 1)) {
      throw new Error(`estimate(): batch must be a positive integer, got ${batch}`);
    }
    const store = resolveStore(options.store ?? "auto", method);
    const config = this.#config(method, options.topBlocks);
    const ecotta = method === "ecotta" ? this.#ecottaPlan(options.ecotta) : undefined;
    const sim = new Sim();
    sim.policy = policyOf(store);
    const weights = this.#weights + (ecotta?.metaBytes ?? 0);
    sim.alloc(weights / 4, "weights");
    const trainable = trainableElements(this.model, config);
    if (options.guard) sim.alloc(trainable, "optimizer");
    const ctx = new SimContext(sim, config);
    const state: RunState = { optimizer: new SimOptimizer(ctx, optimizerSlots(method)) };
    const program = { forward: this.#forward, method, input: [batch, ...this.inputShape], ecotta };
    // EATA's Fisher phase takes 2 batches; everything else is in its steady state from the second.
    const steps = options.steps ?? (method === "eata" ? 4 : hasBackward(method) ? 2 : 1);
    for (let k = 0; k < steps; k++) simulateStep(ctx, program, state, k);
    return {
      method,
      batch,
      store,
      peak_bytes: sim.peakTotal,
      at_peak: { ...sim.atPeak },
      peak_by_category: { ...sim.peak },
      weights_bytes: weights,
      trainable_parameters: ecotta?.trainable ?? trainable,
    };
  }
}
