/**
 * A device copy of every normalisation layer's state (BN affine and statistics, LayerNorm affine) of a
 * model: what adaptation changes, so a teacher (RoTTA) or an adapter slot can keep its own version of it beside the shared, frozen
 * backbone, and swap it in to run the model.
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, type LayerNorm } from "../nn/layers.ts";
import type { Category } from "../memory/ledger.ts";
import { copyInto, moveToward } from "../ops/copy.ts";
import { keep, Tensor } from "../tensor.ts";
import { normLayers } from "./tta.ts";

type Norm = BatchNorm2d | LayerNorm;

/** The tensors of a norm layer in a fixed order: weight, bias (affine), then a BN's running mean and var. */
function tensorsOf(m: Norm): Tensor[] {
  if (m instanceof BatchNorm2d) return [m.weight, m.bias, m.runningMean, m.runningVar];
  return [m.weight, m.bias].filter((t): t is Tensor => t !== null);
}

export class BnStore {
  readonly #layers: Norm[];
  readonly #tensors: Tensor[][];

  private constructor(layers: Norm[], tensors: Tensor[][]) {
    this.#layers = layers;
    this.#tensors = tensors;
  }

  /** A store holding a copy of `model`'s current BN state. */
  static of(model: Module, category: Category = "optimizer"): BnStore {
    const layers = normLayers(model).map(([, m]) => m);
    const tensors = layers.map((bn) =>
      tensorsOf(bn).map((t) => keep(Tensor.empty(t.backend, t.shape, { category })))
    );
    const store = new BnStore(layers, tensors);
    store.copyFrom();
    return store;
  }

  /** Device bytes of the store. */
  get bytes(): number {
    return this.#tensors.flat().reduce((s, t) => s + t.storage.bytes, 0);
  }

  /** The model's BN state into this store. */
  copyFrom(): void {
    this.#layers.forEach((bn, i) => tensorsOf(bn).forEach((t, j) => copyInto(t, this.#tensors[i][j])));
  }

  /** This store into the model's BN layers. */
  copyTo(): void {
    this.#layers.forEach((bn, i) => tensorsOf(bn).forEach((t, j) => copyInto(this.#tensors[i][j], t)));
  }

  /** Also copy another store's values into this one (same model). */
  copyFromStore(other: BnStore): void {
    this.#tensors.forEach((ts, i) => ts.forEach((t, j) => copyInto(other.#tensors[i][j], t)));
  }

  /**
   * The affine part moves toward the model's: a <- a + nu (model - a) (a mean teacher, Tarvainen & Valpola
   * 2017); the statistics are left to the forwards that run with this store swapped in.
   */
  emaAffineFrom(nu: number): void {
    this.#layers.forEach((bn, i) => {
      // The affine part: a BN's first two tensors, a LayerNorm's (it has no statistics).
      for (const j of [0, 1].filter((j) => j < this.#tensors[i].length)) {
        moveToward(this.#tensors[i][j], tensorsOf(bn)[j], nu);
      }
    });
  }

  /** Host copies keyed `PREFIX.layer.{weight,bias,running_mean,running_var}` (checkpoints). */
  async state(prefix: string): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    const names = ["weight", "bias", "running_mean", "running_var"];
    for (const [i, ts] of this.#tensors.entries()) {
      for (const [j, t] of ts.entries()) {
        const d = await t.data();
        out[`${prefix}.${i}.${names[j]}`] = d instanceof Float32Array ? d : Float32Array.from(d);
      }
    }
    return out;
  }

  loadState(prefix: string, state: Record<string, ArrayLike<number>>): void {
    const names = ["weight", "bias", "running_mean", "running_var"];
    this.#tensors.forEach((ts, i) =>
      ts.forEach((t, j) => {
        const v = state[`${prefix}.${i}.${names[j]}`];
        if (v === undefined) return;
        if (v.length !== t.size) {
          throw new Error(`BnStore: "${prefix}.${i}.${names[j]}" has ${v.length} values, expected ${t.size}`);
        }
        t.backend.write(t.storage, v);
      })
    );
  }

  dispose(): void {
    for (const t of this.#tensors.flat()) t.dispose();
  }
}
