import { equal, ok, throws } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { gradcheck, type GradInput } from "../../src/autograd/gradcheck.ts";
import { backward, noGrad } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { batchNorm2d, type BatchNormOptions } from "../../src/ops/norm.ts";
import { mul } from "../../src/ops/elementwise.ts";
import { sum } from "../../src/ops/reduce.ts";

const TOL = 1e-6; // float64 central differences (eps 1e-6): truncation ~1e-12, rounding ~1e-10

/** sum(y * w) with fixed random w: a scalar whose gradient is not symmetric in y (a plain sum's dx is 0 for BN). */
function weightedSum(b: Backend, y: Tensor, seed = 3): Tensor {
  const w = Tensor.from(b, new Rng(seed).uniforms(y.size), y.shape);
  const yw = mul(y, w);
  const s = sum(yw, y.shape.map((_, i) => i));
  w.dispose();
  yw.dispose();
  return s;
}

function bnInputs(shape: number[], grads: { x: boolean; gamma: boolean; beta: boolean }): GradInput[] {
  const rng = new Rng(11);
  const c = shape[1];
  return [
    // A non-zero mean and a scale != 1 per channel, so the mean/variance terms of dx matter.
    {
      shape,
      data: Array.from(rng.normals(shape.reduce((p, d) => p * d, 1), 2), (v) => v + 0.7),
      grad: grads.x,
    },
    { shape: [c], data: rng.uniforms(c, 0.5, 1.5), grad: grads.gamma },
    { shape: [c], data: rng.uniforms(c, -0.5, 0.5), grad: grads.beta },
    { shape: [c], data: rng.uniforms(c, -0.3, 0.3), grad: false }, // running mean
    { shape: [c], data: rng.uniforms(c, 0.5, 2), grad: false }, // running var
  ];
}

function bnLoss(options: BatchNormOptions) {
  return (b: Backend, [x, gamma, beta, runningMean, runningVar]: Tensor[]) =>
    weightedSum(b, batchNorm2d(x, { gamma, beta, runningMean, runningVar }, options));
}

const ALL = { x: true, gamma: true, beta: true };

Deno.test("batchNorm2d() training-mode backward matches finite differences for x, gamma and beta", async () => {
  const r = await gradcheck(bnLoss({ training: true }), bnInputs([3, 2, 3, 2], ALL));
  ok(r.maxError <= TOL, `max error ${r.maxError}`);
  ok(r.analytic[0].some((v) => Math.abs(v) > 1e-3), "dx is not trivially zero");
});

Deno.test("batchNorm2d() eval-mode backward matches finite differences (running stats are constants)", async () => {
  const r = await gradcheck(bnLoss({ training: false }), bnInputs([2, 3, 2, 2], ALL));
  ok(r.maxError <= TOL, `max error ${r.maxError}`);
});

Deno.test("batchNorm2d() on [N, C] input matches finite differences in training and eval mode", async () => {
  for (const training of [true, false]) {
    const r = await gradcheck(bnLoss({ training }), bnInputs([5, 4], ALL));
    ok(r.maxError <= TOL, `training=${training}: max error ${r.maxError}`);
  }
});

Deno.test("batchNorm2d() gradients are right for each partial set of trainable inputs", async () => {
  // Each combination takes a different backward path: only beta (channel sum of dy, nothing saved), only
  // gamma (xhat), only x (xhat + variance in training, variance alone in eval).
  const combos = [
    { x: false, gamma: false, beta: true },
    { x: false, gamma: true, beta: false },
    { x: true, gamma: false, beta: false },
  ];
  for (const grads of combos) {
    for (const training of [true, false]) {
      const r = await gradcheck(bnLoss({ training }), bnInputs([2, 3, 2, 3], grads));
      ok(r.maxError <= TOL, `${JSON.stringify(grads)} training=${training}: max error ${r.maxError}`);
    }
  }
});

