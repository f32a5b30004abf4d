/**
 * The zoo's ops against float64 central differences on the CPU backend (tolerance 1e-6, see
 * elementwise_loss_gradcheck_test.ts): data movement, pooling, pow/where, erf/GELU, layer norm, softmax on
 * any axis and broadcast matmul; and their forward values against hand-computed ones.
 */
import { deepEqual, ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { gradcheck } from "../../src/autograd/gradcheck.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { mul, pow } from "../../src/ops/elementwise.ts";
import { sum } from "../../src/ops/reduce.ts";
import { concat, expand, gather, pad, slice, split, transpose } from "../../src/ops/layout.ts";
import { avgPool2d, maxPool2d } from "../../src/ops/pool.ts";
import { where } from "../../src/ops/select.ts";
import { gelu, silu } from "../../src/ops/gelu.ts";
import { layerNorm } from "../../src/ops/layer_norm.ts";
import { softmax } from "../../src/ops/softmax.ts";
import { matmul } from "../../src/ops/linear.ts";

const TOL = 1e-6;

function weightedSum(b: Backend, y: Tensor, seed = 3): Tensor {
  const w = Tensor.from(b, new Rng(seed).uniforms(y.size), y.shape);
  const yw = mul(y, w);
  const s = sum(yw, y.shape.map((_, i) => i));
  w.dispose();
  yw.dispose();
  return s;
}

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);
const input = (shape: number[], seed: number, lo = -1, hi = 1) => ({
  shape,
  data: new Rng(seed).uniforms(size(shape), lo, hi),
});

async function check(
  name: string,
  f: (b: Backend, xs: Tensor[]) => Tensor,
  inputs: ReturnType<typeof input>[],
) {
  const r = await gradcheck((b, xs) => weightedSum(b, f(b, xs)), inputs);
  ok(r.maxError <= TOL, `${name}: max error ${r.maxError}`);
}

Deno.test("transpose(), slice(), pad(), expand(), concat(), split() and gather() backward match finite differences", async () => {
  await check("transpose", (_, [x]) => transpose(x, [2, 0, 1]), [input([2, 3, 4], 1)]);
  await check("slice", (_, [x]) => slice(x, { starts: [3, 0], ends: [0, 9], axes: [2, 1], steps: [-2, 2] }), [
    input([2, 3, 4], 1),
  ]);
  await check("pad", (_, [x]) => pad(x, [0, 1, 2, 0, 0, -1], 0.5), [input([2, 3, 4], 1)]);
  await check("expand", (_, [x]) => expand(x, [2, 3, 4]), [input([3, 1], 1)]);
  await check("concat", (_, [x, y]) => concat([x, y], 1), [input([2, 3, 2], 1), input([2, 1, 2], 2)]);
  await check("split", (_b, [x]) => {
    const [p, q] = split(x, [1, 2], 1);
    const out = concat([q, p], 1);
    p.dispose();
    q.dispose();
    return out;
  }, [input([2, 3, 2], 1)]);
  await check("gather", (_, [x]) => gather(x, [2, 0, 1, 3], [2, 2], 1), [input([2, 4, 3], 1)]);
});

Deno.test("data movement forward values: slice clamps and steps, pad crops, gather runs", async () => {
  const b = new CpuBackend();
  const x = Tensor.from(b, Array.from({ length: 12 }, (_, i) => i), [3, 4]);
  const vals = async (t: Tensor) => Array.from(await t.data());
  deepEqual(await vals(slice(x, { starts: [-1, 100], ends: [-100, -100], steps: [-2, -3] })), [11, 8, 3, 0]);
  deepEqual(await vals(pad(x, [0, -1, 0, 1], 9)), [1, 2, 3, 9, 5, 6, 7, 9, 9, 10, 11, 9]);
  deepEqual(await vals(gather(x, [3, 1, 0, 1], [4], 1)), [3, 1, 0, 1, 7, 5, 4, 5, 11, 9, 8, 9]);
  deepEqual(await vals(transpose(x)), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
});

Deno.test("maxPool2d() and avgPool2d() backward match finite differences (pads, ceil mode, dilation)", async () => {
  const x = input([1, 2, 7, 6], 5);
  const opts = [
    { kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] },
    { kernel: [3, 2], stride: [2, 2], ceilMode: true },
    { kernel: [2, 2], stride: [1, 2], dilation: [2, 1] },
  ] as const;
  for (const o of opts) {
    await check(`maxPool2d ${JSON.stringify(o)}`, (_, [t]) => maxPool2d(t, { ...o } as never), [x]);
  }
  for (const countIncludePad of [false, true]) {
    for (const o of [opts[0], opts[1], { kernel: [2, 2], stride: [2, 2] }] as const) {
      const p = { ...o, countIncludePad } as never;
      await check(`avgPool2d ${JSON.stringify(p)}`, (_, [t]) => avgPool2d(t, p), [x]);
    }
  }
});

