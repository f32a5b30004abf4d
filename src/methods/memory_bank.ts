/**
 * The memory bank a streaming method adapts on (RoTTA's CSTU: category-balanced sampling with timeliness and
 * uncertainty; Yuan et al., CVPR 2023, sec. 3.3). Frames arrive one chunk at a time with their pseudo-label
 * and uncertainty (prediction entropy); the bank keeps at most `capacity` of them, at most capacity / C per
 * pseudo-class while others have room, and replaces the item with the highest heuristic score
 *
 *   score(age, u) = lambda_t / (1 + exp(-age / capacity)) + lambda_u * u / ln C
 *
 * (old and uncertain first) — only when the newcomer's own score is lower. A camera that shows one class for
 * minutes therefore cannot fill the bank with that class: its items only replace each other.
 *
 * The frames live on the device in one [capacity, C, H, W] tensor counted by the ledger as "bank"; the
 * bookkeeping (labels, uncertainties, ages) is on the host. Occupied slots are kept at the front (a removal
 * moves the last item into the hole), so a minibatch is a prefix of the tensor.
 */
import { copyInto, copyRows } from "../ops/copy.ts";
import { Tensor } from "../tensor.ts";

interface Item {
  label: number;
  uncertainty: number;
  age: number;
}

export interface BankOptions {
  /** Frames kept (RoTTA: 64). */
  capacity: number;
  lambdaT?: number;
  lambdaU?: number;
  /**
   * Take every frame while there is room, balancing only once full (default true). RoTTA's CSTU keeps a class
   * at its quota even with free room; under a strong shift the source model answers few classes, and the bank
   * would then stay a fraction full for a long time, moving the statistics from a handful of frames.
   */
  fillFirst?: boolean;
}

export class MemoryBank {
  #capacity: number;
  readonly #lambdaT: number;
  readonly #lambdaU: number;
  readonly #fillFirst: boolean;
  #items: Item[] = [];
  #frames: Tensor | null = null;
  #classes = 0;

