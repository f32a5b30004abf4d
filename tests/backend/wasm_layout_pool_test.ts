/**
 * strided_copy, where, pool2d and pool2d_grad on the wasm backend against the CPU reference, and the ops the
 * C elementwise code does not have (erf, pow, eq: the CPU reference over the shared memory): transposes,
 * reversed slices, broadcasts, concat, bit copies of u32, copies large enough to split over the pool;
 * pooling with padding, ceil-mode pads, dilation, count_include_pad, ties, NaN and windows with no input tap.
 */
import { throws } from "node:assert/strict";
import type { Pool2dAttrs } from "../../src/backend/kernels.ts";
import { ELEMENTWISE, uniforms } from "./_webgpu_agree.ts";
import { agreeSpecial, wasmTest } from "./_wasm.ts";

wasmTest(
  "strided_copy() on wasm matches the CPU: transpose, reversed slice, expand, concat, u32, large",
  async (b) => {
    const [n, c, h, w] = [2, 3, 5, 7];
    const x = uniforms(n * c * h * w);
    const dense = (shape: number[]) => shape.map((_, i) => shape.slice(i + 1).reduce((p, d) => p * d, 1));
    const cases = [
      { shape: [n, h, w, c], x: { offset: 0, strides: [c * h * w, w, 1, h * w] }, outLen: x.length },
      {
        shape: [n, c, 3, 4],
        x: { offset: (c - 1) * h * w + w, strides: [c * h * w, -h * w, w, 2] },
        outLen: n * c * 12,
      },
      { shape: [n, c, h], x: { offset: 0, strides: [0, 1, 0] }, outLen: n * c * h },
      {
        shape: [n, c, h, w],
        x: { offset: 0, strides: [c * h * w, h * w, w, 1] },
        outLen: n * (c + 4) * h * w,
        out: { offset: 2 * h * w, strides: [(c + 4) * h * w, h * w, w, 1] },
      },
      { shape: [1, 1, 1], x: { offset: 5, strides: [0, 0, 0] }, outLen: 1 },
    ];
    for (const k of cases) {
      const attrs = { shape: k.shape, x: k.x, out: k.out ?? { offset: 0, strides: dense(k.shape) } };
      await agreeSpecial(
        b,
        "strided_copy",
        { x: { data: x }, out: { length: k.outLen } },
        attrs,
        0,
        ` [${k.shape}]`,
      );
    }
    // Bits, not values: u32 words (NaN payloads included) survive.
    const words = Uint32Array.from({ length: 64 }, (_, i) => (0x7fc00001 + i * 7919) >>> 0);
    await agreeSpecial(
      b,
      "strided_copy",
      {
        x: { data: words, dtype: "u32" },
        out: { length: 64, dtype: "u32" },
      },
      { shape: [8, 8], x: { offset: 0, strides: [1, 8] }, out: { offset: 0, strides: [8, 1] } },
      0,
    );
    // 300 x 1000 transposed: rows are strided, split over the pool.
    const big = uniforms(300_000);
    await agreeSpecial(
      b,
      "strided_copy",
      { x: { data: big }, out: { length: 300_000 } },
      {
        shape: [1000, 300],
        x: { offset: 0, strides: [1, 1000] },
        out: { offset: 0, strides: [300, 1] },
      },
      0,
      " large",
    );
    const out = b.alloc(10, { category: "activations" });
    const src = b.alloc(10, { category: "activations" });
    throws(
      () =>
        b.run("strided_copy", {
          x: src,
          out,
          attrs: { shape: [4], x: { offset: 2, strides: [-1] }, out: { offset: 0, strides: [1] } },
        }),
      /view reaches element -1/,
    );
    b.release(out);
    b.release(src);
  },
);

