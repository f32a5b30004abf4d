import { equal, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { Backend } from "../../src/backend/backend.ts";
import type { Conv2dAttrs } from "../../src/backend/kernels.ts";
import { gradcheck, type GradInput } from "../../src/autograd/gradcheck.ts";
import { backward } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { conv2d, conv2dAttrs, type Conv2dOptions, conv2dOutputShape } from "../../src/ops/conv.ts";
import { linear } from "../../src/ops/linear.ts";
import { flatten } from "../../src/ops/shape.ts";

interface Case {
  name: string;
  x: number[];
  w: number[];
  bias?: boolean;
  opts: Omit<Conv2dOptions, "bias">;
}

// Each case exercises a different CPU path: im2col (general, and a 1-channel input feeding many outputs),
// pointwise GEMM (1x1 s1 p0), direct loops for one input channel and <= 4 outputs per group (depthwise,
// channel multiplier 2, a plain conv of a 1-channel input into 3 channels).
const CASES: Case[] = [
  { name: "plain 3x3", x: [2, 3, 5, 5], w: [4, 3, 3, 3], opts: {} },
  {
    name: "stride 2, padding 1, bias",
    x: [2, 3, 7, 6],
    w: [4, 3, 3, 3],
    bias: true,
    opts: { stride: 2, padding: 1 },
  },
  { name: "dilation 2, padding 2", x: [1, 2, 7, 7], w: [3, 2, 3, 3], opts: { dilation: 2, padding: 2 } },
  { name: "groups=2, bias", x: [2, 4, 5, 5], w: [6, 2, 3, 3], bias: true, opts: { groups: 2, padding: 1 } },
  {
    name: "depthwise stride 2, bias",
    x: [2, 3, 6, 6],
    w: [3, 1, 3, 3],
    bias: true,
    opts: { groups: 3, stride: 2, padding: 1 },
  },
  {
    name: "depthwise channel multiplier 2",
    x: [1, 2, 5, 5],
    w: [4, 1, 3, 3],
    opts: { groups: 2, padding: 1 },
  },
  { name: "1-channel input, 3 outputs", x: [2, 1, 6, 6], w: [3, 1, 3, 3], bias: true, opts: { padding: 1 } },
  { name: "1-channel input, 6 outputs", x: [2, 1, 5, 5], w: [6, 1, 3, 3], bias: true, opts: { padding: 1 } },
  { name: "1x1, bias", x: [2, 4, 3, 3], w: [5, 4, 1, 1], bias: true, opts: {} },
  { name: "1x1 groups=2", x: [2, 4, 3, 3], w: [6, 2, 1, 1], opts: { groups: 2 } },
  { name: "1x1 stride 2", x: [1, 3, 5, 5], w: [2, 3, 1, 1], opts: { stride: 2 } },
  {
    name: "2x3 kernel, stride [2, 1], padding [1, 0], dilation [1, 2]",
    x: [1, 2, 6, 7],
    w: [2, 2, 2, 3],
    opts: { stride: [2, 1], padding: [1, 0], dilation: [1, 2] },
  },
];

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

/** The definition, one multiply-add at a time with explicit bounds checks. */
function naive(a: Conv2dAttrs, x: ArrayLike<number>, w: ArrayLike<number>, bias?: ArrayLike<number>) {
  const cing = a.cin / a.groups, coutg = a.cout / a.groups;
  const y = new Float64Array(a.n * a.cout * a.outH * a.outW);
  const dx = new Float64Array(a.n * a.cin * a.h * a.w); // of sum(y * r) below, r[i] = i % 7 - 3
  const dw = new Float64Array(a.cout * cing * a.kh * a.kw);
  for (let n = 0; n < a.n; n++) {
    for (let co = 0; co < a.cout; co++) {
      for (let oh = 0; oh < a.outH; oh++) {
        for (let ow = 0; ow < a.outW; ow++) {
          const yi = ((n * a.cout + co) * a.outH + oh) * a.outW + ow;
          const r = (yi % 7) - 3;
          let s = bias ? bias[co] : 0;
          for (let c = 0; c < cing; c++) {
            const ci = Math.floor(co / coutg) * cing + c;
            for (let ky = 0; ky < a.kh; ky++) {
              for (let kx = 0; kx < a.kw; kx++) {
                const iy = oh * a.strideH - a.padH + ky * a.dilationH,
                  ix = ow * a.strideW - a.padW + kx * a.dilationW;
                if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) continue;
                const xi = ((n * a.cin + ci) * a.h + iy) * a.w + ix,
                  wi = ((co * cing + c) * a.kh + ky) * a.kw + kx;
                s += x[xi] * w[wi];
                dx[xi] += r * w[wi];
                dw[wi] += r * x[xi];
              }
            }
          }
          y[yi] = s;
        }
      }
    }
  }
  return { y, dx, dw };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const precision of ["f64", "f32"] as const) {
  Deno.test(`conv2d kernels (${precision}) match the direct definition on every path`, async () => {
    // f64 agrees to rounding; f32 storage rounds each value once (sums are carried in f64).
    const tol = precision === "f64" ? 1e-12 : 1e-5;
    const b = new CpuBackend({ precision });
    const rng = new Rng(11);
    for (const c of CASES) {
      const a = conv2dAttrs(c.x, c.w, c.opts);
      const x = Tensor.from(b, rng.uniforms(size(c.x)), c.x);
      const w = Tensor.from(b, rng.uniforms(size(c.w)), c.w);
      const bias = c.bias ? Tensor.from(b, rng.uniforms(a.cout), [a.cout]) : null;
      const yShape = [a.n, a.cout, a.outH, a.outW];
      const r = Tensor.from(b, Array.from({ length: size(yShape) }, (_, i) => (i % 7) - 3), yShape);
      const want = naive(a, await x.data(), await w.data(), bias ? await bias.data() : undefined);
      const y = Tensor.empty(b, yShape), dx = Tensor.empty(b, c.x), dw = Tensor.empty(b, c.w);
      b.run("conv2d", {
        x: x.storage,
        w: w.storage,
        ...(bias ? { bias: bias.storage } : {}),
        out: y.storage,
        attrs: a,
      });
      b.run("conv2d_grad_input", { dy: r.storage, w: w.storage, out: dx.storage, attrs: a });
      b.run("conv2d_grad_weight", { x: x.storage, dy: r.storage, out: dw.storage, attrs: a });
      const errs = [maxAbsDiff(await y.data(), want.y), maxAbsDiff(await dx.data(), want.dx)];
      errs.push(maxAbsDiff(await dw.data(), want.dw) / 10); // dw sums up to N*outH*outW terms of |r| <= 3
      ok(errs.every((e) => e <= tol), `${c.name}: |y|, |dx|, |dw|/10 errors ${errs} > ${tol}`);
      for (const t of [x, w, bias, r, y, dx, dw]) t?.dispose();
    }
    equal(b.ledger.liveBytes, 0, "every tensor was disposed");
  });
}

