/**
 * The wasm backend's elementwise kernels against the CPU reference (_wasm.ts agreeSpecial(): same seeded
 * inputs, outputs start as a sentinel so an element a kernel forgets to write differs). Lengths are chosen to
 * leave SIMD tails (not multiples of 4, 8 or 32) and to cross the size where work is split over the worker
 * pool (32K elements a chunk); IEEE special values check the vector exp/log against Math.exp/Math.log.
 */
import { ok } from "node:assert/strict";
import type { UnaryOp } from "../../src/backend/kernels.ts";
import { activationInputs, ELEMENTWISE, uniforms } from "./_webgpu_agree.ts";
import { agreeSpecial, wasmTest } from "./_wasm.ts";

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
];

// IEEE edge cases: the vector exp/log must give what Math.exp/Math.log give (after rounding to f32).
const SPECIALS = [
  0,
  -0,
  Infinity,
  -Infinity,
  NaN,
  1e-40, // subnormal
  -1e-40,
  88.7,
  89,
  -87.5,
  -100,
  -104,
  1e30,
  -1e30,
  3,
  -3,
  6,
];

wasmTest(
  "unary() and unary_grad() on wasm match the CPU for every op, SIMD tails and IEEE special values",
  async (b) => {
    for (const n of [7, 1001, 70_003]) {
      for (const op of UNARY) {
        const x = activationInputs(n, op === "log" || op === "sqrt" || op === "rsqrt");
        if (n === 1001) SPECIALS.forEach((v, i) => x[100 + i] = v);
        const attrs = { n, op, alpha: -1.5, beta: 2.5 };
        await agreeSpecial(
          b,
          "unary",
          { x: { data: x }, out: { length: n + 3 } },
          attrs,
          ELEMENTWISE,
          ` ${op} n=${n}`,
        );
        await agreeSpecial(
          b,
          "unary_grad",
          { x: { data: x }, dy: { data: uniforms(n) }, out: { length: n } },
          attrs,
          ELEMENTWISE,
          ` ${op} n=${n}`,
        );
      }
    }
  },
);

wasmTest(
  "unary_grad() on wasm forms dy * f'(x) like the CPU where f'(x) alone would overflow f32",
  async (b) => {
    // Every special x against small, unit and huge upstream gradients (the reference multiplies in double).
    const dys = [0.01, 0.5, -0.9, 1, 1e-30, -1e30, 3];
    const x = dys.flatMap(() => SPECIALS), dy = dys.flatMap((d) => SPECIALS.map(() => d));
    const n = x.length;
    for (const op of UNARY) {
      await agreeSpecial(
        b,
        "unary_grad",
        { x: { data: x }, dy: { data: dy }, out: { length: n } },
        {
          n,
          op,
          alpha: -1.5,
          beta: 2.5,
        },
        ELEMENTWISE,
        ` ${op}`,
      );
    }
  },
);

wasmTest("fill(), copy() and axpy() on wasm match the CPU, in place and across chunks", async (b) => {
  for (const n of [5, 1000, 200_001]) {
    await agreeSpecial(b, "fill", { out: { length: n + 3 } }, { n, value: -2.5 }, 0);
    const x = uniforms(n + 600);
    await agreeSpecial(b, "copy", { x: { data: x }, out: { length: n + 900 } }, {
      n,
      srcOffset: 199,
      dstOffset: 301,
    }, 0);
    for (const accumulate of [false, true]) {
      await agreeSpecial(b, "axpy", { x: { data: uniforms(n) }, out: { data: uniforms(n) } }, {
        n,
        alpha: -0.75,
        accumulate,
      }, ELEMENTWISE);
    }
  }
  const x = uniforms(700);
  const words = Uint32Array.from(x, (v) => Math.floor((v + 1) * 2 ** 31));
  const got = await agreeSpecial(
    b,
    "copy",
    { x: { data: words, dtype: "u32" }, out: { length: 700, dtype: "u32" } },
    {
      n: 700,
      srcOffset: 0,
      dstOffset: 0,
    },
    0,
  );
  ok(got.out instanceof Uint32Array, "a u32 storage reads back as Uint32Array");
  // Overlapping halves of one storage, destination after the source and before it.
  await agreeSpecial(b, "copy", { x: { data: x }, out: { data: x } }, {
    n: 350,
    srcOffset: 0,
    dstOffset: 350,
  }, 0);
  await agreeSpecial(b, "copy", { x: { data: x }, out: { data: x } }, {
    n: 500,
    srcOffset: 100,
    dstOffset: 0,
  }, 0);
});

wasmTest("mask_pack() and mask_grad() on wasm match the CPU bit for bit", async (b) => {
  for (const n of [31, 1000, 100_005]) {
    const x = activationInputs(n, false);
    for (const [lo, hi] of [[0, 3.0e38], [0, 6], [-3, 3]]) {
      const words = Math.ceil(n / 32);
      const got = await agreeSpecial(
        b,
        "mask_pack",
        { x: { data: x }, out: { length: words, dtype: "u32" } },
        {
          n,
          lo,
          hi,
        },
        0,
      );
      await agreeSpecial(
        b,
        "mask_grad",
        {
          mask: { data: got.out, dtype: "u32" },
          dy: { data: uniforms(n) },
          out: { length: n },
        },
        { n, scale: 0.5 },
        0,
      );
    }
  }
});

wasmTest("binary() on wasm matches the CPU for every op and broadcast pattern", async (b) => {
  const cases: { shape: number[]; a: number[]; b: number[]; na: number; nb: number }[] = [
    { shape: [1000], a: [1], b: [1], na: 1000, nb: 1000 },
    { shape: [300_001], a: [1], b: [0], na: 300_001, nb: 1 }, // one long row split over the pool
    { shape: [4, 3, 50], a: [150, 50, 1], b: [0, 1, 0], na: 600, nb: 3 }, // per-channel bias
    { shape: [6, 7], a: [1, 6], b: [7, 1], na: 42, nb: 42 }, // a transposed: strided rows
    { shape: [2, 3, 2, 2, 3, 2], a: [72, 24, 12, 6, 2, 1], b: [0, 2, 0, 1, 0, 0], na: 144, nb: 6 }, // rank 6
    { shape: [5, 1, 9], a: [9, 9, 1], b: [0, 0, 0], na: 45, nb: 1 }, // scalar
    { shape: [64, 96, 3, 3], a: [864, 9, 3, 1], b: [0, 1, 0, 0], na: 55296, nb: 96 }, // short inner rows
  ];
  for (const op of ["add", "sub", "mul", "div", "max", "min"] as const) {
    for (const c of cases) {
      const n = c.shape.reduce((p, d) => p * d, 1);
      const a = uniforms(c.na);
      if (c.na > 20) [NaN, -0, Infinity].forEach((v, i) => a[3 + i] = v);
      const bData = op === "div" ? uniforms(c.nb, 0.5, 2) : uniforms(c.nb);
      await agreeSpecial(
        b,
        "binary",
        { a: { data: a }, b: { data: bData }, out: { length: n } },
        { op, shape: c.shape, aStrides: c.a, bStrides: c.b },
        ELEMENTWISE,
        ` ${op} [${c.shape}]`,
      );
    }
  }
});
