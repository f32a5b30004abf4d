/**
 * The collapse guard for long continual runs: entropy minimisation can drift into mapping every input to a
 * few classes (a degenerate, confident solution). The guard watches the diversity of recent predictions —
 * the effective number of classes, exp(entropy of the prediction histogram) over a window of batches — and
 * compares it with the diversity of the first window. A stream naturally dominated by one class has a low
 * reference too, so only a sharp drop triggers a reset.
 */

export interface CollapseOptions {
  /** Batches per window (5). */
  window?: number;
  /** Trigger when effective classes fall below this fraction of the reference window's (0.4). */
  ratio?: number;
}

export class CollapseGuard {
  #window: number;
  #ratio: number;
  #counts: Int32Array[] = [];
  #reference: number | null = null;

  constructor(readonly classes: number, options: CollapseOptions = {}) {
    this.#window = options.window ?? 5;
    this.#ratio = options.ratio ?? 0.4;
  }

  /** Feed one batch's predictions; returns why the model collapsed, or null. */
  observe(predictions: Int32Array): string | null {
    const counts = new Int32Array(this.classes);
    for (const p of predictions) counts[p]++;
    this.#counts.push(counts);
    if (this.#counts.length < this.#window) return null;
    if (this.#counts.length > this.#window) this.#counts.shift();
    const eff = effectiveClasses(this.#counts, this.classes);
    if (this.#reference === null) {
      this.#reference = eff;
      return null;
    }
    if (eff < this.#ratio * this.#reference) {
      const ref = this.#reference;
      this.#counts = [];
      return `collapse guard: predictions use ${eff.toFixed(2)} effective classes, below ${this.#ratio} x ${
        ref.toFixed(2)
      } of the first window`;
    }
    return null;
  }

  clear(): void {
    this.#counts = [];
  }
}

/** exp(H) of the class histogram summed over the window: 1 for a single class, C for a uniform spread. */
export function effectiveClasses(windows: Int32Array[], classes: number): number {
  const total = new Float64Array(classes);
  let n = 0;
  for (const w of windows) {
    for (let c = 0; c < classes; c++) {
      total[c] += w[c];
      n += w[c];
    }
  }
  if (n === 0) return 0;
  let h = 0;
  for (const t of total) if (t > 0) h -= (t / n) * Math.log(t / n);
  return Math.exp(h);
}
