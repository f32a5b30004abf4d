/**
 * Which slot answers the next chunk, from its frames' keys alone (keys.ts): stay, switch to a known slot,
 * or open one for a domain no slot knows. Host arithmetic on a few numbers per frame.
 *
 * Hysteresis, so that one odd frame never moves the bank:
 * - switching needs the last `confirm` frames (or the whole chunk, if larger) to lie farther than
 *   `threshold` from the active slot, within it of another slot, nearer to that slot than to the active one,
 *   and every one of them (`votes`) to pick that slot frame by frame (a majority, once the evidence is a whole
 *   window);
 * - opening needs `window` frames in a row (counted from the first frame that left the active slot: a window
 *   that straddles the change would be a mixture of two domains) whose key, outliers left out, is farther
 *   than `threshold` from every slot. At chunk 1 the stream is answered by the active slot meanwhile; a chunk
 *   of `window` frames or more decides at once, before it is answered.
 * While a window matches the active slot, its frames refine that slot's key (counts capped at `memory`
 * frames, so a slowly drifting domain is followed).
 */
import {
  concatMoments,
  emptyMoments,
  frameDistance,
  type FrameMoments,
  type Key,
  keyDistance,
  mergeKey,
  pool,
  robustPool,
  rowsOf,
} from "./keys.ts";

/**
 * Symmetric-KL distance within which frames belong to a slot. No one value serves every camera on MNIST: a
 * window of one digit class of clean digits lies up to 0.35 from the source's key, fog and brightness 0.22
 * from each other. At 0.1 (the default) conditions stay apart, but a camera that shows one class at a time
 * at chunk 1 opens slots for classes (clean sorted digits: 6.4% error against 2.0% without the bank); at
 * 0.3 it does not, but fog and brightness share a slot (a return to fog starts 12 points worse than its last
 * visit ended). docs/adapters.md has both runs.
 */
export const DEFAULT_THRESHOLD = 0.1;

export interface SelectorOptions {
  /** Frames pooled before a slot opens for an unknown domain (16). */
  window?: number;
  /** Frames that must agree before a switch to a known slot (4). */
  confirm?: number;
  /** Largest symmetric KL (mean over channels) at which a window belongs to a slot (0.1). */
  threshold?: number;
  /**
   * Share of the confirming frames that must pick the same slot one by one (1: all of them; two domains whose
   * keys lie a little over the threshold apart are told apart by 4 frames only most of the time, and a wrong
   * switch costs a switch back).
   */
  votes?: number;
  /** Frames a key remembers (2048). */
  memory?: number;
}

export type Decision =
  | { action: "stay"; drift: number | null }
  | { action: "switch"; to: number; distance: number; drift: number }
  | { action: "open"; key: Key; nearest: number; distance: number; drift: number };

export class DriftSelector {
  readonly window: number;
  readonly confirm: number;
  readonly threshold: number;
  readonly votes: number;
  readonly memory: number;
  /** Slot id -> key. */
  readonly keys = new Map<number, Key>();
  /** The last frames since the last switch (at most max(window, chunk)). */
  #recent: FrameMoments;
  /** How many of the recent frames came after the active slot stopped matching (0: it matches). */
  #departed = 0;

  constructor(readonly channels: number, options: SelectorOptions = {}) {
    this.window = options.window ?? 16;
    this.confirm = options.confirm ?? 4;
    this.threshold = options.threshold ?? DEFAULT_THRESHOLD;
    this.votes = options.votes ?? 1;
    this.memory = options.memory ?? 2048;
    for (const [k, v] of Object.entries({ window: this.window, confirm: this.confirm })) {
      if (!(Number.isInteger(v) && v >= 1)) {
        throw new Error(`adapter bank: ${k} must be a positive integer, got ${v}`);
      }
    }
    if (!(this.threshold > 0)) throw new Error(`adapter bank: threshold must be > 0, got ${this.threshold}`);
    this.#recent = emptyMoments(channels);
  }

