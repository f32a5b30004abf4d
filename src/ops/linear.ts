/**
 * Matrix products: linear (PyTorch), matmul, gemm (ONNX), all on the batched `matmul` kernel.
 *
 * TinyTL rule: the data operand (x, a) is saved through the codec policy only when the weight operand's
 * gradient needs it; the weight operand is kept only when the data operand's gradient needs it, and a leaf
 * weight is merely referenced (0 saved bytes: it lives for the whole step anyway).
 */
import { type SavedTensor, saveFloat } from "../memory/codecs.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { Storage } from "../backend/backend.ts";
import { reduceAxes } from "./reduce.ts";
import { broadcastShapes } from "./elementwise.ts";
import { expand } from "./layout.ts";
import { reshape } from "./shape.ts";

/**
 * Keep an operand whose values a backward needs. A leaf (a parameter or a constant) is referenced: it costs
 * no saved bytes. An op output goes through the active save policy like any saved activation.
 */
export function keepOperand(t: Tensor, op: string): SavedTensor {
  if (t.node) return saveFloat(t, op, "other");
  const { backend, storage, shape } = t;
  backend.retain(storage);
  let released = false;
  return {
    bytes: 0,
    get: () => {
      if (released) throw new Error(`${op}: kept operand used after release`);
      backend.retain(storage);
      return new Tensor(backend, storage, shape);
    },
    release: () => {
      if (released) return;
      released = true;
      backend.release(storage);
    },
  };
}

interface MatmulCall {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  /** Per-batch element strides; default: dense (0 for batch 1). */
  strideA?: number;
  strideB?: number;
  bias?: Storage;
  accumulate?: boolean;
}

/** Run the matmul kernel into `out` (or a new tensor of `shape`). */
function mm(
  a: Storage,
  b: Storage,
  o: MatmulCall & { shape?: readonly number[]; out?: Tensor },
  t: Tensor,
): Tensor {
  const out = o.out ?? Tensor.empty(t.backend, o.shape!);
  const batch = o.batch ?? 1;
  t.backend.run("matmul", {
    a,
    b,
    ...(o.bias ? { bias: o.bias } : {}),
    out: out.storage,
    attrs: {
      batch,
      m: o.m,
      n: o.n,
      k: o.k,
      transA: o.transA ?? false,
      transB: o.transB ?? false,
      strideA: o.strideA ?? (batch > 1 ? o.m * o.k : 0),
      strideB: o.strideB ?? (batch > 1 ? o.k * o.n : 0),
      strideC: batch > 1 ? o.m * o.n : 0,
      accumulate: o.accumulate ?? false,
    },
  });
  return out;
}

function sameBackend(op: string, ...ts: (Tensor | null | undefined)[]): void {
  const b = ts[0]!.backend;
  if (ts.some((t) => t && t.backend !== b)) throw new Error(`${op}(): inputs live on different backends`);
}

/** y = x w^T + b for x [..., in], w [out, in], b [out] (PyTorch nn.Linear). */
export function linear(x: Tensor, w: Tensor, b: Tensor | null = null): Tensor {
  sameBackend("linear", x, w, b);
  if (w.rank !== 2) throw new Error(`linear(): weight ${shapeString(w.shape)} must be 2-D [out, in]`);
  const [nOut, nIn] = w.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== nIn) {
    throw new Error(
      `linear(): input ${shapeString(x.shape)} must end in ${nIn} features for weight ${
        shapeString(w.shape)
      }`,
    );
  }
  if (b && (b.rank !== 1 || b.shape[0] !== nOut)) {
    throw new Error(
      `linear(): bias ${shapeString(b.shape)} must be [${nOut}] for weight ${shapeString(w.shape)}`,
    );
  }
  const rows = x.size / nIn;
  const shape = [...x.shape.slice(0, -1), nOut];
  const y = mm(x.storage, w.storage, { m: rows, n: nOut, k: nIn, transB: true, bias: b?.storage, shape }, x);
  const needX = needsGrad(x), needW = needsGrad(w), needB = needsGrad(b);
  if (!needX && !needW && !needB) return y;
  const savedX = needW ? saveFloat(x, "linear", "input") : null;
  const keptW = needX ? keepOperand(w, "linear") : null;
  const xShape = x.shape, wShape = w.shape;
  return record("linear", y, [x, w, b], (dy) => {
    let dx: Tensor | null = null, dw: Tensor | null = null;
    if (keptW) {
      // dx [rows, in] = dy [rows, out] w [out, in]
      const wt = keptW.get();
      dx = mm(dy.storage, wt.storage, { m: rows, n: nIn, k: nOut, shape: xShape }, dy);
      wt.dispose();
    }
    if (savedX) {
      // dw [out, in] = dy^T [out, rows] x [rows, in]
      const xt = savedX.get();
      dw = mm(dy.storage, xt.storage, { m: nOut, n: nIn, k: rows, transA: true, shape: wShape }, dy);
      xt.dispose();
    }
    const db = needB ? reduceAxes(dy.view([rows, nOut]), [0], { shape: [nOut] }) : null;
    return [dx, dw, db];
  }, [savedX, keptW].filter((s) => s !== null));
}