/** sum(y * r) as a [1, 1] dot product through linear, r a fixed random tensor. */
const dot = (y: Tensor, r: Tensor) => linear(flatten(y, 0), r);

for (const c of CASES) {
  Deno.test(`conv2d() backward matches finite differences: ${c.name}`, async () => {
    const rng = new Rng(size(c.x) + size(c.w));
    const [n, cout, oh, ow] = conv2dOutputShape(c.x, c.w, c.opts);
    const inputs: GradInput[] = [
      { shape: c.x, data: rng.uniforms(size(c.x)) },
      { shape: c.w, data: rng.uniforms(size(c.w)) },
    ];
    if (c.bias) inputs.push({ shape: [cout], data: rng.uniforms(cout) });
    inputs.push({ shape: [1, n * cout * oh * ow], data: rng.uniforms(n * cout * oh * ow), grad: false });
    const res = await gradcheck((_b: Backend, t: Tensor[]) => {
      const y = conv2d(t[0], t[1], { ...c.opts, bias: c.bias ? t[2] : null });
      return dot(y, t[t.length - 1]);
    }, inputs);
    ok(res.maxError <= 1e-6, `max error ${res.maxError}`);
    // A check against an all-zero gradient would pass vacuously.
    for (let i = 0; i < inputs.length - 1; i++) {
      ok(res.analytic[i].some((v) => v !== 0), `input ${i} got no gradient`);
    }
  });
}

