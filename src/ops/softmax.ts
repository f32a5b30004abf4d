/**
 * softmax / logSoftmax over any axis (the last without a copy), one `softmax` kernel forward. Both keep only their output:
 * softmax: dx = y * (dy - sum(dy * y)); logSoftmax: dx = dy - exp(y) * sum(dy), sums over the row.
 * Backward is composed from primitive kernels (binary, reduce, unary) so every backend gets it for free.
 */
import { saveFloat } from "../memory/codecs.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { BinaryOp } from "../backend/kernels.ts";
import { transpose } from "./layout.ts";
import { reshape } from "./shape.ts";

function rowsCols(op: string, x: Tensor, axis: number): { rows: number; cols: number } {
  if (x.rank === 0) throw new Error(`${op}(): input must have at least one axis, got a scalar`);
  if (axis !== -1 && axis !== x.rank - 1) {
    throw new Error(`${op}(): only the last axis is supported, got axis ${axis} for ${shapeString(x.shape)}`);
  }
  const cols = x.shape[x.rank - 1];
  return { rows: cols === 0 ? 0 : x.size / cols, cols };
}

/** [rows, cols] op [rows] (the row vector broadcast along cols), or elementwise when both are [rows, cols]. */
function rowwise(op: BinaryOp, a: Tensor, b: Tensor, rows: number, cols: number, bIsRow: boolean): Tensor {
  const out = Tensor.empty(a.backend, a.shape);
  a.backend.run("binary", {
    a: a.storage,
    b: b.storage,
    out: out.storage,
    attrs: { op, shape: [rows, cols], aStrides: [cols, 1], bStrides: bIsRow ? [1, 0] : [cols, 1] },
  });
  return out;
}

function rowSum(t: Tensor, rows: number, cols: number): Tensor {
  const out = Tensor.empty(t.backend, [rows]);
  t.backend.run("reduce", {
    x: t.storage,
    out: out.storage,
    attrs: { op: "sum", outer: rows, size: cols, inner: 1 },
  });
  return out;
}

function forward(op: "softmax" | "logSoftmax", x: Tensor, axis: number): Tensor {
  const { rows, cols } = rowsCols(op, x, axis);
  const out = Tensor.empty(x.backend, x.shape);
  if (out.size > 0) {
    x.backend.run("softmax", {
      x: x.storage,
      out: out.storage,
      attrs: { rows, cols, log: op === "logSoftmax" },
    });
  }
  if (!needsGrad(x)) return out;
  const saved = saveFloat(out, op, "other");
  return record(op, out, [x], (dy) => {
    const y = saved.get();
    let dx: Tensor;
    if (op === "softmax") {
      const dyy = rowwise("mul", dy, y, rows, cols, false);
      const s = rowSum(dyy, rows, cols);
      const centered = rowwise("sub", dy, s, rows, cols, true);
      dx = rowwise("mul", y, centered, rows, cols, false);
      for (const t of [dyy, s, centered]) t.dispose();
    } else {
      const s = rowSum(dy, rows, cols);
      const p = Tensor.empty(y.backend, y.shape);
      y.backend.run("unary", { x: y.storage, out: p.storage, attrs: { n: y.size, op: "exp" } });
      const ps = rowwise("mul", p, s, rows, cols, true);
      dx = rowwise("sub", dy, ps, rows, cols, false);
      for (const t of [s, p, ps]) t.dispose();
    }
    y.dispose();
    return [dx];
  }, [saved]);
}

/**
 * The op over any axis: the kernel works on rows of the last axis, so another axis is swapped to the end
 * and back (two strided copies; dims after it that are all 1 need no copy).
 */
function anyAxis(op: "softmax" | "logSoftmax", x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= x.rank) {
    throw new Error(`${op}(): axis ${axis} is out of range for input ${shapeString(x.shape)}`);
  }
  if (x.shape.slice(a + 1).every((d) => d === 1)) {
    const v = reshape(x, x.shape.slice(0, a + 1));
    const y = forward(op, v, -1);
    v.dispose();
    const out = reshape(y, x.shape);
    y.dispose();
    return out;
  }
  const perm = x.shape.map((_, i) => i);
  [perm[a], perm[x.rank - 1]] = [perm[x.rank - 1], perm[a]];
  const t = transpose(x, perm);
  const y = forward(op, t, -1);
  t.dispose();
  const out = transpose(y, perm);
  y.dispose();
  return out;
}

/** Softmax over `axis` (default the last; max-subtracted). */
export function softmax(x: Tensor, axis = -1): Tensor {
  return anyAxis("softmax", x, axis);
}

/** log(softmax(x)) over `axis`, computed as x - max - log(sum(exp(x - max))). */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return anyAxis("logSoftmax", x, axis);
}
