/**
 * Saved-activation codecs: how a tensor kept for backward is stored, and so what the ledger counts.
 *
 * fp32 keeps the tensor itself (its storage is recounted as "saved" while any node holds it). The 1-bit
 * mask codec (saveMask) keeps only `lo < x < hi` per element, 32 per u32 word: exact for ReLU/ReLU6/Clip
 * backward. fp16/int8/int4 (codecs_quant.ts) store their own packed copy, counted at its real size.
 *
 * MobileTL (Chiang et al. 2023) step masks: under a policy that asks for them (src/memory/policy.ts "mask"),
 * hard-swish and hard-sigmoid keep a 1-bit mask instead of their fp32 input, and backward multiplies dy by
 * `scale` where the bit is set. hard-sigmoid's derivative is itself a step (1/6 on (-3, 3)), so its mask is
 * exact; hard-swish's (2x+3)/6 on [-3, 3] is replaced by the unit step at 0: 1 for x > 0, else 0 (MobileTL's
 * "signed function"; 0 is where the exact derivative crosses 1/2). docs/memory.md measures the effect.
 */
import type { Storage } from "../backend/backend.ts";
import { activeTag, type Saved } from "../autograd/tape.ts";
import { Tensor } from "../tensor.ts";
import { fp16Codec, int4Codec, int8Codec } from "./codecs_quant.ts";

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
    if (holders === 0 && counted && storage.category !== "saved") {
      backend.recategorize(storage, "saved", activeTag());
    }
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
        if (left === 0 && storage.refs > 1 && storage.category === "saved") {
          backend.recategorize(storage, "activations");
        }
        backend.release(storage);
      },
    };
  },
};

const codecs = new Map<CodecName, Codec>([
  ["fp32", fp32Codec],
  ["fp16", fp16Codec],
  ["int8", int8Codec],
  ["int4", int4Codec],
]);

export function registerCodec(codec: Codec): void {
  codecs.set(codec.name, codec);
}

export function codecByName(name: CodecName): Codec {
  const c = codecs.get(name);
  if (!c) {
    throw new Error(`Unknown saved-activation codec "${name}" (known: ${[...codecs.keys()].join(", ")})`);
  }
  return c;
}

/**
 * The policy choosing a codec for each saved float tensor. `kind` says what the op keeps: "xhat" (BN's
 * normalised input), "input" (a conv/linear input for its weight gradient), "other".
 */
export interface SavePolicy {
  codecFor(op: string, kind: "xhat" | "input" | "other"): CodecName;
  /**
   * The 1-bit step derivative hard-swish/hard-sigmoid keep instead of their input, or null (absent: null) to
   * keep the input for the exact derivative. STEP_MASKS holds MobileTL's windows.
   */
  stepMask?(op: StepOp): StepMask | null;
}

export type StepOp = "hardswish" | "hardsigmoid";

/** Backward of a step-masked activation: dx = dy * scale where lo < x < hi, else 0. */
export interface StepMask {
  lo: number;
  hi: number;
  scale: number;
}

let policy: SavePolicy = { codecFor: () => "fp32" };

export function setSavePolicy(p: SavePolicy): SavePolicy {
  const prev = policy;
  policy = p;
  return prev;
}

/** The step mask the active policy wants for `op`, or null for the exact derivative. */
export function stepMaskFor(op: StepOp): StepMask | null {
  return policy.stepMask?.(op) ?? null;
}

/** The codec the active policy gives a save of `kind` by `op`. */
export function codecFor(op: string, kind: "xhat" | "input" | "other"): CodecName {
  return policy.codecFor(op, kind);
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

/**
 * MobileTL's step derivatives (see the module comment): hard-sigmoid exact, hard-swish approximated by the
 * unit step at 0.
 */
export const STEP_MASKS: Readonly<Record<StepOp, StepMask>> = {
  hardswish: { lo: 0, hi: OPEN, scale: 1 },
  hardsigmoid: { lo: -3, hi: 3, scale: 1 / 6 },
};

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

/** saveMask for a step-masked activation: the mask of `step`'s window, with the scale backward applies. */
export function saveStepMask(x: Tensor, step: StepMask): SavedMask & { readonly scale: number } {
  return { ...saveMask(x, step.lo, step.hi), scale: step.scale };
}