/**
 * a [..., M, K] @ b [..., K, N] with numpy broadcasting of the leading dims (batched attention products),
 * and numpy's 1-D operands (a vector times a matrix). A
 * 2-D b is shared by every matrix of a, which is then one [batch*M, K] product; otherwise an operand whose
 * leading dims are broadcast is first expanded (a strided copy whose gradient sums back).
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  sameBackend("matmul", a, b);
  if ((a.rank === 1 || b.rank === 1) && a.rank >= 1 && b.rank >= 1) {
    // numpy: a vector is a 1-row (a) or 1-column (b) matrix whose added dim is dropped from the result.
    const a2 = a.rank === 1 ? reshape(a, [1, a.shape[0]]) : a;
    const b2 = b.rank === 1 ? reshape(b, [b.shape[0], 1]) : b;
    const y = matmul(a2, b2);
    for (const [t, o] of [[a2, a], [b2, b]]) if (t !== o) t.dispose();
    const shape = [
      ...y.shape.slice(0, -2),
      ...(a.rank === 1 ? [] : [y.shape.at(-2)!]),
      ...(b.rank === 1 ? [] : [y.shape.at(-1)!]),
    ];
    const out = reshape(y, shape);
    y.dispose();
    return out;
  }
  if (a.rank < 2 || b.rank < 2) {
    throw new Error(
      `matmul(): inputs ${shapeString(a.shape)} and ${shapeString(b.shape)} must be at least 2-D`,
    );
  }
  if (b.rank > 2 || a.rank === 2) {
    const lead = broadcastShapes("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
    const fit = (t: Tensor) =>
      t.shape.slice(0, -2).join() === lead.join() ? t : expand(t, [...lead, ...t.shape.slice(-2)]);
    const [ea, eb] = [fit(a), b.rank === 2 && a.rank === 2 ? b : fit(b)];
    if (ea !== a || eb !== b) {
      const y = matmul2(ea, eb);
      if (ea !== a) ea.dispose();
      if (eb !== b) eb.dispose();
      return y;
    }
  }
  return matmul2(a, b);
}

/** a [..., M, K] @ b [K, N] or b [..., K, N] with a's leading dims. */
function matmul2(a: Tensor, b: Tensor): Tensor {
  const [m, k] = a.shape.slice(-2), [k2, n] = b.shape.slice(-2);
  const lead = a.shape.slice(0, -2);
  const shared = b.rank === 2;
  if (k !== k2 || (!shared && b.shape.slice(0, -2).join() !== lead.join())) {
    throw new Error(
      `matmul(): a ${shapeString(a.shape)} and b ${
        shapeString(b.shape)
      } do not multiply (inner dims ${k} vs ${k2}, b is 2-D or has a's leading dims)`,
    );
  }
  const batch = lead.reduce((p, d) => p * d, 1);
  // Shared b: fold the batch into rows. Batched b: one product per matrix.
  const [bt, rows] = shared ? [1, batch * m] : [batch, m];
  const y = mm(a.storage, b.storage, { batch: bt, m: rows, n, k, shape: [...lead, m, n] }, a);
  const needA = needsGrad(a), needB = needsGrad(b);
  if (!needA && !needB) return y;
  const savedA = needB ? saveFloat(a, "matmul", "input") : null;
  const keptB = needA ? keepOperand(b, "matmul") : null;
  const aShape = a.shape, bShape = b.shape;
  return record("matmul", y, [a, b], (dy) => {
    let da: Tensor | null = null, db: Tensor | null = null;
    if (keptB) {
      // dA [rows, K] = dY [rows, N] B^T
      const bv = keptB.get();
      da = mm(dy.storage, bv.storage, { batch: bt, m: rows, n: k, k: n, transB: true, shape: aShape }, dy);
      bv.dispose();
    }
    if (savedA) {
      // dB [K, N] = A^T [K, rows] dY [rows, N]
      const av = savedA.get();
      db = mm(av.storage, dy.storage, { batch: bt, m: k, n, k: rows, transA: true, shape: bShape }, dy);
      av.dispose();
    }
    return [da, db];
  }, [savedA, keptB].filter((s) => s !== null));
}

export interface GemmOptions {
  c?: Tensor | null;
  alpha?: number;
  beta?: number;
  transA?: boolean;
  transB?: boolean;
}

/** A new tensor alpha * t (no autograd). */
function scaled(t: Tensor, alpha: number): Tensor {
  const out = Tensor.empty(t.backend, t.shape);
  t.backend.run("axpy", { x: t.storage, out: out.storage, attrs: { n: t.size, alpha, accumulate: false } });
  return out;
}