Deno.test("batchNorm2d() updates running stats with PyTorch's formula (unbiased variance) only when asked", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const [n, c, hw] = [2, 3, 4];
  const [xd, gd, bd, rmd, rvd] = bnInputs([n, c, 2, 2], ALL).map((i) => Array.from(i.data));
  const make = (d: number[], shape: number[]) => Tensor.from(b, d, shape, { category: "weights" });
  const x = make(xd, [n, c, 2, 2]), gamma = make(gd, [c]), beta = make(bd, [c]);
  const runningMean = make(rmd, [c]), runningVar = make(rvd, [c]);
  const momentum = 0.3;
  noGrad(() => batchNorm2d(x, { gamma, beta, runningMean, runningVar }, { training: true, momentum }))
    .dispose();
  // PyTorch: running_mean = (1 - m) * running_mean + m * mean; running_var = (1 - m) * running_var + m * var * M/(M-1).
  const M = n * hw;
  const rm = await runningMean.toArray(), rv = await runningVar.toArray();
  for (let ch = 0; ch < c; ch++) {
    const vals: number[] = [];
    for (let i = 0; i < n; i++) vals.push(...xd.slice((i * c + ch) * hw, (i * c + ch + 1) * hw));
    const mu = vals.reduce((p, v) => p + v, 0) / M;
    const unbiased = vals.reduce((p, v) => p + (v - mu) ** 2, 0) / (M - 1);
    ok(Math.abs(rm[ch] - ((1 - momentum) * rmd[ch] + momentum * mu)) < 1e-12, `running mean ${ch}`);
    ok(Math.abs(rv[ch] - ((1 - momentum) * rvd[ch] + momentum * unbiased)) < 1e-12, `running var ${ch}`);
  }
  // updateStats: false (and eval mode) leave them untouched.
  noGrad(() =>
    batchNorm2d(x, { gamma, beta, runningMean, runningVar }, { training: true, updateStats: false })
  ).dispose();
  noGrad(() => batchNorm2d(x, { gamma, beta, runningMean, runningVar }, { training: false })).dispose();
  equal((await runningMean.toArray()).join(), rm.join());
  equal((await runningVar.toArray()).join(), rv.join());
  const single = make([1, 2, 3], [1, 3]), twoChannels = make([1, 2, 3, 4], [2, 2]);
  throws(
    () => batchNorm2d(single, { gamma, beta, runningMean, runningVar }, { training: true }),
    /batchNorm2d\(\): training needs more than 1 value per channel, input \[1, 3\]/,
  );
  throws(
    () => batchNorm2d(twoChannels, { gamma, beta, runningMean, runningVar }, { training: true }),
    /batchNorm2d\(\): gamma \[3\] does not match input \[2, 2\] \(C=2\)/,
  );
  for (const t of [x, gamma, beta, runningMean, runningVar, single, twoChannels]) t.dispose();
  equal(b.ledger.liveBytes, 0, "no leaked workspace");
});

Deno.test("batchNorm2d() saves xhat only when gamma trains or x needs grad in training, nothing for beta alone", () => {
  const [n, c, h, w] = [2, 3, 4, 4];
  const xhatBytes = n * c * h * w * 4, varBytes = c * 4;
  const cases: { x: boolean; gamma: boolean; beta: boolean; training: boolean; saved: number }[] = [
    { x: false, gamma: false, beta: true, training: true, saved: 0 },
    { x: false, gamma: false, beta: true, training: false, saved: 0 },
    { x: false, gamma: true, beta: true, training: true, saved: xhatBytes },
    { x: false, gamma: true, beta: false, training: false, saved: xhatBytes },
    { x: true, gamma: false, beta: false, training: true, saved: xhatBytes + varBytes },
    { x: true, gamma: false, beta: false, training: false, saved: varBytes },
    { x: true, gamma: true, beta: true, training: true, saved: xhatBytes + varBytes },
    { x: false, gamma: false, beta: false, training: true, saved: 0 },
  ];
  for (const k of cases) {
    const b = new CpuBackend();
    const rng = new Rng(5);
    const param = (data: ArrayLike<number>, shape: number[], grad: boolean) =>
      Tensor.from(b, data, shape, { requiresGrad: grad, category: "weights" });
    const x = param(rng.normals(n * c * h * w), [n, c, h, w], k.x);
    const gamma = param(rng.uniforms(c, 0.5, 1.5), [c], k.gamma), beta = param(rng.uniforms(c), [c], k.beta);
    const runningMean = param([0, 0, 0], [c], false), runningVar = param([1, 1, 1], [c], false);
    const y = batchNorm2d(x, { gamma, beta, runningMean, runningVar }, { training: k.training });
    const label = JSON.stringify(k);
    equal(b.ledger.snapshot().live.saved, k.saved, label);
    equal(b.ledger.snapshot().live.workspace, 0, `${label}: statistics are freed or recounted as saved`);
    if (y.node) {
      backward(y, Tensor.full(b, y.shape, 1));
      equal(b.ledger.snapshot().live.saved, 0, `${label}: backward released everything`);
      for (const [name, t] of Object.entries({ x, gamma, beta })) {
        equal(t.grad !== null, (k as Record<string, unknown>)[name], `${label}: ${name}.grad`);
      }
    } else {
      ok(!k.x && !k.gamma && !k.beta);
    }
    for (const t of [y, x, gamma, beta, runningMean, runningVar]) {
      t.grad?.dispose();
      t.dispose();
    }
    equal(b.ledger.liveBytes, 0, `${label}: nothing leaked`);
  }
});
