/**
 * Saved-activation codecs: how a tensor kept for backward is stored, and so what the ledger counts.
 *
 * fp32 keeps the tensor itself (its storage is recounted as "saved" while any node holds it). The 1-bit
 * mask codec (saveMask) keeps only `lo < x < hi` per element, 32 per u32 word: exact for ReLU/ReLU6/Clip
 * backward. fp16/int8/int4 codecs register here with the memory issue.
 */
import type { Storage } from "../backend/backend.ts";
import { activeTag, type Saved } from "../autograd/tape.ts";
import { Tensor } from "../tensor.ts";

export type CodecName = "fp32" | "fp16" | "int8" | "int4";

export interface SavedTensor extends Saved {
  /** A tensor with the saved values (decoded if the codec is lossy). The caller disposes it. */
  get(): Tensor;
}

export interface Codec {
  readonly name: CodecName;
  encode(t: Tensor): SavedTensor;
}

// How many saved handles hold each storage, so a shared storage is counted as "saved" exactly once.
const savedHolders = new WeakMap<Storage, number>();

export const fp32Codec: Codec = {
  name: "fp32",
  encode(t: Tensor): SavedTensor {
    const { backend, storage, shape } = t;
    backend.retain(storage);
    const holders = savedHolders.get(storage) ?? 0;
    const counted = storage.category === "activations" || storage.category === "workspace" ||
      storage.category === "saved";
    if (holders === 0 && counted && storage.category !== "saved") backend.recategorize(storage, "saved", activeTag());
    savedHolders.set(storage, holders + 1);
    let released = false;
    return {
      bytes: counted && holders === 0 ? storage.bytes : 0,
      get: () => {
        if (released) throw new Error("Saved tensor used after release");
        backend.retain(storage);
        return new Tensor(backend, storage, shape);
      },
      release: () => {
        if (released) return;
        released = true;
        const left = (savedHolders.get(storage) ?? 1) - 1;
        savedHolders.set(storage, left);
        // Still alive for its forward owner: count it as an activation again.
        if (left === 0 && storage.refs > 1 && storage.category === "saved") backend.recategorize(storage, "activations");
        backend.release(storage);
      },
    };
  },
};

const codecs = new Map<CodecName, Codec>([["fp32", fp32Codec]]);

export function registerCodec(codec: Codec): void {
  codecs.set(codec.name, codec);
}

export function codecByName(name: CodecName): Codec {
  const c = codecs.get(name);
  if (!c) throw new Error(`Unknown saved-activation codec "${name}" (known: ${[...codecs.keys()].join(", ")})`);
  return c;
}

/**
 * The policy choosing a codec for each saved float tensor. `kind` says what the op keeps: "xhat" (BN's
 * normalised input), "input" (a conv/linear input for its weight gradient), "other".
 */
export interface SavePolicy {
  codecFor(op: string, kind: "xhat" | "input" | "other"): CodecName;
}

let policy: SavePolicy = { codecFor: () => "fp32" };

export function setSavePolicy(p: SavePolicy): SavePolicy {
  const prev = policy;
  policy = p;
  return prev;
}

export function saveFloat(t: Tensor, op: string, kind: "xhat" | "input" | "other"): SavedTensor {
  return codecByName(policy.codecFor(op, kind)).encode(t);
}

/** A 1-bit mask of `lo < x < hi`, kept for an activation's backward. */
export interface SavedMask extends Saved {
  readonly storage: Storage;
  readonly n: number;
}

export const OPEN = 3.0e38;

export function saveMask(x: Tensor, lo: number, hi: number): SavedMask {
  const words = Math.ceil(x.size / 32);
  const storage = x.backend.alloc(words, { dtype: "u32", category: "saved", tag: activeTag() });
  x.backend.run("mask_pack", { x: x.storage, out: storage, attrs: { n: x.size, lo, hi } });
  let released = false;
  return {
    bytes: storage.bytes,
    storage,
    n: x.size,
    release: () => {
      if (released) return;
      released = true;
      x.backend.release(storage);
    },
  };
}
