/**
 * Device copies outside the autograd graph: state snapshots (the runtime guard, RoTTA's teacher, EATA's
 * anchors, adapter slots) and frames kept by a memory. One backend "copy" run each, no host round trip.
 */
import { Tensor, type TensorOptions } from "../tensor.ts";

/** Copies n elements of `from` (from element srcOffset) into `to` (at dstOffset); default: all of `from`. */
export function copyInto(from: Tensor, to: Tensor, n = from.size, srcOffset = 0, dstOffset = 0): void {
  from.backend.run("copy", { x: from.storage, out: to.storage, attrs: { n, srcOffset, dstOffset } });
}

/** Rows [start, start + n) of x [N, ...] as a new tensor. */
export function copyRows(x: Tensor, start: number, n: number, options: TensorOptions = {}): Tensor {
  const per = x.size / x.shape[0];
  const out = Tensor.empty(x.backend, [n, ...x.shape.slice(1)], options);
  copyInto(x, out, n * per, start * per, 0);
  return out;
}

/** A copy of x with its own storage (options: the ledger category of the copy). */
export function clone(x: Tensor, options: TensorOptions = {}): Tensor {
  const out = Tensor.empty(x.backend, x.shape, options);
  copyInto(x, out);
  return out;
}
