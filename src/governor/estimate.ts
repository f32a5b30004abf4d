/**
 * The memory estimator: the peak bytes of a (method, batch, store) choice, measured by running the real
 * model and the real method step on the null backend (sizes only, src/backend/null.ts) and reading its
 * ledger. The estimate is what the code allocates, by construction: the same stream loop (or training step)
 * feeds chunks through the same runtime guard, under the same activation store; data-dependent branches take
 * their most expensive side (the methods' `plan` switch). For an adapting method `batch` is its learning
 * minibatch — the memory bank's capacity, counted too — and `chunk` how many frames arrive at once. Enough
 * frames run for a few learning steps, so lazily created state (optimizer moments, EATA's Fisher) is live,
 * as it is in a real run.
 */
import type { Backend } from "../backend/backend.ts";
import { NullBackend } from "../backend/null.ts";
import type { AllocatorPeak, AllocatorTarget, SimulatedAllocator } from "../memory/allocator.ts";
import type { ByCategory } from "../memory/ledger.ts";
import { type ConcreteStore, type StoreName, withStore } from "../memory/policy.ts";
import type { AdaptDescriptor, TrainDescriptor } from "../methods/descriptor.ts";
import { type MethodName, methodNamed, resolveStore } from "../methods/registry.ts";
import { feedChunk } from "../methods/run.ts";
import { type BankSettings, withBank } from "../methods/bank/mod.ts";
import { AdaptStream } from "../methods/stream.ts";
import { supervisedStep } from "../methods/supervised.ts";
import { makeOptimizer } from "../methods/backprop_method.ts";
import type { Module } from "../nn/module.ts";
import { importOnnx } from "../onnx/import.ts";
import type { OnnxModel } from "../onnx/model.ts";
import { Tensor } from "../tensor.ts";
import { RuntimeGuard } from "./guard.ts";
import { GuardedBackend } from "./guarded_backend.ts";
import { builtinFootprint } from "../devices/footprint.ts";
import { predictProcess, type ProcessContext, type ProcessPrediction } from "./process.ts";

export interface EstimateOptions {
  method: MethodName;
  /** Train: images per step. Adapt: the learning minibatch (= memory bank capacity). */
  batch: number;
  /** Adapt: frames answered at once (default: batch). */
  chunk?: number;
  /** Adapt: where the target statistics come from (default bank). */
  statsFrom?: "bank" | "stream";
  /** `auto` resolves as the CLI does (the method's descriptor). */
  store?: StoreName;
  /** Train methods: blocks to train from the output (default all). */
  topBlocks?: number;
  /** Count the runtime guard's device copy of the trainable tensors (adapt and serve run with it). */
  guard?: boolean;
  /** Method-specific settings (MethodOptions.extra), e.g. EcoTTA's partitions. */
  extra?: Record<string, unknown>;
  /** Learning steps (train: steps) to run (default: 4 for EATA, whose Fisher phase takes 2; else 2). */
  steps?: number;
  /** Adapt: the adapter bank (--bank), every slot holding a state (its most). */
  bank?: BankSettings;
}

/** The ledger's figures of a run on the null backend (what the estimator caches). */
interface LedgerEstimate {
  method: MethodName;
  batch: number;
  store: ConcreteStore;
  /** Peak of the ledger's total over the run. */
  peak_bytes: number;
  /** Breakdown by category at that peak. */
  at_peak: ByCategory;
  /** The peak of each category on its own. */
  peak_by_category: ByCategory;
  weights_bytes: number;
  trainable_parameters: number;
  /** The target backend's allocator at its high-water mark over model load and the run (null: no target). */
  allocator: AllocatorPeak | null;
  /** Backend allocations per chunk (each leaves a few JS objects for the garbage collector). */
  allocations_per_step: number;
}

/** An estimate: the ledger's peak and the process's (src/governor/process.ts). */
export type Estimate = LedgerEstimate & ProcessPrediction;

export interface EstimatorOptions {
  /** Simulate this backend's allocator (its arena or pool) on the same allocations as the ledger. */
  target?: AllocatorTarget;
  /** The WebGPU device's maxBufferSize (pool size classes). */
  maxBufferSize?: number;
  /** What the process adds to the tensors (default: the target's built-in footprint, the model twice). */
  process?: ProcessContext;
}

export class Estimator {
  readonly inputShape: readonly number[];
  readonly #null: NullBackend;
  readonly #backend: GuardedBackend;
  readonly #model: Module;
  readonly #weights: number;
  /** The simulated allocator right after the model was built: every run starts from it. */
  readonly #loaded: SimulatedAllocator | null;
  readonly #cache = new Map<string, Promise<LedgerEstimate>>();
  /** The process context every estimate's process_peak_bytes is computed in. */
  process: ProcessContext;
  /** Estimates run one at a time: they share the null model and its ledger. */
  #queue: Promise<unknown> = Promise.resolve();

  /** `build` makes the model on the backend it is given; `input` is one sample's shape [C, H, W]. */
  constructor(build: (backend: Backend) => Module, input: readonly number[], options: EstimatorOptions = {}) {
    this.inputShape = [...input];
    this.#null = new NullBackend({ allocator: options.target, maxBufferSize: options.maxBufferSize });
    this.#backend = new GuardedBackend(this.#null);
    this.#model = build(this.#backend);
    this.#weights = this.#backend.ledger.liveBytes;
    this.#loaded = this.#null.allocator?.clone() ?? null;
    this.process = options.process ?? {
      footprint: builtinFootprint(options.target ?? "cpu"),
      modelHostBytes: 2 * this.#weights,
    };
  }