  constructor(options: BankOptions) {
    if (!(Number.isInteger(options.capacity) && options.capacity >= 1)) {
      throw new Error(`MemoryBank: capacity must be a positive integer, got ${options.capacity}`);
    }
    this.#capacity = options.capacity;
    this.#lambdaT = options.lambdaT ?? 1;
    this.#lambdaU = options.lambdaU ?? 1;
    this.#fillFirst = options.fillFirst ?? true;
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** Keep at most n frames from now on (the first n kept, in a smaller store). */
  shrink(n: number): void {
    if (!(Number.isInteger(n) && n >= 1) || n >= this.#capacity) return;
    this.#items = this.#items.slice(0, n);
    this.#capacity = n;
    const old = this.#frames;
    if (!old) return;
    const per = old.size / old.shape[0];
    this.#frames = Tensor.empty(old.backend, [n, ...old.shape.slice(1)], { category: "bank" });
    copyInto(old, this.#frames, this.#items.length * per);
    old.dispose();
  }

  get size(): number {
    return this.#items.length;
  }

  /** Device bytes of the frame store (0 before the first frame). */
  get bytes(): number {
    return this.#frames?.storage.bytes ?? 0;
  }

  /** Pseudo-labels of the kept frames, in slot order. */
  labels(): Int32Array {
    return Int32Array.from(this.#items, (it) => it.label);
  }

  /** Ages in units of the capacity (RoTTA's timeliness input), in slot order. */
  ages(): Float64Array {
    return Float64Array.from(this.#items, (it) => it.age / this.capacity);
  }

  /** Offer rows of x [n, C, H, W] with their pseudo-labels and uncertainties, in order. */
  add(x: Tensor, labels: ArrayLike<number>, uncertainties: ArrayLike<number>, classes: number): void {
    const [n, ...frame] = x.shape;
    this.#classes ||= classes;
    if (!this.#frames) {
      this.#frames = Tensor.empty(x.backend, [this.capacity, ...frame], { category: "bank" });
    } else if (this.#frames.shape.slice(1).join() !== frame.join()) {
      throw new Error(
        `MemoryBank: frames of [${frame.join(", ")}] do not fit a bank of [${
          this.#frames.shape.slice(1).join(", ")
        }]`,
      );
    }
    const per = x.size / n;
    for (let i = 0; i < n; i++) {
      const label = labels[i], uncertainty = uncertainties[i];
      const slot = this.#place(label, this.#score(0, uncertainty));
      if (slot !== null) {
        this.#items[slot] = { label, uncertainty, age: 0 };
        copyInto(x, this.#frames, per, i * per, slot * per);
      }
      for (const it of this.#items) it.age++;
    }
  }

  /** The kept frames as [size, C, H, W] (the caller disposes it), or null when empty. */
  batch(): Tensor | null {
    const frames = this.#frames;
    if (!frames || this.size === 0) return null;
    if (this.size === this.capacity) return frames.view(frames.shape);
    return copyRows(frames, 0, this.size);
  }

  /** The bank for a checkpoint: frames, labels, uncertainties, ages, and [capacity, classes]. */
  async state(prefix: string): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {
      [`${prefix}.meta`]: Float32Array.of(this.#capacity, this.#classes),
      [`${prefix}.labels`]: Float32Array.from(this.#items, (it) => it.label),
      [`${prefix}.uncertainty`]: Float32Array.from(this.#items, (it) => it.uncertainty),
      [`${prefix}.age`]: Float32Array.from(this.#items, (it) => it.age),
    };
    const frames = this.#frames;
    if (frames && this.size) {
      const all = await frames.data();
      const per = frames.size / this.#capacity;
      out[`${prefix}.frames`] = Float32Array.from(all.subarray(0, this.size * per));
      out[`${prefix}.shape`] = Float32Array.from(frames.shape.slice(1));
    }
    return out;
  }

  /** Restores a state() of a bank with the same capacity (frames need the backend the bank will use). */
  loadState(prefix: string, state: Record<string, ArrayLike<number>>, backend: Tensor["backend"]): void {
    const meta = state[`${prefix}.meta`];
    if (!meta) return;
    if (meta[0] !== this.#capacity) {
      throw new Error(`MemoryBank: a state of capacity ${meta[0]} does not fit a bank of ${this.#capacity}`);
    }
    this.#classes = meta[1];
    const labels = state[`${prefix}.labels`],
      u = state[`${prefix}.uncertainty`],
      age = state[`${prefix}.age`];
    this.#items = Array.from(labels, (l, i) => ({ label: l, uncertainty: u[i], age: age[i] }));
    const frames = state[`${prefix}.frames`], shape = state[`${prefix}.shape`];
    if (frames && shape) {
      this.#frames?.dispose();
      this.#frames = Tensor.empty(backend, [this.#capacity, ...Array.from(shape)], { category: "bank" });
      backend.write(this.#frames.storage, frames);
    }
  }

  /** Forget every frame, as a new bank (the store stays allocated). */
  clear(): void {
    this.#items = [];
    this.#classes = 0;
  }

  dispose(): void {
    this.#frames?.dispose();
    this.#frames = null;
    this.#items = [];
  }

  #score(age: number, uncertainty: number): number {
    const c = Math.max(this.#classes, 2);
    return this.#lambdaT / (1 + Math.exp(-age / this.capacity)) + this.#lambdaU * uncertainty / Math.log(c);
  }

  /** The slot a newcomer of `label` and `score` goes to, after making room; null to drop it. */
  #place(label: number, score: number): number | null {
    if (this.#fillFirst && this.size < this.capacity) return this.size;
    const perClass = this.capacity / Math.max(this.#classes, 1);
    const counts = new Map<number, number>();
    for (const it of this.#items) counts.set(it.label, (counts.get(it.label) ?? 0) + 1);
    if ((counts.get(label) ?? 0) < perClass) {
      if (this.size < this.capacity) return this.size;
      const most = Math.max(...counts.values());
      const majority = [...counts].filter(([, k]) => k === most).map(([c]) => c);
      return this.#replace(majority, score);
    }
    return this.#replace([label], score);
  }

  /** Frees the highest-scoring item of `classes` if it scores above `score`; returns the free slot. */
  #replace(classes: number[], score: number): number | null {
    let worst = -1, worstScore = -Infinity;
    this.#items.forEach((it, i) => {
      if (!classes.includes(it.label)) return;
      const s = this.#score(it.age, it.uncertainty);
      if (s >= worstScore) {
        worst = i;
        worstScore = s;
      }
    });
    if (worst < 0) return this.size < this.capacity ? this.size : null;
    if (!(worstScore > score)) return null;
    this.#remove(worst);
    return this.size;
  }

  /** Removes slot i by moving the last item into it, so occupied slots stay a prefix. */
  #remove(i: number): void {
    const last = this.size - 1;
    if (i !== last) {
      const frames = this.#frames!;
      const b = frames.backend;
      const per = frames.size / this.capacity;
      // Through a temporary: WebGPU cannot bind one buffer as a kernel's input and its output.
      const tmp = Tensor.empty(b, [per], { category: "workspace" });
      b.run("copy", {
        x: frames.storage,
        out: tmp.storage,
        attrs: { n: per, srcOffset: last * per, dstOffset: 0 },
      });
      b.run("copy", {
        x: tmp.storage,
        out: frames.storage,
        attrs: { n: per, srcOffset: 0, dstOffset: i * per },
      });
      tmp.dispose();
      this.#items[i] = this.#items[last];
    }
    this.#items.pop();
  }
}
