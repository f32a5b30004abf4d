/**
 * A symbolic ledger: storages, references, categories and autograd nodes without any data or kernel, so the
 * governor can predict a step's peak memory from shapes alone (no trial run on a device).
 *
 * It mirrors, rule for rule, what the real code does to the ledger: `Tensor` handles holding refcounted
 * storages (src/tensor.ts), views that share a storage, the saved-activation codecs (src/memory/codecs.ts:
 * an fp32 save recounts the forward's storage as "saved" once however many nodes hold it; fp16/int8/int4
 * store a packed copy of `encodedBytes`; 1-bit masks), tidy scopes, and the backward walk of
 * src/autograd/tape.ts (reverse DFS post-order, gradient accumulation, leaf gradients recounted as "grads",
 * saved state released node by node). The per-op rules live in sim_ops.ts. The ledger's measured peak on a
 * real run is the ground truth this is checked against (tests/null/governor_estimate_test.ts).
 */
import { type Saved, topoOrder } from "../autograd/tape.ts";
import { type ByCategory, CATEGORIES, type Category } from "../memory/ledger.ts";
import type { CodecName } from "../memory/codecs.ts";
import { encodedBytes } from "../memory/codecs_quant.ts";

export function zeros(): ByCategory {
  return Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as ByCategory;
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** Bytes of a 1-bit mask of n elements, as codecs.ts saveMask allocates it (32 per u32 word). */
export function maskBytes(n: number): number {
  return 4 * Math.ceil(n / 32);
}

/** Bytes a saved float tensor of `shape` costs under `codec`: the one formula planners and codecs share. */
export function savedBytes(codec: CodecName, shape: readonly number[]): number {
  return encodedBytes(codec, shape);
}

export interface SimStorage {
  bytes: number;
  category: Category;
  refs: number;
}

/** What the simulated tape keeps for backward: the real tape's Saved shape. */
export type SimSaved = Saved;

export interface SimSavedTensor extends SimSaved {
  get(): SimTensor;
}

export interface SimNode {
  readonly op: string;
  readonly inputs: (SimTensor | null)[];
  backward(dy: SimTensor): (SimTensor | null)[];
  readonly saved: SimSaved[];
  released: boolean;
}

export class SimTensor {
  requiresGrad = false;
  grad: SimTensor | null = null;
  node: SimNode | null = null;
  disposed = false;

  constructor(readonly sim: Sim, readonly storage: SimStorage, readonly shape: readonly number[]) {
    sim.scopes.at(-1)?.add(this);
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.sim.release(this.storage);
    for (const s of this.sim.scopes) s.delete(this);
  }
}

/** What the active store saves with (src/memory/policy.ts): a float codec, and whether step masks replace
 * hard-swish/hard-sigmoid inputs. */
export interface SimPolicy {
  codec: CodecName;
  stepMasks: boolean;
}

export class Sim {
  readonly live = zeros();
  liveTotal = 0;
  peakTotal = 0;
  atPeak = zeros();
  readonly peak = zeros();
  gradEnabled = true;
  policy: SimPolicy = { codec: "fp32", stepMasks: false };
  readonly scopes: Set<SimTensor>[] = [];
  readonly #holders = new WeakMap<SimStorage, number>();

  #count(bytes: number, category: Category): void {
    this.live[category] += bytes;
    this.liveTotal += bytes;
    if (this.live[category] > this.peak[category]) this.peak[category] = this.live[category];
    if (this.liveTotal > this.peakTotal) {
      this.peakTotal = this.liveTotal;
      this.atPeak = { ...this.live };
    }
  }

  alloc(elements: number, category: Category): SimStorage {
    const s = { bytes: 4 * elements, category, refs: 1 };
    this.#count(s.bytes, category);
    return s;
  }

  retain(s: SimStorage): void {
    if (s.refs <= 0) throw new Error("Sim: retain() of a freed storage");
    s.refs++;
  }

  release(s: SimStorage): void {
    if (s.refs <= 0) throw new Error("Sim: release() of a freed storage");
    if (--s.refs > 0) return;
    this.#count(-s.bytes, s.category);
  }

  recategorize(s: SimStorage, category: Category): void {
    this.#count(-s.bytes, s.category);
    s.category = category;
    this.#count(s.bytes, category);
  }

  /** Tensor.empty */
  empty(shape: readonly number[], category: Category = "activations"): SimTensor {
    return new SimTensor(this, this.alloc(sizeOf(shape), category), [...shape]);
  }

  /** Tensor.view: a new handle on the same storage. */
  view(t: SimTensor, shape: readonly number[]): SimTensor {
    this.retain(t.storage);
    return new SimTensor(this, t.storage, [...shape]);
  }

  /** A persistent tensor counted elsewhere (a parameter or buffer in the weights total): 0 bytes here. */
  fixed(shape: readonly number[], category: Category = "weights"): SimTensor {
    return new SimTensor(this, { bytes: 0, category, refs: 1 }, [...shape]);
  }

  needsGrad(...ts: (SimTensor | null | undefined)[]): boolean {
    if (!this.gradEnabled) return false;
    return ts.some((t) => t && (t.requiresGrad || t.node));
  }

  record(
    op: string,
    out: SimTensor,
    inputs: (SimTensor | null)[],
    backward: (dy: SimTensor) => (SimTensor | null)[],
    saved: SimSaved[] = [],
  ): SimTensor {
    const onPath = (t: SimTensor | null) => (t && (t.requiresGrad || t.node) ? t : null);
    out.node = { op, inputs: inputs.map(onPath), backward, saved, released: false };
    return out;
  }

  noGrad<T>(fn: () => T): T {
    const prev = this.gradEnabled;
    this.gradEnabled = false;
    try {
      return fn();
    } finally {
      this.gradEnabled = prev;
    }
  }

  tidy<T>(fn: () => T): T {
    const scope = new Set<SimTensor>();
    this.scopes.push(scope);
    let result: T;
    try {
      result = fn();
    } finally {
      this.scopes.pop();
    }
    const kept = new Set<SimTensor>();
    const collect = (r: unknown) => {
      if (r instanceof SimTensor) kept.add(r);
      else if (Array.isArray(r)) r.forEach(collect);
    };
    collect(result);
    for (const t of scope) if (!kept.has(t)) t.dispose();
    const parent = this.scopes.at(-1);
    if (parent) { for (const t of kept) parent.add(t); }
    return result;
  }

  /** codecs.ts saveFloat under the active policy. */
  saveFloat(t: SimTensor): SimSavedTensor {
    const codec = this.policy.codec;
    if (codec !== "fp32") {
      const packed = this.alloc(savedBytes(codec, t.shape) / 4, "saved");
      let released = false;
      return {
        bytes: packed.bytes,
        get: () => this.empty(t.shape),
        release: () => {
          if (released) return;
          released = true;
          this.release(packed);
        },
      };
    }
    const s = t.storage;
    this.retain(s);
    const holders = this.#holders.get(s) ?? 0;
    const counted = s.category === "activations" || s.category === "workspace" || s.category === "saved";
    if (holders === 0 && counted && s.category !== "saved") this.recategorize(s, "saved");
    this.#holders.set(s, holders + 1);
    let released = false;
    return {
      bytes: counted && holders === 0 ? s.bytes : 0,
      get: () => {
        this.retain(s);
        return new SimTensor(this, s, t.shape);
      },
      release: () => {
        if (released) return;
        released = true;
        const left = (this.#holders.get(s) ?? 1) - 1;
        this.#holders.set(s, left);
        if (left === 0 && s.refs > 1 && s.category === "saved") this.recategorize(s, "activations");
        this.release(s);
      },
    };
  }

  /** codecs.ts saveMask: ceil(n/32) u32 words. */
  saveMask(x: SimTensor): SimSaved {
    const s = this.alloc(Math.ceil(x.size / 32), "saved");
    let released = false;
    return {
      bytes: s.bytes,
      release: () => {
        if (released) return;
        released = true;
        this.release(s);
      },
    };
  }

  /** linear.ts keepOperand: a leaf is referenced (0 bytes), an op output is saved through the policy. */
  keepOperand(t: SimTensor): SimSavedTensor {
    if (t.node) return this.saveFloat(t);
    const s = t.storage;
    this.retain(s);
    let released = false;
    return {
      bytes: 0,
      get: () => {
        this.retain(s);
        return new SimTensor(this, s, t.shape);
      },
      release: () => {
        if (released) return;
        released = true;
        this.release(s);
      },
    };
  }

  /** norm.ts keepStorage: a per-channel storage recounted as "saved". */
  keepStorage(s: SimStorage): SimSaved {
    this.recategorize(s, "saved");
    let released = false;
    return {
      bytes: s.bytes,
      release: () => {
        if (released) return;
        released = true;
        this.release(s);
      },
    };
  }

  /** tape.ts backward(loss): same order, same accumulation, same releases. */
  backward(loss: SimTensor): void {
    const root = loss.node;
    if (!root) throw new Error("Sim: backward() of a tensor that is not on a trainable path");
    const grads = new Map<SimNode, SimTensor>();
    const seed = this.empty(loss.shape, "grads");
    grads.set(root, seed);
    const order = topoOrder(root);
    for (let i = order.length - 1; i >= 0; i--) {
      const node = order[i];
      const dy = grads.get(node);
      grads.delete(node);
      if (!dy) {
        releaseNode(node);
        continue;
      }
      const dxs = this.tidy(() => node.backward(dy));
      dy.dispose();
      releaseNode(node);
      node.inputs.forEach((input, j) => {
        const dx = dxs[j];
        if (!input || !dx) {
          dx?.dispose();
          return;
        }
        if (input.node) {
          grads.set(input.node, this.#accumulate(grads.get(input.node), dx));
        } else if (input.requiresGrad) {
          if (dx.storage.category !== "grads") this.recategorize(dx.storage, "grads");
          let g = dx;
          if (dx.shape.join() !== input.shape.join()) {
            g = this.view(dx, input.shape);
            dx.dispose();
          }
          input.grad = input.grad ? this.#accumulate(input.grad, g) : g;
        } else {
          dx.dispose();
        }
      });
    }
    for (const g of grads.values()) g.dispose();
    loss.node = null;
  }

  #accumulate(into: SimTensor | undefined, g: SimTensor): SimTensor {
    if (!into) return g;
    g.dispose();
    return into;
  }

  /** tape.ts releaseGraph */
  releaseGraph(out: SimTensor): void {
    if (!out.node) return;
    for (const node of topoOrder(out.node)) releaseNode(node);
    out.node = null;
  }
}

function releaseNode(node: SimNode): void {
  if (node.released) return;
  node.released = true;
  for (const s of node.saved) s.release();
}
