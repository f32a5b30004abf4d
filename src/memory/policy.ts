/**
 * Store policies: what `--store fp32|fp16|int8|int4|mask|auto` means for every saved activation.
 *
 * | store | float saves (BN x-hat, conv/linear inputs, products) | hard-swish / hard-sigmoid |
 * |---|---|---|
 * | fp32 | fp32 | fp32 input, exact derivative |
 * | fp16, int8, int4 | that codec | input through that codec, exact derivative of the decoded input |
 * | mask | fp32 | 1-bit step masks (MobileTL; hard-sigmoid's is exact, hard-swish's is the step at 0) |
 * | auto | the method's default (its descriptor's `store`, src/methods/registry.ts resolveStore) |
 *
 * ReLU, ReLU6 and Clip keep their exact 1-bit masks under every store (a mask is their exact derivative).
 */
import {
  type CodecName,
  type SavePolicy,
  setSavePolicy,
  STEP_MASKS,
  type StepMask,
  type StepOp,
} from "./codecs.ts";

export const STORES = ["fp32", "fp16", "int8", "int4", "mask", "auto"] as const;
export type StoreName = typeof STORES[number];

export function isStore(s: string): s is StoreName {
  return (STORES as readonly string[]).includes(s);
}

/** A store with `auto` resolved (registry.ts resolveStore). */
export type ConcreteStore = Exclude<StoreName, "auto">;

export interface StorePolicyOptions {
  /** Replace MobileTL's step windows (experiments with other thresholds). */
  steps?: Partial<Record<StepOp, StepMask>>;
}

export function storePolicy(store: ConcreteStore, options: StorePolicyOptions = {}): SavePolicy {
  if (store === "mask") {
    const steps = { ...STEP_MASKS, ...options.steps };
    return { codecFor: () => "fp32", stepMask: (op) => steps[op] };
  }
  const codec: CodecName = store;
  return { codecFor: () => codec, stepMask: () => null };
}

/** Run fn (sync or async) under a store policy, restoring the previous policy after. */
export async function withStore<T>(
  store: ConcreteStore,
  fn: () => T | Promise<T>,
  options: StorePolicyOptions = {},
): Promise<T> {
  const prev = setSavePolicy(storePolicy(store, options));
  try {
    return await fn();
  } finally {
    setSavePolicy(prev);
  }
}