  static forOnnx(onnx: OnnxModel, input: readonly number[], options: EstimatorOptions = {}): Estimator {
    return new Estimator((b) => importOnnx(b, onnx), input, options);
  }

  /** The backend whose allocator the estimates simulate, if any. */
  get target(): AllocatorTarget | undefined {
    return this.#loaded?.target;
  }

  get weightsBytes(): number {
    return this.#weights;
  }

  estimate(options: EstimateOptions): Promise<Estimate> {
    const { method, batch } = options;
    if (!(Number.isInteger(batch) && batch >= 1)) {
      return Promise.reject(new Error(`estimate(): batch must be a positive integer, got ${batch}`));
    }
    const store = resolveStore(options.store ?? "auto", method);
    const key = JSON.stringify({ ...options, store, chunk: options.chunk ?? batch });
    let e = this.#cache.get(key);
    if (!e) {
      e = this.#queue.then(() => this.#run(options, store));
      this.#queue = e.catch(() => {});
      this.#cache.set(key, e);
    }
    const input = this.inputShape;
    return e.then((l) => ({
      ...l,
      ...predictProcess({
        batch: l.batch,
        input,
        weightsBytes: l.weights_bytes,
        keepsSource: methodNamed(l.method).task === "adapt",
        allocator: l.allocator,
        ledgerPeakBytes: l.peak_bytes,
        allocationsPerStep: l.allocations_per_step,
      }, this.process),
    }));
  }

  async #run(o: EstimateOptions, store: ConcreteStore): Promise<LedgerEstimate> {
    const d = methodNamed(o.method);
    const ledger = this.#backend.ledger;
    const before = ledger.liveBytes;
    const shape = [o.batch, ...this.inputShape];
    const steps = o.steps ?? (o.method === "eata" ? 4 : 2);
    this.#null.allocator = this.#loaded?.clone() ?? null;
    const allocations = this.#null.allocations;
    const trainable = await withStore(
      store,
      () => d.task === "adapt" ? this.#adapt(d, o, store, shape, steps) : this.#train(d, o, shape, steps),
    );
    const snap = ledger.snapshot();
    this.#model.zeroGrad();
    if (ledger.liveBytes !== before) {
      throw new Error(
        `estimate(): ${o.method} left ${ledger.liveBytes - before} bytes live after its run (a leak)`,
      );
    }
    return {
      method: o.method,
      batch: o.batch,
      store,
      peak_bytes: snap.peakBytes,
      at_peak: snap.atPeak,
      peak_by_category: snap.peak,
      weights_bytes: this.#weights,
      trainable_parameters: trainable,
      allocator: this.#null.allocator?.peak() ?? null,
      allocations_per_step: Math.round((this.#null.allocations - allocations) / steps),
    };
  }

  async #adapt(
    d: AdaptDescriptor,
    o: EstimateOptions,
    store: ConcreteStore,
    shape: number[],
    steps: number,
  ): Promise<number> {
    const stream = { capacity: o.batch, every: o.batch, statsFrom: o.statsFrom, collapseGuard: false };
    const method = await d.create(this.#model, withBank({ plan: true, extra: o.extra, stream }, o.bank));
    const guard = o.guard
      ? new RuntimeGuard(this.#backend, { batch: o.batch, store, backward: d.backward })
      : undefined;
    try {
      const loop = new AdaptStream(method, { guard });
      this.#backend.ledger.resetPeak();
      // Chunks as the frames arrive, until the learning steps have run (the bank is full from the first):
      // the same sequence of answers, bank offers and learning steps as a run of that chunk size.
      const chunk = o.chunk ?? o.batch;
      const frames = shape.slice(1);
      let learned = 0;
      // A method learns every `batch` frames: if it has not after that many chunks, it never will.
      const most = steps * Math.ceil(o.batch / chunk) + 1;
      for (let k = 0; k < most && (k === 0 || (d.adapts && learned < steps)); k++) {
        const e = await feedChunk(loop, this.#backend, null, [chunk, ...frames]);
        learned += e.result.learned ?? 0;
      }
      if (d.adapts && learned < steps) {
        throw new Error(`estimate(): ${o.method} learned ${learned} times in ${most} chunks of ${chunk}`);
      }
      return method.trainables().reduce((s, p) => s + p.size, 0);
    } finally {
      guard?.dispose();
      method.dispose();
    }
  }

  async #train(d: TrainDescriptor, o: EstimateOptions, shape: number[], steps: number): Promise<number> {
    const plan = d.prepare(this.#model, { topBlocks: o.topBlocks });
    // The train command's optimizer; its state is created at the first step, so a second step sees it live.
    const opt = makeOptimizer(plan.params, d.optimizer ?? { kind: "adam", lr: 1e-3 });
    try {
      this.#backend.ledger.resetPeak();
      for (let k = 0; k < steps; k++) {
        plan.setMode(this.#model);
        const x = Tensor.empty(this.#backend, shape);
        await supervisedStep(this.#model, opt, x, new Array(o.batch).fill(0));
      }
      return plan.params.reduce((s, p) => s + p.size, 0);
    } finally {
      opt.dispose();
    }
  }
}
