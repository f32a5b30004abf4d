/**
 * The stored states of the adapter bank: one device buffer per slot (ledger category "adapters") holding
 * everything a method's core keeps for one domain — BN statistics and affine, trainable parameters, optimizer
 * moments, RoTTA's teacher, adapter weights — packed in one flat float32 tensor, so that swapping a domain in
 * or out is one write and one read whatever the number of layers. Plus what the selection needs to know about
 * each slot: frames it answered, when it was last used, when it was opened.
 */
import type { Backend } from "../../backend/backend.ts";
import { keep, Tensor } from "../../tensor.ts";

export interface SlotInfo {
  /** Frames this slot answered. */
  frames: number;
  /** Stream frame at which it last answered. */
  lastUsed: number;
  /** Stream frame at which it was opened. */
  opened: number;
}

interface Stored {
  tensor: Tensor;
  /** [name, offset, length] of each state entry in the flat tensor, in the state's key order. */
  layout: [string, number, number][];
}

export class SlotStore {
  readonly #stored: (Stored | null)[];
  readonly info: (SlotInfo | null)[];

  constructor(readonly backend: Backend, readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity >= 2)) {
      throw new Error(
        `adapter bank: --bank-slots must be an integer >= 2 (the source and one domain), got ${capacity}`,
      );
    }
    this.#stored = new Array(capacity).fill(null);
    this.info = new Array(capacity).fill(null);
  }

  /** Ids of open slots. */
  open(): number[] {
    return this.info.flatMap((s, i) => (s ? [i] : []));
  }

  /** The first free id, or -1 when every slot is open. */
  free(): number {
    return this.info.findIndex((s) => s === null);
  }

  /** Device bytes of one slot, and of all. */
  bytesOf(id: number): number {
    return this.#stored[id]?.tensor.storage.bytes ?? 0;
  }

  get bytes(): number {
    return this.#stored.reduce((s, t) => s + (t?.tensor.storage.bytes ?? 0), 0);
  }

  /** Stores `state` in slot `id` (its buffer is reused while the state's size stays the same). */
  write(id: number, state: Record<string, Float32Array>): void {
    const layout: [string, number, number][] = [];
    let size = 0;
    for (const [name, v] of Object.entries(state)) {
      layout.push([name, size, v.length]);
      size += v.length;
    }
    const flat = new Float32Array(size);
    for (const [name, at] of layout) flat.set(state[name], at);
    let s = this.#stored[id];
    if (s && s.tensor.size !== size) {
      s.tensor.dispose();
      s = null;
    }
    const tensor = s?.tensor ??
      keep(Tensor.empty(this.backend, [Math.max(size, 1)], { category: "adapters" }));
    if (size) this.backend.write(tensor.storage, flat);
    this.#stored[id] = { tensor, layout };
  }

  /** The state stored in slot `id`. */
  async read(id: number): Promise<Record<string, Float32Array>> {
    const s = this.#stored[id];
    if (!s) throw new Error(`adapter bank: slot ${id} holds no state`);
    const d = await s.tensor.data();
    const flat = d instanceof Float32Array ? d : Float32Array.from(d);
    const out: Record<string, Float32Array> = {};
    for (const [name, at, n] of s.layout) out[name] = flat.slice(at, at + n);
    return out;
  }

  has(id: number): boolean {
    return this.#stored[id] !== null;
  }

  /** Frees slot `id`. */
  close(id: number): void {
    this.#stored[id]?.tensor.dispose();
    this.#stored[id] = null;
    this.info[id] = null;
  }

  dispose(): void {
    for (let i = 0; i < this.capacity; i++) this.close(i);
  }
}

/**
 * The frame-weighted mean of two slot states (a merge): every entry that both hold, BN statistics, affine,
 * optimizer moments and step counts alike; an entry only one holds is kept as it is.
 */
export function mergeStates(
  a: Record<string, Float32Array>,
  wa: number,
  b: Record<string, Float32Array>,
  wb: number,
): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  const t = wa + wb > 0 ? wb / (wa + wb) : 0.5;
  for (const [k, v] of Object.entries(a)) {
    const u = b[k];
    out[k] = u && u.length === v.length ? v.map((x, i) => x + t * (u[i] - x)) : v;
  }
  for (const [k, v] of Object.entries(b)) if (!(k in out)) out[k] = v;
  return out;
}
