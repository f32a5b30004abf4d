/**
 * Optimizers with PyTorch semantics: SGD (momentum, dampening, weight decay, Nesterov) and Adam / AdamW.
 * Each step is one in-place kernel per parameter. State tensors (ledger category "optimizer") are created
 * lazily at a parameter's first step, so frozen parameters and momentum-free SGD cost no optimizer memory.
 */
import type { Storage } from "../backend/backend.ts";
import { keep, shapeString, Tensor } from "../tensor.ts";

export type OptimizerState = Record<string, Float32Array>;

abstract class Optimizer {
  readonly params: Tensor[];
  lr: number;
  /** Per-parameter state tensors by slot name ("momentum", "m", "v"). */
  protected slots: Map<string, Tensor>[];
  /** Per-parameter step count (as PyTorch: a parameter without a gradient does not advance). */
  protected steps: number[];

  constructor(readonly kind: string, params: Tensor[], lr: number) {
    if (!(lr >= 0)) throw new Error(`${kind}(): lr must be >= 0, got ${lr}`);
    if (new Set(params).size !== params.length) throw new Error(`${kind}(): a parameter is listed twice`);
    if (params.some((p) => p.backend !== params[0].backend)) {
      throw new Error(`${kind}(): parameters live on different backends`);
    }
    this.params = [...params];
    this.lr = lr;
    this.slots = params.map(() => new Map());
    this.steps = params.map(() => 0);
  }

  /** Apply one update to every parameter that has a gradient. */
  step(): void {
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      if (p.grad.size !== p.size) {
        throw new Error(
          `${this.kind}.step(): gradient ${shapeString(p.grad.shape)} does not match parameter ${
            p.name ?? i
          } ${shapeString(p.shape)}`,
        );
      }
      this.steps[i]++;
      this.update(p, p.grad, i);
    });
  }

  protected abstract update(p: Tensor, grad: Tensor, i: number): void;

  /** Dispose every parameter's gradient and set it to null. */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  protected slot(i: number, name: string): Tensor {
    let t = this.slots[i].get(name);
    if (!t) {
      // keep(): state outlives any tidy scope that step() runs in.
      t = keep(Tensor.zeros(this.params[i].backend, this.params[i].shape, { category: "optimizer" }));
      this.slots[i].set(name, t);
    }
    return t;
  }

  /** Checkpoint: `<param index>.<slot>` per state tensor and `<param index>.step` per stepped parameter. */
  async state(): Promise<OptimizerState> {
    const out: OptimizerState = {};
    for (let i = 0; i < this.params.length; i++) {
      if (this.steps[i] > 0) out[`${i}.step`] = Float32Array.of(this.steps[i]);
      for (const [name, t] of this.slots[i]) out[`${i}.${name}`] = Float32Array.from(await t.data());
    }
    return out;
  }

  /** Replace all state with a checkpoint from state() of an optimizer over parameters of the same shapes. */
  loadState(state: Record<string, ArrayLike<number>>): void {
    const slots = this.params.map(() => new Map<string, Tensor>());
    const steps = this.params.map(() => 0);
    try {
      for (const [key, value] of Object.entries(state)) {
        const m = /^(\d+)\.(\w+)$/.exec(key);
        const i = m ? Number(m[1]) : -1;
        if (!m || i >= this.params.length) {
          throw new Error(
            `${this.kind}.loadState(): unknown key "${key}" for ${this.params.length} parameters`,
          );
        }
        const p = this.params[i];
        if (m[2] === "step") {
          steps[i] = value[0];
          continue;
        }
        if (value.length !== p.size) {
          throw new Error(
            `${this.kind}.loadState(): "${key}" has ${value.length} values but parameter ${i} is ${
              shapeString(p.shape)
            }`,
          );
        }
        slots[i].set(m[2], keep(Tensor.from(p.backend, value, p.shape, { category: "optimizer" })));
      }
    } catch (e) {
      for (const s of slots) for (const t of s.values()) t.dispose();
      throw e;
    }
    this.#disposeSlots();
    this.slots = slots;
    this.steps = steps;
  }

  dispose(): void {
    this.#disposeSlots();
    this.steps = this.params.map(() => 0);
  }

  #disposeSlots(): void {
    for (const s of this.slots) for (const t of s.values()) t.dispose();
    this.slots = this.params.map(() => new Map());
  }
}

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** torch.optim.SGD. */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  // The sgd kernel ignores its buffer when momentum is 0; this 1-element placeholder fills the argument.
  #placeholder: Storage | null = null;

  constructor(params: Tensor[], options: SgdOptions) {
    super("SGD", params, options.lr);
    this.momentum = options.momentum ?? 0;
    this.dampening = options.dampening ?? 0;
    this.weightDecay = options.weightDecay ?? 0;
    this.nesterov = options.nesterov ?? false;
    if (!(this.momentum >= 0)) throw new Error(`SGD(): momentum must be >= 0, got ${this.momentum}`);
    if (!(this.weightDecay >= 0)) throw new Error(`SGD(): weightDecay must be >= 0, got ${this.weightDecay}`);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error(
        `SGD(): nesterov needs momentum > 0 and dampening 0, got momentum ${this.momentum}, dampening ${this.dampening}`,
      );
    }
  }

  protected update(p: Tensor, grad: Tensor, i: number): void {
    let buf: Storage;
    let firstStep = true;
    if (this.momentum !== 0) {
      firstStep = !this.slots[i].has("momentum");
      buf = this.slot(i, "momentum").storage;
    } else {
      buf = this.#placeholder ??= p.backend.alloc(1, { category: "optimizer" });
    }
    p.backend.run("sgd", {
      param: p.storage,
      grad: grad.storage,
      momentumBuf: buf,
      attrs: {
        n: p.size,
        lr: this.lr,
        momentum: this.momentum,
        dampening: this.dampening,
        weightDecay: this.weightDecay,
        nesterov: this.nesterov,
        firstStep,
      },
    });
  }

  override dispose(): void {
    super.dispose();
    if (this.#placeholder) this.params[0].backend.release(this.#placeholder);
    this.#placeholder = null;
  }
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** AdamW: decay the weights directly (p -= lr*wd*p) instead of adding wd*p to the gradient. */
  decoupled?: boolean;
}

