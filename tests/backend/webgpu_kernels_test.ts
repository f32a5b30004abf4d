/**
 * Every non-GEMM WebGPU kernel against the CPU reference on seeded random inputs (tolerances in
 * _webgpu_agree.ts): elementwise 1e-5, reductions 1e-4, bit-exact where the result is exact.
 */
import { ok } from "node:assert/strict";
import type { UnaryOp } from "../../src/backend/kernels.ts";
import {
  activationInputs,
  agree,
  ELEMENTWISE,
  gpuTest,
  REDUCTION,
  rng,
  type Spec,
  uniforms,
} from "./_webgpu_agree.ts";

const UNARY: UnaryOp[] = [
  "identity",
  "neg",
  "relu",
  "relu6",
  "clip",
  "hardswish",
  "hardsigmoid",
  "sigmoid",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "square",
  "abs",
  "sign",
  "erf",
];

gpuTest("unary() and unary_grad() on WebGPU match the CPU for every op", async (b) => {
  const n = 1000;
  for (const op of UNARY) {
    const x = activationInputs(n, op === "log" || op === "sqrt" || op === "rsqrt");
    const attrs = { n, op, alpha: -1.5, beta: 2.5 };
    await agree(b, "unary", { x: { data: x }, out: { length: n } }, attrs, ELEMENTWISE, ` ${op}`);
    const dy = uniforms(n);
    await agree(
      b,
      "unary_grad",
      { x: { data: x }, dy: { data: dy }, out: { length: n } },
      attrs,
      ELEMENTWISE,
      ` ${op}`,
    );
  }
});

gpuTest("fill(), copy() and axpy() on WebGPU match the CPU", async (b) => {
  await agree(b, "fill", { out: { length: 1003 } }, { n: 1000, value: -2.5 }, 0);
  const x = uniforms(700);
  await agree(
    b,
    "copy",
    { x: { data: x }, out: { length: 900 } },
    { n: 500, srcOffset: 199, dstOffset: 301 },
    0,
  );
  const words = Uint32Array.from(x, (v) => Math.floor((v + 1) * 2 ** 31));
  const got = await agree(
    b,
    "copy",
    { x: { data: words, dtype: "u32" }, out: { length: 700, dtype: "u32" } },
    { n: 700, srcOffset: 0, dstOffset: 0 },
    0,
  );
  ok(got.out instanceof Uint32Array, "a u32 storage reads back as Uint32Array");
  // In place: the two halves of one storage (one buffer bound as input and output).
  await agree(b, "copy", { x: { data: x }, out: { data: x } }, { n: 350, srcOffset: 0, dstOffset: 350 }, 0);
  for (const accumulate of [false, true]) {
    const attrs = { n: 1000, alpha: -0.75, accumulate };
    await agree(
      b,
      "axpy",
      { x: { data: uniforms(1000) }, out: { data: uniforms(1000) } },
      attrs,
      ELEMENTWISE,
    );
  }
});

gpuTest("mask_pack() and mask_grad() on WebGPU match the CPU bit for bit", async (b) => {
  const n = 1000; // not a multiple of 32: the last word is partial
  const x = activationInputs(n, false);
  for (const [lo, hi] of [[0, 3.0e38], [0, 6], [-3, 3]]) {
    const got = await agree(b, "mask_pack", { x: { data: x }, out: { length: 32, dtype: "u32" } }, {
      n,
      lo,
      hi,
    }, 0);
    const dy = uniforms(n);
    await agree(b, "mask_grad", {
      mask: { data: got.out, dtype: "u32" },
      dy: { data: dy },
      out: { length: n },
    }, {
      n,
      scale: 0.5,
    }, 0);
  }
});

gpuTest("binary() on WebGPU matches the CPU for every op and broadcast pattern", async (b) => {
  const cases: { shape: number[]; a: number[]; b: number[]; na: number; nb: number }[] = [
    { shape: [1000], a: [1], b: [1], na: 1000, nb: 1000 },
    { shape: [4, 3, 50], a: [150, 50, 1], b: [0, 1, 0], na: 600, nb: 3 }, // per-channel bias
    { shape: [6, 7], a: [1, 6], b: [7, 1], na: 42, nb: 42 }, // a transposed
    { shape: [2, 3, 2, 2, 3, 2], a: [72, 24, 12, 6, 2, 1], b: [0, 2, 0, 1, 0, 0], na: 144, nb: 6 }, // rank 6
    { shape: [5, 1, 9], a: [9, 9, 1], b: [0, 0, 0], na: 45, nb: 1 }, // scalar
  ];
  for (const op of ["add", "sub", "mul", "div", "max", "min", "pow", "eq"] as const) {
    for (const c of cases) {
      const n = c.shape.reduce((p, d) => p * d, 1);
      const bData = op === "div" ? uniforms(c.nb, 0.5, 2) : uniforms(c.nb);
      // pow: integer exponents (negative bases stay real), the exact special cases and general ones; eq:
      // some equal pairs.
      if (op === "pow") bData.forEach((_, i) => (bData[i] = [2, 3, 0.5, 1, -1, 1.7][i % 6]));
      if (op === "eq") bData.forEach((_, i) => (bData[i] = i % 3 === 0 ? 0.5 : bData[i]));
      await agree(
        b,
        "binary",
        {
          a: { data: op === "eq" ? uniforms(c.na).map((v, i) => (i % 2 ? 0.5 : v)) : uniforms(c.na) },
          b: { data: bData },
          out: { length: n },
        },
        { op, shape: c.shape, aStrides: c.a, bStrides: c.b },
        ELEMENTWISE,
        ` ${op} [${c.shape}]`,
      );
    }
  }
});

