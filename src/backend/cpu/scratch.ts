/**
 * Kernel scratch buffers, one per named use, grown and kept: a convolution's im2col matrix or a transposed
 * weight allocated per call was freed only when the garbage collector ran, and tens of megabytes of them
 * piled up per training step at 224x224, outside the arena and the ledger. Kept, they cost the largest
 * call's size once. The CPU backend runs one kernel at a time, and a kernel never holds a slot across a
 * call to another kernel that uses the same slot.
 */
export type ScratchSlot = "col" | "acc" | "wt" | "plane" | "transpose";

const buffers = new Map<ScratchSlot, Float64Array>();

/** A Float64Array of n elements for `slot`, valid until the next call for that slot; contents undefined. */
export function scratch(slot: ScratchSlot, n: number): Float64Array {
  let b = buffers.get(slot);
  if (!b || b.length < n) buffers.set(slot, b = new Float64Array(n));
  return b.subarray(0, n);
}
