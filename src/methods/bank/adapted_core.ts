/**
 * A method's core (streaming.ts StreamCore) with what the adapter bank adds to every learning step:
 *
 * - the adapter kind: `bn` trains what the method trains (BN affine for TENT/EATA/SAR/RoTTA); `lora` and
 *   `conv1x1` train adapters (src/nn/adapters.ts) instead, with their own Adam, and the method's own
 *   parameters stay frozen — the method chooses the loss and the schedule, the kind what a slot learns. BN
 *   statistics follow the domain in every kind (robust BN);
 * - rehearsal-free regularisation (Smith et al., "A Closer Look at Rehearsal-Free Continual Learning", 2023:
 *   an L2 pull to the source weights): after each step every trained tensor moves `pull` of the way back
 *   to its source value, theta <- theta - pull (theta - theta_source) — weight decay toward the source
 *   instead of toward zero, decoupled from the optimizer as in AdamW, so no slot drifts far from the source.
 */
import type { Module } from "../../nn/module.ts";
import { type AdapterKind, AdapterSet } from "../../nn/adapters.ts";
import { Adam } from "../../ops/optim.ts";
import { clone, moveToward } from "../../ops/copy.ts";
import { keep, type Tensor } from "../../tensor.ts";
import type { LearnResult, StreamCore } from "../streaming.ts";

export interface AdaptedCoreOptions {
  kind: "bn" | AdapterKind;
  /** Fraction of the way back to the source per learning step (0.01). */
  pull?: number;
  /** LoRA rank (4). */
  rank?: number;
  /** Adam's learning rate for adapters (1e-3). */
  lr?: number;
  /** Layers no adapter may sit on. */
  exclude?: Set<Module>;
}

const ADAPTER = "adapter.";
const ADAPTER_OPT = "adapter_optimizer.";

export class AdaptedCore implements StreamCore {
  readonly name: StreamCore["name"];
  readonly model: Module;
  readonly adapters: AdapterSet | null;
  readonly pull: number;
  readonly learn?: (x: Tensor, ages: Float64Array) => Promise<LearnResult>;
  readonly statisticsPass?: (x: Tensor) => Promise<void>;
  #optimizer: Adam | null = null;
  readonly #lr: number;
  /** What learns, and device copies of its source values (the pull's target). */
  readonly #trained: Tensor[];
  readonly #anchors: Tensor[];

  constructor(readonly core: StreamCore, o: AdaptedCoreOptions) {
    this.name = core.name;
    this.model = core.model;
    this.pull = o.pull ?? 0.01;
    if (!(this.pull >= 0 && this.pull < 1)) {
      throw new Error(`--bank-pull must be in [0, 1), got ${this.pull}`);
    }
    this.#lr = o.lr ?? 1e-3;
    if (o.kind !== "bn") {
      if (!core.learn) {
        throw new Error(`--adapter ${o.kind} needs a method that learns (${core.name} does not)`);
      }
      for (const p of core.trainables()) p.requiresGrad = false;
      this.adapters = AdapterSet.create(o.kind, core.model, { rank: o.rank, exclude: o.exclude });
      this.#optimizer = new Adam(this.adapters.params, { lr: this.#lr });
    } else this.adapters = null;
    this.#trained = this.adapters?.params ?? core.trainables();
    this.#anchors = this.#trained.map((p) => keep(clone(p, { category: "weights" })));
    if (core.learn) this.learn = (x, ages) => this.#learn(x, ages);
    if (core.statisticsPass) this.statisticsPass = (x) => core.statisticsPass!(x);
  }

  predict(x: Tensor): Promise<{ logits: Float32Array; classes: number }> {
    return this.core.predict(x);
  }

  async #learn(x: Tensor, ages: Float64Array): Promise<LearnResult> {
    const r = await this.core.learn!(x, ages);
    if (this.#optimizer) {
      // The method's backward left gradients on the adapters too; its own optimizer only steps its own.
      this.#optimizer.step();
      this.#optimizer.zeroGrad();
    }
    if (this.pull > 0 && r.updated && !r.resetReason) this.#pullToSource();
    return r;
  }

  #pullToSource(): void {
    this.#trained.forEach((p, i) => moveToward(p, this.#anchors[i], this.pull));
  }

  trainables(): Tensor[] {
    return this.#trained;
  }

  reset(): void {
    this.core.reset();
    this.adapters?.reset();
    if (this.#optimizer) {
      this.#optimizer.dispose();
      this.#optimizer = new Adam(this.adapters!.params, { lr: this.#lr });
    }
  }

  async state(): Promise<Record<string, Float32Array>> {
    const out = await this.core.state();
    if (this.adapters) Object.assign(out, await this.adapters.state("adapter"));
    for (const [k, v] of Object.entries(await this.#optimizer?.state() ?? {})) out[`${ADAPTER_OPT}${k}`] = v;
    return out;
  }

  loadState(state: Record<string, Float32Array>): void {
    const core: Record<string, Float32Array> = {};
    const opt: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(state)) {
      if (k.startsWith(ADAPTER_OPT)) opt[k.slice(ADAPTER_OPT.length)] = v;
      else if (!k.startsWith(ADAPTER)) core[k] = v;
    }
    this.core.loadState(core);
    this.adapters?.loadState("adapter", state);
    this.#optimizer?.loadState(opt);
  }

  dispose(): void {
    this.core.dispose();
    this.#optimizer?.dispose();
    this.adapters?.dispose();
    for (const a of this.#anchors) a.dispose();
  }
}