gpuTest("reduce() on WebGPU matches the CPU for rows, columns and split axes", async (b) => {
  const shapes = [
    [1, 100000, 1], // one long row: split over workgroups, then a second pass
    [37, 300, 1],
    [200, 3, 1], // short rows: one invocation each
    [5, 7, 300],
    [3, 1000, 5],
    [2, 5000, 2], // few outputs, long axis: split columns
    [20000, 64, 1], // many rows: one invocation per row
  ];
  for (const [outer, size, inner] of shapes) {
    const x = uniforms(outer * size * inner);
    for (const op of ["sum", "mean", "max"] as const) {
      await agree(
        b,
        "reduce",
        { x: { data: x }, out: { length: outer * inner } },
        { op, outer, size, inner },
        REDUCTION,
        ` ${op} [${outer}, ${size}, ${inner}]`,
      );
    }
  }
  const withNaN = uniforms(600);
  withNaN[250] = NaN;
  const got = await agree(
    b,
    "reduce",
    { x: { data: withNaN }, out: { length: 2 } },
    {
      op: "max",
      outer: 2,
      size: 300,
      inner: 1,
    },
    0,
    " NaN",
  );
  ok(Number.isNaN(got.out[0]) && !Number.isNaN(got.out[1]), "max propagates NaN within its row only");
});

gpuTest("bn_stats() and bn_grad_reduce() on WebGPU match the CPU, direct and chunked", async (b) => {
  // [n, c, hw]: many channels (one workgroup each), few channels with long rows (chunks + merge).
  for (const [n, c, hw] of [[2, 3, 50], [8, 4, 1000], [2, 300, 10], [1, 1, 70000]]) {
    const size = n * c * hw;
    // A large mean with a small spread: naive E[x^2] - E[x]^2 would fail this in f32.
    const x = Float32Array.from(rng.normals(size), (v) => 100 + v);
    await agree(
      b,
      "bn_stats",
      { x: { data: x }, mean: { length: c }, variance: { length: c } },
      { n, c, hw },
      REDUCTION,
      ` [${n}, ${c}, ${hw}]`,
    );
    await agree(
      b,
      "bn_grad_reduce",
      {
        dy: { data: uniforms(size) },
        xhat: { data: rng.normals(size) },
        sumDy: { length: c },
        sumDyXhat: { length: c },
      },
      { n, c, hw },
      REDUCTION,
      ` [${n}, ${c}, ${hw}]`,
    );
  }
});

gpuTest("bn_apply() and bn_grad_input() on WebGPU match the CPU", async (b) => {
  const [n, c, hw] = [3, 5, 40];
  const size = n * c * hw;
  const x = rng.normals(size);
  const per = (lo: number, hi: number) => ({ data: uniforms(c, lo, hi) });
  const stats = { mean: per(-0.5, 0.5), variance: per(0.5, 2), gamma: per(0.5, 1.5), beta: per(-0.5, 0.5) };
  for (const withXhat of [false, true]) {
    const specs: Record<string, Spec> = { x: { data: x }, ...stats, out: { length: size } };
    if (withXhat) specs.xhat = { length: size };
    await agree(b, "bn_apply", specs, { n, c, hw, eps: 1e-5 }, ELEMENTWISE, withXhat ? " with xhat" : "");
  }
  for (const training of [true, false]) {
    const specs: Record<string, Spec> = {
      dy: { data: uniforms(size) },
      gamma: stats.gamma,
      variance: stats.variance,
      out: { length: size },
    };
    if (training) Object.assign(specs, { xhat: { data: x }, sumDy: per(-5, 5), sumDyXhat: per(-5, 5) });
    await agree(
      b,
      "bn_grad_input",
      specs,
      { n, c, hw, eps: 1e-5, training },
      ELEMENTWISE,
      ` training=${training}`,
    );
  }
});

gpuTest("softmax() on WebGPU matches the CPU for short and long rows", async (b) => {
  for (const [rows, cols] of [[7, 10], [3, 1000], [300, 65]]) {
    const x = uniforms(rows * cols, -20, 20);
    for (const log of [false, true]) {
      await agree(
        b,
        "softmax",
        { x: { data: x }, out: { length: rows * cols } },
        { rows, cols, log },
        ELEMENTWISE,
        ` [${rows}, ${cols}] log=${log}`,
      );
    }
  }
});

gpuTest("adam() and sgd() on WebGPU match the CPU", async (b) => {
  const n = 1000;
  const state = () => ({ param: { data: uniforms(n) }, grad: { data: uniforms(n) } });
  for (const decoupled of [false, true]) {
    for (const step of [1, 5]) {
      const attrs = { n, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, decoupled, step };
      await agree(
        b,
        "adam",
        { ...state(), m: { data: uniforms(n, -0.1, 0.1) }, v: { data: uniforms(n, 0, 0.01) } },
        attrs,
        ELEMENTWISE,
        ` decoupled=${decoupled} step=${step}`,
      );
    }
  }
  const variants = [
    { momentum: 0, dampening: 0, nesterov: false, firstStep: true },
    { momentum: 0.9, dampening: 0, nesterov: false, firstStep: true },
    { momentum: 0.9, dampening: 0.1, nesterov: false, firstStep: false },
    { momentum: 0.9, dampening: 0, nesterov: true, firstStep: false },
  ];
  for (const v of variants) {
    // momentum 0 passes a one-element placeholder buffer, which must stay untouched.
    const buf = { data: v.momentum === 0 ? [7] : uniforms(n) };
    await agree(
      b,
      "sgd",
      { ...state(), momentumBuf: buf },
      { n, lr: 0.1, weightDecay: 0.01, ...v },
      ELEMENTWISE,
      ` ${JSON.stringify(v)}`,
    );
  }
});