  /** Where the chunk m goes, with `active` answering now; stays refine the active key. */
  observe(m: FrameMoments, active: number): Decision {
    const cap = Math.max(this.window, m.n);
    const all = concatMoments(this.#recent, m);
    this.#recent = all.n > cap ? rowsOf(all, all.n - cap, all.n) : all;
    const recent = this.#recent;
    if (recent.n < this.confirm) return { action: "stay", drift: null };
    const evidence = rowsOf(recent, recent.n - Math.min(Math.max(this.confirm, m.n), recent.n), recent.n);
    const key = robustPool(evidence);
    const own = this.keys.get(active);
    if (!own) throw new Error(`adapter bank: the active slot ${active} has no key`);
    const drift = keyDistance(key, own);
    if (drift <= this.threshold) {
      this.#departed = 0;
      this.keys.set(active, mergeKey(own, pool(m), this.memory));
      return { action: "stay", drift };
    }
    this.#departed = Math.min(this.#departed + m.n, recent.n);
    const [to, distance] = this.#nearest(key, active);
    // A window's worth of evidence is its own protection (its key leaves odd frames out): a majority will do.
    const votes = evidence.n >= this.window ? Math.min(this.votes, 0.5) : this.votes;
    if (to >= 0 && distance <= this.threshold && distance < drift && this.#share(evidence, to) >= votes) {
      return { action: "switch", to, distance, drift };
    }
    if (this.#departed >= this.window) {
      const fresh = robustPool(rowsOf(recent, recent.n - this.#departed, recent.n));
      const [nearest, d] = this.#nearest(fresh, -1);
      if (d > this.threshold) return { action: "open", key: fresh, nearest, distance: d, drift };
    }
    return { action: "stay", drift };
  }

  /** The decision was carried out: `to` answers from now on and the next decision waits for fresh frames. */
  moved(to: number, key?: Key): void {
    if (key) this.keys.set(to, key);
    this.#recent = emptyMoments(this.channels);
    this.#departed = 0;
  }

  /** The nearest slot to `key` other than `except`, and its distance ([-1, Infinity] when none). */
  #nearest(key: Key, except: number): [number, number] {
    let best = -1, d = Infinity;
    for (const [id, k] of this.keys) {
      if (id === except) continue;
      const v = keyDistance(key, k);
      if (v < d) [best, d] = [id, v];
    }
    return [best, d];
  }

  /** Share of the frames whose own nearest slot is `slot`. */
  #share(m: FrameMoments, slot: number): number {
    let hits = 0;
    for (let i = 0; i < m.n; i++) {
      let best = -1, d = Infinity;
      for (const [id, k] of this.keys) {
        const v = frameDistance(m, i, k);
        if (v < d) [best, d] = [id, v];
      }
      if (best === slot) hits++;
    }
    return m.n ? hits / m.n : 0;
  }

  /** Distance of the recent frames to a slot's key (null before there are any). */
  distanceTo(slot: number): number | null {
    const k = this.keys.get(slot);
    return k && this.#recent.n ? keyDistance(pool(this.#recent), k) : null;
  }

  /** Forget every key and frame. */
  clear(): void {
    this.keys.clear();
    this.moved(-1);
  }

  /** Keys, recent frames and the departure count, for checkpoints (float32 throughout: exact). */
  state(prefix: string): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {
      [`${prefix}.recent.mu`]: this.#recent.mu.slice(),
      [`${prefix}.recent.sq`]: this.#recent.sq.slice(),
      [`${prefix}.departed`]: Float32Array.of(this.#departed),
    };
    for (const [id, k] of this.keys) {
      out[`${prefix}.key.${id}`] = Float32Array.of(k.count, ...k.mu, ...k.sq);
    }
    return out;
  }

  loadState(prefix: string, state: Record<string, Float32Array>): void {
    const c = this.channels;
    this.keys.clear();
    for (const [name, v] of Object.entries(state)) {
      const m = name.startsWith(`${prefix}.key.`) ? /\.(\d+)$/.exec(name) : null;
      if (!m) continue;
      if (v.length !== 1 + 2 * c) {
        throw new Error(`adapter bank: key "${name}" has ${v.length} values, expected ${1 + 2 * c}`);
      }
      this.keys.set(Number(m[1]), { count: v[0], mu: v.slice(1, 1 + c), sq: v.slice(1 + c) });
    }
    const mu = state[`${prefix}.recent.mu`] ?? new Float32Array(0);
    const sq = state[`${prefix}.recent.sq`] ?? new Float32Array(0);
    if (mu.length % c || mu.length !== sq.length) {
      throw new Error("adapter bank: recent frames do not fit the keys");
    }
    this.#recent = { n: mu.length / c, channels: c, mu: mu.slice(), sq: sq.slice() };
    this.#departed = state[`${prefix}.departed`]?.[0] ?? 0;
  }
}
