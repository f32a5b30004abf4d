/**
 * The collapse guard of a streaming method (streaming.ts). Entropy minimisation can drift, slowly, into
 * mapping every input to a few classes. Two views catch it:
 *
 * - the answers: the effective number of classes, exp(entropy of the prediction histogram), over a window of
 *   frames against the first window's. A stream that shows one class for minutes has a low reference too, so
 *   this view only sees collapse on streams whose classes mix;
 * - the bank: the memory bank is balanced over pseudo-labels whatever the stream's order, so the learning
 *   model's predictions on a minibatch of it should spread over as many classes as the bank's labels do.
 *   When they stay below `ratio` of them for `patience` learning steps in a row, the model has collapsed even
 *   if the camera has shown one class all along.
 *
 * On collapse the method goes back to the last healthy state — a snapshot taken every `snapshotEvery`
 * learning steps while both views were healthy; the older of the last two, since a slow collapse may already
 * be under way in the newer — not to the source, so what it learned before the collapse is kept.
 */
import type { LearnResult, StreamingMethod } from "./streaming.ts";

export interface CollapseOptions {
  /** Frames per window of answers (256). */
  windowFrames?: number;
  /** Collapse below this fraction of the reference's effective classes (0.4). */
  ratio?: number;
  /** Learning steps in a row the bank view must fail (2). */
  patience?: number;
  /** Learning steps between snapshots of a healthy state (8). */
  snapshotEvery?: number;
}

export class CollapseGuard {
  readonly #windowFrames: number;
  readonly #ratio: number;
  readonly #patience: number;
  readonly #snapshotEvery: number;
  #window: number[] = [];
  #reference: number | null = null;
  #failing = 0;
  #learned = 0;
  /** The last two healthy snapshots, oldest first. */
  #healthy: Record<string, Float32Array>[] = [];

  constructor(options: CollapseOptions = {}) {
    this.#windowFrames = options.windowFrames ?? 256;
    this.#ratio = options.ratio ?? 0.4;
    this.#patience = options.patience ?? 2;
    this.#snapshotEvery = options.snapshotEvery ?? 8;
  }

  /** After a learning step; returns why the method collapsed (and restores it), or null. */
  async afterLearn(
    m: StreamingMethod,
    r: LearnResult,
    bankLabels: Int32Array,
    classes: number,
  ): Promise<string | null> {
    this.#learned++;
    if (r.predictions && bankLabels.length === r.predictions.length) {
      const labels = effectiveClasses([histogram(bankLabels, classes)], classes);
      const predicted = effectiveClasses([histogram(r.predictions, classes)], classes);
      this.#failing = labels > 1 && predicted < this.#ratio * labels ? this.#failing + 1 : 0;
      if (this.#failing >= this.#patience) {
        return this.#collapse(
          m,
          `predictions on the memory bank use ${
            predicted.toFixed(2)
          } effective classes, below ${this.#ratio} x ` +
            `the ${labels.toFixed(2)} of its labels`,
        );
      }
    }
    if (this.#failing === 0 && this.#learned % this.#snapshotEvery === 0) {
      this.#healthy.push(await m.coreState());
      if (this.#healthy.length > 2) this.#healthy.shift();
    }
    return null;
  }

  /** After answering a chunk; returns why the method collapsed (and restores it), or null. */
  afterAnswers(m: StreamingMethod, predictions: Int32Array, classes: number): string | null {
    for (const p of predictions) this.#window.push(p);
    if (this.#window.length < this.#windowFrames) return null;
    const window = this.#window.splice(0, this.#window.length);
    const eff = effectiveClasses([histogram(Int32Array.from(window), classes)], classes);
    if (this.#reference === null) {
      this.#reference = eff;
      return null;
    }
    if (eff < this.#ratio * this.#reference) {
      return this.#collapse(
        m,
        `answers use ${
          eff.toFixed(2)
        } effective classes over ${window.length} frames, below ${this.#ratio} x ` +
          `the ${this.#reference.toFixed(2)} of the first window`,
      );
    }
    return null;
  }

  /** Forget windows and snapshots (after a reset to the source). */
  forget(): void {
    this.#window = [];
    this.#reference = null;
    this.#failing = 0;
    this.#healthy = [];
  }

  #collapse(m: StreamingMethod, why: string): string {
    const healthy = this.#healthy[0];
    this.#window = [];
    this.#failing = 0;
    if (healthy) {
      m.restoreHealthy(healthy);
      this.#healthy = [healthy];
      return `collapse guard: ${why}; restored the last healthy state`;
    }
    m.reset();
    return `collapse guard: ${why}; no healthy state yet, reset to the source`;
  }
}

function histogram(labels: Int32Array, classes: number): Int32Array {
  const h = new Int32Array(classes);
  for (const l of labels) if (l >= 0 && l < classes) h[l]++;
  return h;
}

/** exp(H) of the class histogram summed over the windows: 1 for a single class, C for a uniform spread. */
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
