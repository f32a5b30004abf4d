/**
 * Device copies and in-place updates outside the autograd graph: state snapshots (the runtime guard, RoTTA's
 * teacher, EATA's anchors, adapter slots), frames kept by a memory, and moves toward a target (a teacher's
 * EMA, a pull toward anchors). Backend runs only, no host round trip.
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

/** x <- x + t (target - x) in place: a mean teacher's EMA, a pull toward anchor weights. */
export function moveToward(x: Tensor, target: Tensor, t: number): void {
  const b = x.backend;
  const diff = Tensor.empty(b, x.shape, { category: "workspace" });
  b.run("binary", {
    a: target.storage,
    b: x.storage,
    out: diff.storage,
    attrs: { op: "sub", shape: [x.size], aStrides: [1], bStrides: [1] },
  });
  b.run("axpy", { x: diff.storage, out: x.storage, attrs: { n: x.size, alpha: t, accumulate: true } });
  diff.dispose();
}
