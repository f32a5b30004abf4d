/**
 * The memory ledger: live and peak bytes of every backend allocation, by category.
 *
 * Its peak is the "measured memory" every report, benchmark and governor check uses. Backends call
 * `allocated`/`freed`/`moved`; callers read `live`, `peak` and open windows with `resetPeak()` to measure a
 * single step.
 */

/**
 * `bank`: the frames a streaming method keeps to adapt on (src/methods/memory_bank.ts). `adapters`: the
 * adapter bank's stored per-domain states (src/methods/bank/slots.ts), one slot per domain.
 */
export const CATEGORIES = [
  "weights",
  "activations",
  "saved",
  "grads",
  "optimizer",
  "workspace",
  "bank",
  "adapters",
] as const;
export type Category = typeof CATEGORIES[number];

export type ByCategory = Record<Category, number>;

function zeros(): ByCategory {
  return { weights: 0, activations: 0, saved: 0, grads: 0, optimizer: 0, workspace: 0, bank: 0, adapters: 0 };
}

export interface LedgerSnapshot {
  liveBytes: number;
  peakBytes: number;
  live: ByCategory;
  /** Peak of each category on its own (they need not peak together). */
  peak: ByCategory;
  /** Breakdown by category at the moment the total peaked. */
  atPeak: ByCategory;
  /** Peak bytes of saved activations per tag (e.g. block name), when callers tag their saves. */
  savedByTag: Record<string, number>;
}

export class Ledger {
  #live = zeros();
  #peak = zeros();
  #atPeak = zeros();
  #liveTotal = 0;
  #peakTotal = 0;
  /** The high-water mark since the last takeRecentPeak() (a timeline's per-chunk peak; the window stays). */
  #recentPeak = 0;
  #savedTag = new Map<string, { live: number; peak: number }>();

  allocated(bytes: number, category: Category, tag?: string): void {
    this.#live[category] += bytes;
    this.#liveTotal += bytes;
    if (this.#liveTotal > this.#recentPeak) this.#recentPeak = this.#liveTotal;
    if (this.#live[category] > this.#peak[category]) this.#peak[category] = this.#live[category];
    if (this.#liveTotal > this.#peakTotal) {
      this.#peakTotal = this.#liveTotal;
      this.#atPeak = { ...this.#live };
    }
    if (category === "saved" && tag !== undefined) {
      const t = this.#savedTag.get(tag) ?? { live: 0, peak: 0 };
      t.live += bytes;
      if (t.live > t.peak) t.peak = t.live;
      this.#savedTag.set(tag, t);
    }
  }

  freed(bytes: number, category: Category, tag?: string): void {
    this.#live[category] -= bytes;
    this.#liveTotal -= bytes;
    if (this.#live[category] < 0 || this.#liveTotal < 0) {
      throw new Error(`Ledger underflow: freed ${bytes} bytes of "${category}" that were never allocated`);
    }
    if (category === "saved" && tag !== undefined) {
      const t = this.#savedTag.get(tag);
      if (t) t.live -= bytes;
    }
  }

  /** Recount bytes from one category to another (e.g. an activation kept for backward becomes "saved"). */
  moved(bytes: number, from: Category, to: Category, tag?: string): void {
    this.freed(bytes, from);
    this.allocated(bytes, to, tag);
  }

  /** Start a new measurement window: peaks restart from what is live now. */
  resetPeak(): void {
    this.#peak = { ...this.#live };
    this.#atPeak = { ...this.#live };
    this.#peakTotal = this.#liveTotal;
    for (const t of this.#savedTag.values()) t.peak = t.live;
  }

  get liveBytes(): number {
    return this.#liveTotal;
  }

  get peakBytes(): number {
    return this.#peakTotal;
  }

  /** The most live bytes since the previous call (the report's per-chunk peak); peakBytes is not touched. */
  takeRecentPeak(): number {
    const p = Math.max(this.#recentPeak, this.#liveTotal);
    this.#recentPeak = this.#liveTotal;
    return p;
  }

  snapshot(): LedgerSnapshot {
    const savedByTag: Record<string, number> = {};
    for (const [k, v] of this.#savedTag) savedByTag[k] = v.peak;
    return {
      liveBytes: this.#liveTotal,
      peakBytes: this.#peakTotal,
      live: { ...this.#live },
      peak: { ...this.#peak },
      atPeak: { ...this.#atPeak },
      savedByTag,
    };
  }
}
