/**
 * Parameter-efficient adapters on a frozen backbone, each folded exactly into the weights of the conv it
 * sits on, so an adapted model exports as a plain model of the same graph:
 *
 * - `lora`: a low-rank update of every pointwise (1x1, ungrouped) conv, W + (alpha/r) B A with alpha = r,
 *   A [r, Cin] random and B [Cout, r] zero (Hu et al., LoRA, 2021): the model starts as the source. Folded: W' = W + B A.
 * - `conv1x1`: a zero-initialised 1x1 residual adapter u + A u on the output u of each block's last conv,
 *   before its BN (Rebuffi et al., "Learning multiple visual domains with residual adapters", 2017: the
 *   series adapter). Blocks come from the graph (structure.ts). Since (I + A) mixes output channels only,
 *   it folds into any ungrouped conv: W'[o] = W[o] + sum_j A[o, j] W[j], b' = b + A b.
 *
 * An adapter takes over its conv's forward (an own `forward` on the instance, removed by dispose()), so the
 * ONNX graph's steps, which call the layer, run through it without knowing.
 */
import { Conv2d } from "./layers.ts";
import type { Module } from "./module.ts";
import { structureOf } from "./trace.ts";
import { conv2d } from "../ops/conv.ts";
import { add } from "../ops/elementwise.ts";
import { matmul } from "../ops/linear.ts";
import { reshape } from "../ops/shape.ts";
import { Rng } from "../random.ts";
import { keep, Tensor } from "../tensor.ts";

export type AdapterKind = "lora" | "conv1x1";
export const ADAPTER_KINDS = ["bn", "lora", "conv1x1"] as const;

interface Site {
  conv: Conv2d;
  /** The adapter's parameters on this conv (LoRA: A then B; conv1x1: A). */
  params: Tensor[];
  /** Their initial values (reset, the source the pull returns to). */
  init: Float32Array[];
}

export interface AdapterOptions {
  /** LoRA rank (default 4). */
  rank?: number;
  /** Seed of LoRA's A (default 0). */
  seed?: number;
  /** Convs to leave alone (e.g. those the adapter bank's keys are computed after). */
  exclude?: Set<Module>;
}

function isPointwise(c: Conv2d): boolean {
  return c.groups === 1 && c.weight.shape[2] === 1 && c.weight.shape[3] === 1;
}

function param(conv: Conv2d, values: Float32Array, shape: number[]): Tensor {
  return keep(Tensor.from(conv.weight.backend, values, shape, { category: "weights", requiresGrad: true }));
}

const host = async (t: Tensor) => {
  const d = await t.data();
  return d instanceof Float32Array ? d.slice() : Float32Array.from(d);
};

export class AdapterSet {
  readonly #sites: Site[];
  #installed = false;

  private constructor(readonly kind: AdapterKind, sites: Site[], readonly rank: number) {
    if (!sites.length) {
      throw new Error(
        kind === "lora"
          ? "--adapter lora: the model has no pointwise (1x1) convolution to adapt"
          : "--adapter conv1x1: the model has no block ending in an ungrouped convolution",
      );
    }
    this.#sites = sites;
    this.#install();
  }

  /** LoRA on every pointwise conv of `model`. */
  static lora(model: Module, o: AdapterOptions = {}): AdapterSet {
    const rank = o.rank ?? 4;
    if (!(Number.isInteger(rank) && rank >= 1)) {
      throw new Error(`--lora-rank must be a positive integer, got ${rank}`);
    }
    const rng = new Rng(o.seed ?? 0);
    const convs = model.namedModules().map(([, m]) => m)
      .filter((m): m is Conv2d => m instanceof Conv2d && isPointwise(m) && !o.exclude?.has(m));
    const sites = convs.map((conv): Site => {
      const [cout, cin] = conv.weight.shape;
      const r = Math.min(rank, cout, cin);
      // LoRA's A: random (kaiming-uniform's bound for fan-in cin), B: zero.
      const a = rng.uniforms(r * cin, -1 / Math.sqrt(cin), 1 / Math.sqrt(cin));
      const b = new Float32Array(cout * r);
      return {
        conv,
        params: [param(conv, a, [r, cin]), param(conv, b, [cout, r])],
        init: [a.slice(), b.slice()],
      };
    });
    return new AdapterSet("lora", sites, rank);
  }

  /** A zero 1x1 residual adapter after the last conv of every block of `model` (structure.ts). */
  static conv1x1(model: Module, o: AdapterOptions = {}): AdapterSet {
    const sites: Site[] = [];
    for (const block of structureOf(model).blocks) {
      const conv = block.convs.at(-1);
      if (!conv || conv.groups !== 1 || o.exclude?.has(conv) || sites.some((s) => s.conv === conv)) continue;
      const c = conv.weight.shape[0];
      const a = new Float32Array(c * c);
      sites.push({ conv, params: [param(conv, a, [c, c, 1, 1])], init: [a.slice()] });
    }
    return new AdapterSet("conv1x1", sites, 0);
  }