/** torch.optim.Adam, or torch.optim.AdamW with decoupled: true (AdamW's default weightDecay is 0.01). */
export class Adam extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly decoupled: boolean;

  constructor(params: Tensor[], options: AdamOptions) {
    super(options.decoupled ? "AdamW" : "Adam", params, options.lr);
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    this.decoupled = options.decoupled ?? false;
    for (const [k, v] of [["beta1", this.beta1], ["beta2", this.beta2]] as const) {
      if (!(v >= 0 && v < 1)) throw new Error(`${this.kind}(): ${k} must be in [0, 1), got ${v}`);
    }
    if (!(this.eps >= 0)) throw new Error(`${this.kind}(): eps must be >= 0, got ${this.eps}`);
    if (!(this.weightDecay >= 0)) {
      throw new Error(`${this.kind}(): weightDecay must be >= 0, got ${this.weightDecay}`);
    }
  }

  protected update(p: Tensor, grad: Tensor, i: number): void {
    p.backend.run("adam", {
      param: p.storage,
      grad: grad.storage,
      m: this.slot(i, "m").storage,
      v: this.slot(i, "v").storage,
      attrs: {
        n: p.size,
        lr: this.lr,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: this.weightDecay,
        decoupled: this.decoupled,
        step: this.steps[i],
      },
    });
  }
}

/** AdamW: Adam with decoupled weight decay (PyTorch's default weightDecay 0.01). */
export class AdamW extends Adam {
  constructor(params: Tensor[], options: Omit<AdamOptions, "decoupled">) {
    super(params, { weightDecay: 0.01, ...options, decoupled: true });
  }
}
