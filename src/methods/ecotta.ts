/**
 * EcoTTA (Song et al., CVPR 2023): memory-efficient continual test-time adaptation.
 *
 * The backbone is frozen — weights and BN (eval mode, source running statistics) — and split after its stem
 * into K partitions (K = 4); a small meta network beside each (ecotta_meta.ts) is the only thing that trains.
 * Loss per test batch (paper eq. 2-4):
 *
 *   L = mean_{i: H_i < E0} H_i  +  lambda * sum_k mean |x~_k - f_k(x~_{k-1})|
 *
 * the entropy of the confident samples (E0 = 0.4 ln C, from EATA, as the paper) plus the self-distilled
 * regulariser: each adapted partition output stays close to what the frozen partition makes of the same
 * input, which keeps the source knowledge over long runs. lambda = 0.5 (the paper's value).
 *
 * Memory: a frozen conv keeps no input (TinyTL rule, ops/conv.ts), a frozen BN in eval mode keeps one
 * per-channel vector, ReLU6 keeps 1-bit masks; so backward through the frozen partitions costs masks only.
 * What is saved in full is per partition: the meta conv's input and BN_k's x-hat.
 *
 * Warm-up (optional, `warmup`): clean source images (1) calibrate each BN_k to the frozen output's statistics
 * so it can normalise with batch statistics (needs no labels), then (2) with labels, train the meta networks
 * with cross-entropy (the paper pre-trains them on the source set). Without warm-up data every meta network
 * starts as the exact identity and BN_k stays in eval mode (a per-channel affine).
 */
import { backward, noGrad, releaseGraph } from "../autograd/tape.ts";
import type { ImageSet } from "../data/images.ts";
import type { PreprocessOptions } from "../data/preprocess.ts";
import type { Module } from "../nn/module.ts";
import { add, scale } from "../ops/elementwise.ts";
import type { Adam, SGD } from "../ops/optim.ts";
import type { Tensor } from "../tensor.ts";
import {
  type BackpropOptions,
  DEFAULT_STATS,
  makeOptimizer,
  type OptimizerConfig,
  optimizerFrom,
  type RobustStats,
} from "./backprop_method.ts";
import { type LearnResult, type StreamCore, streamed } from "./streaming.ts";
import { type AdaptDescriptor, methodSettings } from "./descriptor.ts";
import { calibrate, l1ToConstant, MetaNet } from "./ecotta_meta.ts";
import { type ChannelStats, tailStatistics } from "./ecotta_stats.ts";
import {
  checkMismatch,
  runStages,
  type Stage,
  stagedMismatch,
  type StagedModel,
  stagesOf,
} from "./ecotta_partition.ts";
import { warmUp, type WarmupOptions, type WarmupReport, type WarmupTarget } from "./ecotta_warmup.ts";
import { weightedEntropy } from "./losses.ts";
import { logitStats, prefixed, unprefixed } from "./tta.ts";

export interface EcoTtaOptions extends BackpropOptions {
  /**
   * Feature blocks run frozen before the first partition, without a meta network (0; the authors keep their
   * input conv outside, which is 1 here).
   */
  leading?: number;
  /** K, the number of partitions (4): see splitBlocks. */
  partitions?: number;
  /** Blocks per partition, overriding splitBlocks (e.g. [1, 2, 2, 3]); must cover every block. */
  blocksPerPartition?: number[];
  /** Weight of the self-distilled regulariser (0.5). */
  lambda?: number;
  /** E0 as a fraction of ln C (0.4). */
  entropyMargin?: number;
  /** Meta conv kernel size, 1 or 3 (3). */
  kernelSize?: number;
  /** Clean source images for the warm-up (labels optional). */
  warmup?: { set: ImageSet; preprocess?: PreprocessOptions };
  warmupOptions?: WarmupOptions;
  /**
   * Without warm-up images: "bn-stats" calibrates each BN_k from the source statistics the backbone's BN
   * layers imply (ecotta_stats.ts) so it normalises with batch statistics from the first batch; "identity"
   * keeps BN_k an eval-mode identity (a per-channel affine). Default "bn-stats".
   */
  init?: "bn-stats" | "identity";
  /** How errors name the model (e.g. its path). */
  name?: string;
}