  static create(kind: AdapterKind, model: Module, o: AdapterOptions = {}): AdapterSet {
    return kind === "lora" ? AdapterSet.lora(model, o) : AdapterSet.conv1x1(model, o);
  }

  /** Every adapter parameter (they train; the backbone does not). */
  get params(): Tensor[] {
    return this.#sites.flatMap((s) => s.params);
  }

  /** Convs that carry an adapter. */
  get convs(): Conv2d[] {
    return this.#sites.map((s) => s.conv);
  }

  get bytes(): number {
    return this.params.reduce((s, p) => s + p.storage.bytes, 0);
  }

  #install(): void {
    for (const s of this.#sites) {
      const conv = s.conv;
      const forward = this.kind === "lora" ? (x: Tensor) => loraForward(conv, s.params, x) : (x: Tensor) => {
        const u = Conv2d.prototype.forward.call(conv, x);
        const v = conv2d(u, s.params[0]);
        const y = add(u, v);
        u.dispose();
        v.dispose();
        return y;
      };
      Object.defineProperty(conv, "forward", { value: forward, configurable: true, writable: true });
    }
    this.#installed = true;
  }

  #uninstall(): void {
    if (!this.#installed) return;
    for (const s of this.#sites) delete (s.conv as { forward?: unknown }).forward;
    this.#installed = false;
  }

  /** Back to the initial values: the model computes exactly what the source does. */
  reset(): void {
    for (const s of this.#sites) s.params.forEach((p, i) => p.backend.write(p.storage, s.init[i]));
  }

  /** Host copies keyed `PREFIX.<site>.<A|B>`. */
  async state(prefix: string): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    for (const [i, s] of this.#sites.entries()) {
      for (const [j, p] of s.params.entries()) out[`${prefix}.${i}.${"AB"[j]}`] = await host(p);
    }
    return out;
  }

  loadState(prefix: string, state: Record<string, ArrayLike<number>>): void {
    for (const [i, s] of this.#sites.entries()) {
      for (const [j, p] of s.params.entries()) {
        const v = state[`${prefix}.${i}.${"AB"[j]}`];
        if (v === undefined) continue;
        if (v.length !== p.size) {
          throw new Error(`adapter "${prefix}.${i}.${"AB"[j]}" has ${v.length} values, expected ${p.size}`);
        }
        p.backend.write(p.storage, v);
      }
    }
  }

  /**
   * Writes the folded weights into the adapted convs and takes the adapters out of their forward (the
   * model computes the same, as a plain graph: what an export writes). Returns the undo.
   */
  async fold(): Promise<() => void> {
    const saved: [Tensor, Float32Array][] = [];
    for (const s of this.#sites) {
      const w = s.conv.weight, bias = s.conv.bias;
      const wv = await host(w);
      saved.push([w, wv.slice()]);
      if (this.kind === "lora") {
        const [a, b] = await Promise.all(s.params.map(host));
        const [cout, cin] = w.shape, r = s.params[0].shape[0];
        for (let o = 0; o < cout; o++) {
          for (let i = 0; i < cin; i++) {
            let d = 0;
            for (let k = 0; k < r; k++) d += b[o * r + k] * a[k * cin + i];
            wv[o * cin + i] += d;
          }
        }
      } else {
        const a = await host(s.params[0]);
        const c = w.shape[0], per = w.size / c;
        const mix = (v: Float32Array, width: number) => {
          const out = v.slice();
          for (let o = 0; o < c; o++) {
            for (let j = 0; j < c; j++) {
              const k = a[o * c + j];
              if (k !== 0) { for (let e = 0; e < width; e++) out[o * width + e] += k * v[j * width + e]; }
            }
          }
          return out;
        };
        wv.set(mix(wv, per));
        if (bias) {
          const bv = await host(bias);
          saved.push([bias, bv.slice()]);
          bias.backend.write(bias.storage, mix(bv, 1));
        }
      }
      w.backend.write(w.storage, wv);
    }
    this.#uninstall();
    return () => {
      for (const [t, v] of saved) t.backend.write(t.storage, v);
      this.#install();
    };
  }

  /** Takes the adapters out of the model and frees them. */
  dispose(): void {
    this.#uninstall();
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
      p.dispose();
    }
  }
}

/** conv(x, W + B A): the update merged into the weight costs Cout x Cin x r per forward, not per pixel. */
function loraForward(conv: Conv2d, [a, b]: Tensor[], x: Tensor): Tensor {
  const [cout, cin, kh, kw] = conv.weight.shape;
  const ba = matmul(b, a);
  const delta = reshape(ba, [cout, cin, kh, kw]);
  ba.dispose();
  // alpha = r: the update's scale does not change with the rank (LoRA's alpha / r = 1).
  const w = add(conv.weight, delta);
  delta.dispose();
  const y = conv2d(x, w, {
    bias: conv.bias,
    stride: conv.stride,
    padding: conv.padding,
    dilation: conv.dilation,
    groups: conv.groups,
  });
  w.dispose();
  return y;
}