wasmTest("where() and the erf, pow and eq ops on wasm match the CPU", async (b) => {
  const [n, c, h] = [2, 3, 5];
  const cond = uniforms(n * h).map((v) => (v > 0 ? 1 : 0));
  await agreeSpecial(
    b,
    "where",
    {
      cond: { data: cond },
      a: { data: uniforms(n * c * h) },
      b: { data: uniforms(c) },
      out: { length: n * c * h },
    },
    { shape: [n, c, h], condStrides: [h, 0, 1], aStrides: [c * h, h, 1], bStrides: [0, 1, 0] },
    0,
  );
  const x = uniforms(1001, -3, 3);
  await agreeSpecial(
    b,
    "unary",
    { x: { data: x }, out: { length: 1001 } },
    { n: 1001, op: "erf" },
    ELEMENTWISE,
  );
  await agreeSpecial(
    b,
    "unary_grad",
    { x: { data: x }, dy: { data: uniforms(1001) }, out: { length: 1001 } },
    {
      n: 1001,
      op: "erf",
    },
    ELEMENTWISE,
  );
  for (const op of ["pow", "eq"] as const) {
    const a = uniforms(600, 0.1, 3), e = op === "pow" ? uniforms(6, -2, 2) : a.slice(0, 6);
    await agreeSpecial(
      b,
      "binary",
      { a: { data: a }, b: { data: e }, out: { length: 600 } },
      {
        op,
        shape: [100, 6],
        aStrides: [6, 1],
        bStrides: [0, 1],
      },
      ELEMENTWISE,
      ` ${op}`,
    );
  }
});

const POOLS: Partial<Pool2dAttrs>[] = [
  { op: "max", kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 },
  { op: "max", kh: 3, kw: 3, strideH: 2, strideW: 2, padBottom: 1, padRight: 1 },
  { op: "max", kh: 2, kw: 3, strideH: 1, strideW: 2, dilationH: 2, dilationW: 1 },
  // Padding wider than the window: corner windows hold no input tap (-inf, argmax none, no gradient).
  { op: "max", kh: 2, kw: 2, strideH: 3, strideW: 3, padTop: 2, padLeft: 2, padBottom: 2, padRight: 2 },
  { op: "avg", kh: 2, kw: 2, strideH: 2, strideW: 2 },
  { op: "avg", kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 2, padRight: 2 },
  {
    op: "avg",
    kh: 3,
    kw: 3,
    strideH: 2,
    strideW: 2,
    padTop: 1,
    padLeft: 1,
    padBottom: 2,
    padRight: 2,
    countIncludePad: true,
  },
  { op: "avg", kh: 2, kw: 2, strideH: 3, strideW: 3, padTop: 2, padLeft: 2, padBottom: 2, padRight: 2 },
];

function poolAttrs(p: Partial<Pool2dAttrs>, n: number, c: number, h: number, w: number): Pool2dAttrs {
  const a = {
    op: "max" as const,
    n,
    c,
    h,
    w,
    kh: 1,
    kw: 1,
    strideH: 1,
    strideW: 1,
    padTop: 0,
    padLeft: 0,
    padBottom: 0,
    padRight: 0,
    dilationH: 1,
    dilationW: 1,
    countIncludePad: false,
    ...p,
    outH: 0,
    outW: 0,
  };
  a.outH = Math.floor((h + a.padTop + a.padBottom - a.dilationH * (a.kh - 1) - 1) / a.strideH) + 1;
  a.outW = Math.floor((w + a.padLeft + a.padRight - a.dilationW * (a.kw - 1) - 1) / a.strideW) + 1;
  return a;
}

wasmTest(
  "pool2d() and pool2d_grad() on wasm match the CPU (pads, ceil mode, dilation, empty windows, NaN)",
  async (b) => {
    for (const [n, c, h, w] of [[2, 3, 11, 9], [4, 40, 28, 28]]) {
      // Ties (rounded values) exercise the first-maximum rule; NaN must win its windows.
      const x = uniforms(n * c * h * w).map((v) => Math.round(v * 8) / 8);
      x[17] = NaN;
      x[x.length - 3] = NaN;
      for (const p of POOLS) {
        const a = poolAttrs(p, n, c, h, w);
        const outN = n * c * a.outH * a.outW;
        const label = ` [${n},${c},${h},${w}] ${JSON.stringify(p)}`;
        const fwd = {
          x: { data: x },
          out: { length: outN },
          ...(a.op === "max" ? { argmax: { length: outN, dtype: "u32" as const } } : {}),
        };
        const got = await agreeSpecial(b, "pool2d", fwd, a, ELEMENTWISE, label);
        const grad = {
          dy: { data: uniforms(outN) },
          ...(a.op === "max" ? { argmax: { data: got.argmax, dtype: "u32" as const } } : {}),
          out: { length: n * c * h * w },
        };
        await agreeSpecial(b, "pool2d_grad", grad, a, ELEMENTWISE, label);
      }
    }
  },
);