/** SGD with momentum 0.9 as the EATA code the authors point to; lr chosen on MNIST-C (docs/ecotta.md). */
export const ECOTTA_DEFAULTS: OptimizerConfig = { kind: "sgd", lr: 1e-2, momentum: 0.9 };

/**
 * Blocks per partition by default: the first `lead` blocks alone in partition 1 (the stem, so BN_1
 * re-standardises its output: under a contrast shift every later block otherwise sees mis-scaled features),
 * the rest split evenly into k - 1 partitions with any extra blocks in the later ones (the authors also give
 * shallow partitions fewer blocks, e.g. [3, 3, 6, 6] for WRN-40).
 */
export function splitBlocks(blocks: number, k: number, first = 1): number[] {
  const rest = blocks - first;
  if (!(Number.isInteger(k) && k >= 2 && first >= 1 && rest >= k - 1)) {
    throw new Error(`EcoTTA: cannot split ${blocks} blocks into ${k} partitions (the first of ${first})`);
  }
  const n = k - 1;
  return [
    first,
    ...Array.from({ length: n }, (_, i) => Math.floor(rest / n) + (i >= n - (rest % n) ? 1 : 0)),
  ];
}

interface Partition {
  blocks: Stage[];
  meta: MetaNet;
}

export class EcoTta implements StreamCore {
  readonly name = "ecotta" as const;
  readonly lambda: number;
  readonly entropyMargin: number;
  #staged: StagedModel;
  #leading: Stage[];
  #parts: Partition[];
  #params: Tensor[];
  #optimizer: Adam | SGD;
  #optimizerConfig: OptimizerConfig;
  #source: Record<string, Float32Array> = {};
  #modelName: string;
  #planning: boolean;
  #stats: RobustStats;
  /** What the warm-up did, or null without warm-up data. */
  warmupReport: WarmupReport | null = null;