Deno.test("avgPool2d() follows PyTorch's divisor with ceil_mode and count_include_pad", async () => {
  // torch.nn.functional.avg_pool2d(torch.arange(36.).view(1, 1, 6, 6), 3, 2, 1, ceil_mode=True,
  // count_include_pad=True), torch 1.13: the last windows run past the padding and divide by their taps up
  // to the padded extent (corner: 35 / 4), not by 9.
  const b = new CpuBackend();
  const x = Tensor.from(b, Array.from({ length: 36 }, (_, i) => i), [1, 1, 6, 6]);
  const o = {
    kernel: [3, 3],
    stride: [2, 2],
    pads: [1, 1, 1, 1],
    ceilMode: true,
    countIncludePad: true,
  } as const;
  const y = avgPool2d(x, { ...o } as never);
  const got = Array.from(await y.data(), (v) => Math.round(v * 1e4) / 1e4);
  deepEqual(got, [
    1.5556,
    3.3333,
    4.6667,
    2.6667,
    8.3333,
    14,
    16,
    8.5,
    16.3333,
    26,
    28,
    14.5,
    10.1667,
    16,
    17,
    8.75,
  ]);
});

Deno.test("pow(), where(), gelu(), silu(), layerNorm(), softmax(axis) and broadcast matmul() backward match finite differences", async () => {
  await check("pow", (_, [a, e]) => pow(a, e), [input([2, 3], 1, 0.5, 2), input([3], 2)]);
  await check("pow integer exponent, negative base", (b, [a]) => {
    const e = Tensor.from(b, [2, 3], [2]);
    const y = pow(a, e);
    e.dispose();
    return y;
  }, [input([3, 2], 1)]);
  await check("where", (b, [x, y]) => {
    const c = Tensor.from(b, [1, 0, 0, 1, 1, 0], [2, 3]);
    const out = where(c, x, y);
    c.dispose();
    return out;
  }, [input([2, 3], 1), input([3], 2)]);
  await check("gelu", (_, [x]) => gelu(x), [input([7], 1, -3, 3)]);
  await check("gelu tanh", (_, [x]) => gelu(x, "tanh"), [input([7], 1, -3, 3)]);
  await check("silu", (_, [x]) => silu(x), [input([7], 1, -3, 3)]);
  await check("layerNorm", (_, [x, g, bb]) => layerNorm(x, g, bb, { axis: -1, eps: 1e-5 }), [
    input([2, 3, 5], 1),
    input([5], 2),
    input([5], 3),
  ]);
  await check("layerNorm over 2 axes", (_, [x, g]) => layerNorm(x, g, null, { axis: 1 }), [
    input([2, 3, 4], 1),
    input([3, 4], 2),
  ]);
  await check("softmax axis 1", (_, [x]) => softmax(x, 1), [input([2, 3, 4], 1)]);
  await check("matmul broadcast", (_, [a, c]) => matmul(a, c), [input([2, 1, 3, 4], 1), input([3, 4, 2], 2)]);
  await check("matmul 2-D @ batched", (_, [a, c]) => matmul(a, c), [input([3, 4], 1), input([2, 4, 2], 2)]);
  await check("matmul vector @ matrix", (_, [a, c]) => matmul(a, c), [input([4], 1), input([4, 3], 2)]);
  await check("matmul batched @ vector", (_, [a, c]) => matmul(a, c), [input([2, 3, 4], 1), input([4], 2)]);
});
