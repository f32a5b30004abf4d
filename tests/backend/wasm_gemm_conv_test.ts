/**
 * The edges of the wasm GEMM and convolution tiling against the CPU reference (1e-4 relative, floor 1): sizes
 * that are not multiples of the micro-tile (4 x 8), of the cache blocks (MC 96, NC 384, KC 256), batches with
 * shared operands, every transpose, bias and accumulate, and the reduction split over threads; convolutions
 * with odd sizes, strides, padding, dilation, groups, channel multipliers, batch 1, kernels past the direct
 * depthwise path, and 1x1 shapes that are and are not plain GEMMs. Multi-threaded results are checked against
 * one thread bit for bit: the split of work must not change the arithmetic.
 */
import { equal, ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import type { Conv2dAttrs } from "../../src/backend/kernels.ts";
import { conv2dAttrs } from "../../src/ops/conv.ts";
import { Rng } from "../../src/random.ts";
import { REDUCTION, uniforms } from "./_webgpu_agree.ts";
import { agreeSpecial, wasmTest, withWasm } from "./_wasm.ts";

interface MatmulCase {
  batch?: number;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  sharedA?: boolean;
  sharedB?: boolean;
  bias?: boolean;
  accumulate?: boolean;
}

type Gen = (n: number) => Float32Array;

async function checkMatmul(
  b: Backend,
  c: MatmulCase,
  gen: Gen = uniforms,
): Promise<Record<string, ArrayLike<number>>> {
  const batch = c.batch ?? 1;
  const strideA = c.sharedA ? 0 : c.m * c.k, strideB = c.sharedB ? 0 : c.k * c.n, strideC = c.m * c.n;
  const attrs = {
    batch,
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA ?? false,
    transB: c.transB ?? false,
    strideA,
    strideB,
    strideC,
    accumulate: c.accumulate ?? false,
  };
  const specs = {
    a: { data: gen(Math.max(1, (batch - 1) * strideA + c.m * c.k)) },
    b: { data: gen(Math.max(1, (batch - 1) * strideB + c.k * c.n)) },
    out: c.accumulate ? { data: gen(batch * strideC) } : { length: batch * strideC },
    ...(c.bias ? { bias: { data: gen(c.n) } } : {}),
  };
  return await agreeSpecial(b, "matmul", specs, attrs, REDUCTION, ` ${JSON.stringify(c)}`);
}

const MATMUL_CASES: MatmulCase[] = [
  { m: 1, n: 1, k: 1 },
  { m: 5, n: 9, k: 3 },
  { m: 4, n: 8, k: 256 }, // exactly one micro-tile and one K block
  { m: 97, n: 385, k: 257 }, // one past every block size
  { m: 37, n: 53, k: 29, transA: true },
  { m: 37, n: 53, k: 29, transB: true },
  { m: 37, n: 53, k: 29, transA: true, transB: true, bias: true, accumulate: true },
  { batch: 3, m: 13, n: 17, k: 11, sharedA: true, bias: true },
  { batch: 4, m: 6, n: 10, k: 7, sharedB: true, accumulate: true },
  { m: 3, n: 5, k: 0, bias: true }, // an empty reduction: out = bias
  { m: 3, n: 5, k: 0, accumulate: true },
  { m: 8, n: 8, k: 40_000 }, // few output tiles, long reduction: split over threads
  { m: 200, n: 3, k: 600, transA: true },
];

wasmTest(
  "matmul() on wasm matches the CPU at every tile edge, transpose, batch, bias and accumulate",
  async (b) => {
    for (const c of MATMUL_CASES) await checkMatmul(b, c);
  },
);

function attrsOf(
  x: number[],
  w: number[],
  o: { stride?: [number, number]; padding?: [number, number]; dilation?: [number, number]; groups?: number },
): Conv2dAttrs {
  return conv2dAttrs(x, w, o);
}

const CONV_CASES: [string, number[], number[], Parameters<typeof attrsOf>[2]][] = [
  ["3x3 pad 1 odd size", [2, 3, 11, 13], [5, 3, 3, 3], { padding: [1, 1] }],
  ["batch 1, stride 2, pad (2, 0)", [1, 4, 9, 10], [6, 4, 3, 3], { stride: [2, 2], padding: [2, 0] }],
  ["stride 3 x 1, dilation 2 x 3", [2, 2, 14, 15], [3, 2, 3, 2], {
    stride: [3, 1],
    dilation: [2, 3],
    padding: [1, 2],
  }],
  ["groups 3", [2, 6, 7, 7], [9, 2, 3, 3], { padding: [1, 1], groups: 3 }],
  ["depthwise 3x3 odd channels", [3, 7, 9, 9], [7, 1, 3, 3], { padding: [1, 1], groups: 7 }],
  ["depthwise stride 2, batch 1", [1, 13, 16, 15], [13, 1, 3, 3], {
    stride: [2, 2],
    padding: [1, 1],
    groups: 13,
  }],
  ["depthwise multiplier 3, 5x5, dilation 2", [2, 5, 12, 11], [15, 1, 5, 5], {
    padding: [4, 3],
    dilation: [2, 2],
    groups: 5,
  }],
  ["depthwise 1x1 plane", [4, 8, 1, 1], [8, 1, 3, 3], { padding: [1, 1], groups: 8 }],
  ["depthwise 9x9 (GEMM path)", [2, 4, 12, 12], [4, 1, 9, 9], { padding: [4, 4], groups: 4 }],
  ["depthwise multiplier 6 (GEMM path)", [2, 2, 6, 6], [12, 1, 3, 3], { padding: [1, 1], groups: 2 }],
  ["1x1", [3, 16, 7, 7], [24, 16, 1, 1], {}],
  ["1x1 stride 2", [2, 8, 9, 9], [12, 8, 1, 1], { stride: [2, 2] }],
  ["1x1 padding 1", [2, 5, 4, 4], [7, 5, 1, 1], { padding: [1, 1] }],
  ["1x1 groups 2 over 49-pixel images", [5, 6, 7, 7], [10, 3, 1, 1], { groups: 2 }],
  ["stem 3 -> 32 stride 2", [2, 3, 33, 32], [32, 3, 3, 3], { stride: [2, 2], padding: [1, 1] }],
  ["7x7 stride 2 pad 3", [1, 3, 23, 23], [8, 3, 7, 7], { stride: [2, 2], padding: [3, 3] }],
  ["long weight-gradient reduction", [64, 16, 16, 16], [8, 16, 1, 1], {}],
];

async function checkConv(
  b: Backend,
  x: number[],
  w: number[],
  o: Parameters<typeof attrsOf>[2],
  label: string,
  gen: Gen = uniforms,
) {
  const a = attrsOf(x, w, o);
  const nx = x.reduce((p, d) => p * d, 1), nw = w.reduce((p, d) => p * d, 1);
  const ny = a.n * a.cout * a.outH * a.outW;
  const xs = gen(nx), ws = gen(nw), dy = gen(ny), bias = gen(a.cout);
  const out: Record<string, ArrayLike<number>> = {};
  const y = await agreeSpecial(
    b,
    "conv2d",
    { x: { data: xs }, w: { data: ws }, bias: { data: bias }, out: { length: ny } },
    a,
    REDUCTION,
    ` ${label}`,
  );
  out.y = y.out;
  const dx = await agreeSpecial(
    b,
    "conv2d_grad_input",
    { dy: { data: dy }, w: { data: ws }, out: { length: nx } },
    a,
    REDUCTION,
    ` ${label}`,
  );
  out.dx = dx.out;
  const dw = await agreeSpecial(
    b,
    "conv2d_grad_weight",
    { x: { data: xs }, dy: { data: dy }, out: { length: nw } },
    a,
    REDUCTION,
    ` ${label}`,
  );
  out.dw = dw.out;
  return out;
}

wasmTest(
  "conv2d() and its gradients on wasm match the CPU for odd sizes, strides, padding, dilation and groups",
  async (b) => {
    for (const [label, x, w, o] of CONV_CASES) await checkConv(b, x, w, o, label);
  },
);

// Reductions split over threads (the long-K cases) add their parts in another order: deterministic for a
// thread count, but not the same bits as one thread, so they are left out here.
wasmTest(
  "wasm kernels give the same bits on 1 and 3 threads (tiling over threads does not change the arithmetic)",
  async () => {
    // The same seeded inputs on both: a generator of its own per run.
    const runAll = async (b: Backend) => {
      const rng = new Rng(7);
      const gen = (n: number) => rng.uniforms(n, -1, 1);
      const got: unknown[] = [];
      for (const c of MATMUL_CASES.filter((c) => c.k < 10_000)) got.push(await checkMatmul(b, c, gen));
      for (const [label, x, w, o] of CONV_CASES.filter(([label]) => !label.startsWith("long"))) {
        got.push(await checkConv(b, x, w, o, label, gen));
      }
      return got;
    };
    const one = await withWasm({ threads: 1 }, async (b) => await runAll(b));
    const three = await withWasm({ threads: 3 }, async (b) => await runAll(b));
    equal(three.length, one.length);
    one.forEach((r, i) => {
      const a = r as Record<string, Float32Array>, b = three[i] as Record<string, Float32Array>;
      for (const k of Object.keys(a)) {
        const same = a[k].length === b[k].length && a[k].every((v, j) => Object.is(v, b[k][j]));
        ok(same, `result ${i} (${k}) differs between 1 and 3 threads`);
      }
    });
  },
);

wasmTest("matmul() and conv2d() on the plain-SIMD module (no relaxed FMA) match the CPU", async () => {
  await withWasm({ simd: "simd128", threads: 2 }, async (b) => {
    for (const c of MATMUL_CASES.slice(0, 8)) await checkMatmul(b, c);
    for (const [label, x, w, o] of CONV_CASES.slice(0, 6)) await checkConv(b, x, w, o, label);
  });
});