Deno.test("conv2d() saves no bytes when the weight is frozen, and exactly its input when the weight trains", () => {
  const b = new CpuBackend();
  const rng = new Rng(3);
  const [n, cin, h, w] = [2, 3, 6, 5];
  for (const trainW of [false, true]) {
    // x is an activation on a trainable path (requiresGrad, category "activations").
    const x = Tensor.from(b, rng.uniforms(n * cin * h * w), [n, cin, h, w], { requiresGrad: true });
    const wt = Tensor.from(b, rng.uniforms(4 * cin * 9), [4, cin, 3, 3], {
      category: "weights",
      requiresGrad: trainW,
    });
    const before = b.ledger.snapshot().live.saved;
    const y = conv2d(x, wt, { padding: 1 });
    const saved = b.ledger.snapshot().live.saved - before;
    equal(saved, trainW ? n * cin * h * w * 4 : 0, `saved bytes with trainable weight=${trainW}`);
    backward(y, Tensor.full(b, y.shape, 1));
    equal(b.ledger.snapshot().live.saved, before, "backward released what was saved");
    ok(x.grad !== null, "x got a gradient");
    equal(wt.grad !== null, trainW, "w got a gradient only when it trains");
    for (const t of [x, x.grad, wt, wt.grad, y]) t?.dispose();
  }
  equal(b.ledger.liveBytes, 0, "every tensor was disposed");
});

Deno.test("conv2d() with only the bias trainable saves nothing and returns only db", () => {
  const b = new CpuBackend();
  const x = Tensor.full(b, [1, 2, 4, 4], 1);
  const w = Tensor.full(b, [3, 2, 3, 3], 0.5, { category: "weights" });
  const bias = Tensor.zeros(b, [3], { category: "weights", requiresGrad: true });
  const y = conv2d(x, w, { bias });
  equal(b.ledger.snapshot().live.saved, 0);
  backward(y, Tensor.full(b, y.shape, 1));
  ok(bias.grad !== null);
  for (const t of [x, w, bias, bias.grad, y]) t?.dispose();
});

Deno.test("conv2dOutputShape() follows floor((H + 2p - d(k-1) - 1) / s) + 1", () => {
  equal(conv2dOutputShape([8, 3, 32, 32], [16, 3, 3, 3], { stride: 2, padding: 1 }).join(), "8,16,16,16");
  equal(conv2dOutputShape([1, 4, 7, 9], [4, 1, 3, 3], { groups: 4, dilation: [2, 3] }).join(), "1,4,3,3");
  equal(conv2dOutputShape([1, 2, 5, 6], [2, 2, 1, 1], { stride: [2, 3] }).join(), "1,2,3,2");
});

Deno.test("conv2d() rejects mismatched shapes naming the op and both shapes", () => {
  const b = new CpuBackend();
  const x = Tensor.zeros(b, [2, 3, 8, 8]);
  const w = Tensor.zeros(b, [4, 2, 3, 3]);
  throws(() => conv2d(x, w), {
    message: "conv2d(): input [2, 3, 8, 8] has 3 channels but weight [4, 2, 3, 3] expects 2 (groups=1)",
  });
  throws(() => conv2d(x, w, { groups: 3 }), /groups=3 must be a positive divisor of the 4 output channels/);
  throws(() => conv2dAttrs([2, 3, 8], [4, 3, 3, 3]), /input \[2, 3, 8\] must be 4-D/);
  throws(() => conv2dAttrs([1, 1, 2, 2], [1, 1, 3, 3]), /kernel 3x3 .* more than the padded input 2x2/);
  throws(() => conv2dAttrs([1, 1, 4, 4], [1, 1, 3, 3], { stride: 0 }), /stride 0 must be an integer >= 1/);
  const wb = Tensor.zeros(b, [4, 3, 3, 3]);
  const bias = Tensor.zeros(b, [5]);
  throws(() => conv2d(x, wb, { bias }), {
    message: "conv2d(): bias [5] must be [4] for weight [4, 3, 3, 3]",
  });
  for (const t of [x, w, wb, bias]) t.dispose();
});
