/**
 * where(cond, a, b): ONNX Where on the `where` kernel, all three broadcast (numpy rules). cond holds 0/1
 * (as `equal` writes it) and gets no gradient; da = dy where cond, db = dy elsewhere, each summed back to its
 * input's shape. cond is kept for backward (it is usually a constant mask).
 */
import { needsGrad, record } from "../autograd/tape.ts";
import { saveFloat } from "../memory/codecs.ts";
import { Tensor } from "../tensor.ts";
import { broadcastShapes, compactStrides, stridesFor, sumToShape } from "./elementwise.ts";

function select(cond: Tensor, a: Tensor, b: Tensor, shape: number[]): Tensor {
  const out = Tensor.empty(a.backend, shape);
  if (out.size === 0) return out;
  const c = compactStrides("where", shape, [
    stridesFor(cond.shape, shape),
    stridesFor(a.shape, shape),
    stridesFor(b.shape, shape),
  ]);
  a.backend.run("where", {
    cond: cond.storage,
    a: a.storage,
    b: b.storage,
    out: out.storage,
    attrs: { shape: c.shape, condStrides: c.strides[0], aStrides: c.strides[1], bStrides: c.strides[2] },
  });
  return out;
}

export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  if (cond.backend !== a.backend || a.backend !== b.backend) {
    throw new Error("where(): inputs live on different backends");
  }
  const shape = broadcastShapes("where", broadcastShapes("where", cond.shape, a.shape), b.shape);
  const out = select(cond, a, b, shape);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return out;
  const savedC = saveFloat(cond, "where", "other");
  return record("where", out, [cond, a, b], (dy) => {
    const c = savedC.get();
    const zero = Tensor.zeros(dy.backend, []);
    const grad = (first: boolean, to: readonly number[]) => {
      const g = first ? select(c, dy, zero, shape) : select(c, zero, dy, shape);
      const s = sumToShape(g, to);
      if (s !== g) g.dispose();
      return s;
    };
    const grads = [null, needA ? grad(true, a.shape) : null, needB ? grad(false, b.shape) : null];
    c.dispose();
    zero.dispose();
    return grads;
  }, [savedC]);
}