  private constructor(readonly model: Module, staged: StagedModel, options: EcoTtaOptions) {
    this.#modelName = options.name ?? `the ${model.constructor.name} model`;
    this.lambda = options.lambda ?? 0.5;
    this.entropyMargin = options.entropyMargin ?? 0.4;
    this.#optimizerConfig = optimizerFrom(ECOTTA_DEFAULTS, options);
    this.#planning = options.plan ?? false;
    this.#stats = options.stats ?? DEFAULT_STATS;
    model.eval();
    model.setTrainable(() => false);
    this.#staged = staged;
    const lead = options.leading ?? 0;
    if (!(Number.isInteger(lead) && lead >= 0 && lead < staged.stages.length)) {
      throw new Error(`EcoTTA: leading ${lead} must be an integer in 0..${staged.stages.length - 1}`);
    }
    this.#leading = staged.stages.slice(0, lead);
    const blocks = staged.stages.slice(lead);
    const sizes = options.blocksPerPartition ?? splitBlocks(blocks.length, options.partitions ?? 4);
    const total = sizes.reduce((s, v) => s + v, 0);
    if (total !== blocks.length || sizes.some((s) => !(Number.isInteger(s) && s >= 1))) {
      throw new Error(
        `EcoTTA: blocksPerPartition [${sizes.join(", ")}] must be positive and sum to the ${blocks.length} ` +
          `blocks after the first ${lead} of ${this.#modelName}`,
      );
    }
    const backend = firstBackend(model);
    let start = 0;
    this.#parts = sizes.map((size, k) => {
      const part = blocks.slice(start, start + size);
      start += size;
      const meta = new MetaNet(backend, {
        inChannels: part[0].inChannels,
        outChannels: part.at(-1)!.outChannels,
        stride: part.reduce((s, b) => s * b.stride, 1),
        kernelSize: options.kernelSize,
      });
      meta.tag = `ecotta.${k}`;
      return { blocks: part, meta };
    });
    this.#params = this.#parts.flatMap((p) => p.meta.parameters());
    this.#optimizer = makeOptimizer(this.#params, this.#optimizerConfig);
  }

  static async create(model: Module, options: EcoTtaOptions = {}): Promise<EcoTta> {
    const staged = await stagesOf(model, { name: options.name });
    const m = new EcoTta(model, staged, options);
    if (options.warmup) {
      m.warmupReport = await warmUp(m.#warmupTarget(), options.warmup.set, {
        preprocess: options.warmup.preprocess,
        ...options.warmupOptions,
      });
    } else if ((options.init ?? "bn-stats") === "bn-stats") {
      await m.#calibrateFromBn();
    }
    m.#source = await m.#metaState();
    return m;
  }

  /** The meta networks, in partition order (for inspection and tests). */
  get metaNets(): MetaNet[] {
    return this.#parts.map((p) => p.meta);
  }

  /** Blocks per partition, e.g. [2, 2, 2, 1]. */
  get partitionSizes(): number[] {
    return this.#parts.map((p) => p.blocks.length);
  }

  #warmupTarget(): WarmupTarget {
    return {
      metaNets: this.metaNets,
      params: this.#params,
      forward: (x) => this.#forward(x, false).logits,
      calibrationPass: (x, visit) => this.#calibrationPass(x, visit),
      verify: (x) => this.#verify(x),
    };
  }

  /** Stem, then per partition: frozen blocks, meta network, and (withReg) the regulariser against them. */
  #forward(x: Tensor, withReg: boolean): { logits: Tensor; reg: Tensor[] } {
    const reg: Tensor[] = [];
    let h = runStages(x, this.#leading);
    for (const part of this.#parts) {
      const y = runStages(h, part.blocks);
      const adapted = part.meta.adapt(h, y);
      if (withReg) reg.push(l1ToConstant(adapted, y));
      y.dispose();
      if (h !== x) h.dispose();
      h = adapted;
    }
    const logits = this.#staged.head(h);
    h.dispose();
    return { logits, reg };
  }

  /** A no-gradient pass that shows each partition's frozen output y_k to `visit` before its meta net runs. */
  async #calibrationPass(x: Tensor, visit: (k: number, y: Tensor) => Promise<void>): Promise<void> {
    let h = noGrad(() => runStages(x, this.#leading));
    for (const [k, part] of this.#parts.entries()) {
      const y = noGrad(() => runStages(h, part.blocks));
      await visit(k, y);
      const adapted = noGrad(() => part.meta.adapt(h, y));
      y.dispose();
      if (h !== x) h.dispose();
      h = adapted;
    }
    h.dispose();
  }

  /** BN_k from the statistics the frozen BN layers imply for each partition's output (when they do). */
  async #calibrateFromBn(): Promise<void> {
    let stats: ChannelStats | null = null;
    const byStage = new Map<Stage, ChannelStats | null>();
    for (const stage of this.#staged.stages) {
      stats = stage.tail ? await tailStatistics(stage.tail, stats) : null;
      byStage.set(stage, stats);
    }
    for (const p of this.#parts) {
      const s = byStage.get(p.blocks.at(-1)!);
      if (s) calibrate(p.meta, s);
    }
  }

  /** Checks an ONNX graph's rebuilt blocks on the first real batch when its input shape was symbolic. */
  async #verify(x: Tensor): Promise<void> {
    if (this.#staged.verified) return;
    checkMismatch(await stagedMismatch(this.model, this.#staged, x), this.#modelName, "the first batch");
    this.#staged.verified = true;
  }

  /** Answers with every BN_k on its target statistics (robust BN: never the statistics of the frames). */
  async predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }> {
    await this.#verify(x);
    this.#setMetaMode(false);
    const logits = noGrad(() => this.#forward(x, false).logits);
    try {
      return { logits: Float32Array.from(await logits.data()), classes: logits.shape[1] };
    } finally {
      logits.dispose();
    }
  }

  /** BN_k normalise with batch statistics while learning (when calibrated), moving their targets by alpha. */
  #setMetaMode(learning: boolean): void {
    for (const p of this.#parts) {
      p.meta.bn.training = learning && p.meta.batchStats;
      p.meta.bn.trackRunningStats = learning && this.#stats.track;
      p.meta.bn.momentum = this.#stats.momentum;
    }
  }

  /** One step on a minibatch of the memory bank (paper eq. 2-4). */
  async learn(x: Tensor): Promise<LearnResult> {
    await this.#verify(x);
    this.#setMetaMode(true);
    try {
      const { logits, reg } = this.#forward(x, this.lambda > 0);
      const classes = logits.shape[1];
      const stats = logitStats(await logits.data(), classes);
      const e0 = this.entropyMargin * Math.log(classes);
      const confident = (e: number) => this.#planning || e < e0;
      const used = stats.entropies.filter(confident).length;
      const weights = stats.entropies.map((e) => (confident(e) ? 1 / used : 0));
      let loss: Tensor | null = used ? weightedEntropy(logits, Float32Array.from(weights)) : null;
      if (reg.length) {
        let total = reg[0];
        for (const r of reg.slice(1)) {
          const next = add(total, r);
          total.dispose();
          r.dispose();
          total = next;
        }
        const scaled = scale(total, this.lambda);
        total.dispose();
        if (loss) {
          const sum = add(loss, scaled);
          loss.dispose();
          scaled.dispose();
          loss = sum;
        } else loss = scaled;
      }
      if (loss) {
        backward(loss);
        loss.dispose();
        this.#optimizer.step();
        this.#optimizer.zeroGrad();
      }
      releaseGraph(logits);
      logits.dispose();
      return { updated: loss !== null, used, predictions: stats.predictions, entropy: stats.meanEntropy };
    } finally {
      this.#setMetaMode(false);
    }
  }

  async #metaState(): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    for (const [k, p] of this.#parts.entries()) {
      for (const [n, v] of Object.entries(await p.meta.state())) out[`meta.${k}.${n}`] = v;
      out[`meta.${k}.batch_stats`] = Float32Array.of(p.meta.batchStats ? 1 : 0);
    }
    return out;
  }

  #loadMeta(state: Record<string, ArrayLike<number>>): void {
    for (const [k, p] of this.#parts.entries()) {
      const prefix = `meta.${k}.`;
      const own: Record<string, ArrayLike<number>> = {};
      for (const [n, v] of Object.entries(state)) {
        if (n.startsWith(prefix) && n !== `${prefix}batch_stats`) own[n.slice(prefix.length)] = v;
      }
      p.meta.loadState(own);
      const flag = state[`${prefix}batch_stats`];
      if (flag) p.meta.batchStats = flag[0] === 1;
    }
  }

  trainables(): Tensor[] {
    return this.#params;
  }

  /** Back to the meta networks as they were after warm-up (the identity without it), fresh optimizer. */
  reset(): void {
    this.#loadMeta(this.#source);
    this.#optimizer.dispose();
    this.#optimizer = makeOptimizer(this.#params, this.#optimizerConfig);
  }

  async state(): Promise<Record<string, Float32Array>> {
    return { ...await this.#metaState(), ...prefixed("optimizer", await this.#optimizer.state()) };
  }

  loadState(state: Record<string, Float32Array>): void {
    this.#loadMeta(state);
    this.#optimizer.loadState(unprefixed("optimizer", state));
  }

  dispose(): void {
    this.#optimizer.dispose();
    for (const p of this.#parts) p.meta.dispose();
  }
}

function firstBackend(model: Module) {
  const first = model.namedState()[0];
  if (!first) throw new Error("EcoTTA: the model has no parameters");
  return first[1].backend;
}

export const ecotta: AdaptDescriptor<"ecotta"> = {
  name: "ecotta",
  task: "adapt",
  summary: "meta networks beside a frozen backbone, self-distilled (Song et al., CVPR 2023)",
  backward: true,
  store: "fp32",
  rank: 5,
  adapts: true,
  optimizer: ECOTTA_DEFAULTS,
  flags: [{ flag: "--warmup-images W --warmup-labels WL", help: "clean data to warm up the meta networks" }],
  open: { entropyMargin: 1.01 },
  // Without warm-up data the meta networks start as the identity and BN_k as a fixed affine: on MNIST-C it
  // then trails BN adaptation (docs/governor.md), so auto only ranks it first with warm-up data.
  unavailableForAuto: ({ warmup }) =>
    warmup ? null : "needs clean warm-up data (--warmup-images) to be the stronger method",
  create: async (model, o) =>
    streamed(
      await EcoTta.create(model, {
        ...methodSettings(o),
        ...(o.plan ? {} : { warmup: o.warmup }),
        name: o.name,
      }),
      o,
    ),
};