/**
 * ONNX Gemm: y = alpha * op(a) op(b) + beta * c, where op transposes when transA/transB is set; a and b are
 * 2-D and c broadcasts (numpy rules, towards y only) to [M, N].
 */
export function gemm(a: Tensor, b: Tensor, options: GemmOptions = {}): Tensor {
  const { alpha = 1, beta = 1, transA = false, transB = false } = options;
  const c = options.c ?? null;
  sameBackend("gemm", a, b, c);
  if (a.rank !== 2 || b.rank !== 2) {
    throw new Error(`gemm(): a ${shapeString(a.shape)} and b ${shapeString(b.shape)} must be 2-D`);
  }
  const [m, k] = transA ? [a.shape[1], a.shape[0]] : a.shape;
  const [k2, n] = transB ? [b.shape[1], b.shape[0]] : b.shape;
  if (k !== k2) {
    throw new Error(
      `gemm(): a ${shapeString(a.shape)} (transA=${transA}) and b ${
        shapeString(b.shape)
      } (transB=${transB}) have inner dims ${k} and ${k2}`,
    );
  }
  const cPad = c ? [...new Array<number>(Math.max(0, 2 - c.rank)).fill(1), ...c.shape] : [];
  if (c && (c.rank > 2 || cPad[0] !== 1 && cPad[0] !== m || cPad[1] !== 1 && cPad[1] !== n)) {
    throw new Error(`gemm(): c ${shapeString(c.shape)} does not broadcast to the output [${m}, ${n}]`);
  }
  const useC = c !== null && beta !== 0;
  const call = { m, n, k, transA, transB, shape: [m, n] };
  let y: Tensor;
  if (useC && alpha === 1 && beta === 1 && cPad[0] === 1 && cPad[1] === n) {
    // A row vector c is the matmul kernel's bias (the usual classifier head).
    y = mm(a.storage, b.storage, { ...call, bias: c.storage }, a);
  } else if (useC) {
    y = Tensor.empty(a.backend, [m, n]);
    const s = Tensor.from(a.backend, [beta], [1]);
    a.backend.run("binary", {
      a: c.storage,
      b: s.storage,
      out: y.storage,
      attrs: {
        op: "mul",
        shape: [m, n],
        aStrides: [cPad[0] === 1 ? 0 : cPad[1], cPad[1] === 1 ? 0 : 1],
        bStrides: [0, 0],
      },
    });
    s.dispose();
    if (alpha === 1) mm(a.storage, b.storage, { ...call, out: y, accumulate: true }, a);
    else {
      const p = mm(a.storage, b.storage, call, a);
      a.backend.run("axpy", { x: p.storage, out: y.storage, attrs: { n: m * n, alpha, accumulate: true } });
      p.dispose();
    }
  } else {
    y = mm(a.storage, b.storage, call, a);
    if (alpha !== 1) {
      const p = y;
      y = scaled(p, alpha);
      p.dispose();
    }
  }
  const needA = needsGrad(a), needB = needsGrad(b), needC = useC && needsGrad(c);
  if (!needA && !needB && !needC) return y;
  const savedA = needB ? saveFloat(a, "gemm", "input") : null;
  const keptB = needA ? keepOperand(b, "gemm") : null;
  const aShape = a.shape, bShape = b.shape, cShape = c?.shape ?? [];
  return record("gemm", y, [a, b, c], (dy) => {
    const g = alpha === 1 ? dy : scaled(dy, alpha);
    let da: Tensor | null = null, db: Tensor | null = null, dc: Tensor | null = null;
    if (keptB) {
      const bv = keptB.get();
      da = transA
        // stored [K, M] = op(b) g^T
        ? mm(bv.storage, g.storage, { m: k, n: m, k: n, transA: transB, transB: true, shape: aShape }, dy)
        // [M, K] = g op(b)^T
        : mm(g.storage, bv.storage, { m, n: k, k: n, transB: !transB, shape: aShape }, dy);
      bv.dispose();
    }
    if (savedA) {
      const av = savedA.get();
      db = transB
        // stored [N, K] = g^T op(a)
        ? mm(g.storage, av.storage, { m: n, n: k, k: m, transA: true, transB: transA, shape: bShape }, dy)
        // [K, N] = op(a)^T g
        : mm(av.storage, g.storage, { m: k, n, k: m, transA: !transA, shape: bShape }, dy);
      av.dispose();
    }
    if (needC) {
      const summed = reduceAxes(dy, [0, 1].filter((i) => cPad[i] === 1), { shape: cShape });
      dc = beta === 1 ? summed : scaled(summed, beta);
      if (dc !== summed) summed.dispose();
    }
    if (g !== dy) g.dispose();
    return [da, db, dc];
  }, [savedA, keptB].filter((s) => s !== null));
}
