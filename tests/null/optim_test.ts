import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { Tensor } from "../../src/tensor.ts";
import { Adam, AdamW, SGD, type SgdOptions } from "../../src/ops/optim.ts";

const P0 = [0.5, -1.2, 2.0, 0.1, -0.03];
// Gradient at step t (1-based), fixed so the reference needs no model: g_t[i] = sin(1.7 t + i) - 0.2 i.
const gradAt = (t: number) => P0.map((_, i) => Math.sin(1.7 * t + i) - 0.2 * i);

/**
 * torch.optim.SGD's _single_tensor_sgd, line by line, in a float64 loop:
 *   d_p = grad + wd * param
 *   buf = d_p (first step) | momentum * buf + (1 - dampening) * d_p;  d_p = nesterov ? d_p + momentum * buf : buf
 *   param -= lr * d_p
 */
function sgdReference(o: Required<SgdOptions>, steps: number): number[] {
  const p = [...P0];
  let buf: number[] | null = null;
  for (let t = 1; t <= steps; t++) {
    const g = gradAt(t);
    let dp = p.map((pi, i) => g[i] + o.weightDecay * pi);
    if (o.momentum !== 0) {
      buf = buf === null ? [...dp] : buf.map((bi, i) => o.momentum * bi + (1 - o.dampening) * dp[i]);
      dp = o.nesterov ? dp.map((d, i) => d + o.momentum * buf![i]) : [...buf];
    }
    for (let i = 0; i < p.length; i++) p[i] -= o.lr * dp[i];
  }
  return p;
}

/**
 * torch.optim.Adam / AdamW's _single_tensor_adam in float64:
 *   AdamW: param *= 1 - lr * wd;  Adam: grad += wd * param
 *   exp_avg.lerp_(grad, 1 - beta1);  exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad^2
 *   denom = sqrt(exp_avg_sq) / sqrt(1 - beta2^t) + eps;  param -= lr / (1 - beta1^t) * exp_avg / denom
 */
function adamReference(
  o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean },
  steps: number,
): number[] {
  const p = [...P0];
  const m = P0.map(() => 0), v = P0.map(() => 0);
  for (let t = 1; t <= steps; t++) {
    const g = gradAt(t);
    for (let i = 0; i < p.length; i++) {
      let gi = g[i];
      if (o.decoupled) p[i] *= 1 - o.lr * o.weightDecay;
      else gi += o.weightDecay * p[i];
      m[i] += (gi - m[i]) * (1 - o.beta1);
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - o.beta2 ** t) + o.eps;
      p[i] -= (o.lr / (1 - o.beta1 ** t)) * (m[i] / denom);
    }
  }
  return p;
}

function setGrad(b: CpuBackend, p: Tensor, t: number): void {
  p.grad?.dispose();
  p.grad = Tensor.from(b, gradAt(t), p.shape, { category: "grads" });
}

async function run(
  b: CpuBackend,
  make: (ps: Tensor[]) => SGD | Adam,
  steps: number,
): Promise<number[]> {
  const p = Tensor.from(b, P0, [P0.length], { requiresGrad: true, category: "weights" });
  const opt = make([p]);
  for (let t = 1; t <= steps; t++) {
    setGrad(b, p, t);
    opt.step();
  }
  const out = await p.toArray();
  opt.zeroGrad();
  opt.dispose();
  p.dispose();
  return out;
}

function maxAbsDiff(a: number[], b: number[]): number {
  return Math.max(...a.map((x, i) => Math.abs(x - b[i])));
}

const sgdCases: Required<SgdOptions>[] = [
  { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
  { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0.05, nesterov: false },
  { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false },
  { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0.01, nesterov: false },
  { lr: 0.05, momentum: 0.8, dampening: 0, weightDecay: 0.02, nesterov: true },
];

Deno.test("SGD.step() matches PyTorch's update over 3 steps (momentum, dampening, weight decay, nesterov)", async () => {
  for (const o of sgdCases) {
    const expected = sgdReference(o, 3);
    // f64 backend: the same arithmetic in another order, so only rounding differs.
    const got64 = await run(new CpuBackend({ precision: "f64" }), (ps) => new SGD(ps, o), 3);
    ok(maxAbsDiff(got64, expected) < 1e-12, `f64 ${JSON.stringify(o)}: ${got64} vs ${expected}`);
    // f32 storage: parameters rounded to f32 after each step (|p| <= 2.5, so 1e-6 absolute is a few ulps).
    const got32 = await run(new CpuBackend(), (ps) => new SGD(ps, o), 3);
    ok(maxAbsDiff(got32, expected) < 1e-6, `f32 ${JSON.stringify(o)}: ${got32} vs ${expected}`);
  }
});

Deno.test("Adam.step() and AdamW.step() match PyTorch's bias-corrected update over 3 steps", async () => {
  const cases = [
    { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false },
    { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, decoupled: false },
    { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, decoupled: true },
  ];
  for (const o of cases) {
    const expected = adamReference(o, 3);
    const got64 = await run(new CpuBackend({ precision: "f64" }), (ps) => new Adam(ps, o), 3);
    ok(maxAbsDiff(got64, expected) < 1e-12, `f64 ${JSON.stringify(o)}: ${got64} vs ${expected}`);
    const got32 = await run(new CpuBackend(), (ps) => new Adam(ps, o), 3);
    ok(maxAbsDiff(got32, expected) < 1e-6, `f32 ${JSON.stringify(o)}: ${got32} vs ${expected}`);
  }
  // AdamW's class uses PyTorch's default weight decay 0.01 with decoupled decay.
  const w = adamReference({
    lr: 0.01,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0.01,
    decoupled: true,
  }, 3);
  const gotW = await run(new CpuBackend({ precision: "f64" }), (ps) => new AdamW(ps, { lr: 0.01 }), 3);
  ok(maxAbsDiff(gotW, w) < 1e-12, `AdamW defaults: ${gotW} vs ${w}`);
});

Deno.test("Adam.state() and loadState() resume a run (step count and moments)", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const o = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, decoupled: true };
  const p = Tensor.from(b, P0, [P0.length], { requiresGrad: true, category: "weights" });
  const a = new Adam([p], o);
  for (let t = 1; t <= 2; t++) {
    setGrad(b, p, t);
    a.step();
  }
  const state = await a.state();
  deepEqual(Object.keys(state).sort(), ["0.m", "0.step", "0.v"]);
  deepEqual(Array.from(state["0.step"]), [2]);
  a.dispose();
  // A fresh optimizer over the same values continues where the first left off.
  const resumed = new Adam([p], o);
  resumed.loadState(state);
  setGrad(b, p, 3);
  resumed.step();
  // The checkpoint holds f32 moments, so the resumed step matches to f32 precision.
  ok(maxAbsDiff(await p.toArray(), adamReference(o, 3)) < 1e-7);
  throws(() => resumed.loadState({ "0.m": [1, 2] }), /"0.m" has 2 values but parameter 0 is \[5\]/);
  throws(() => resumed.loadState({ "3.m": [1] }), /unknown key "3.m" for 1 parameters/);
  resumed.zeroGrad();
  resumed.dispose();
  p.dispose();
  equal(b.ledger.liveBytes, 0);
});

Deno.test("SGD.state() and loadState() keep the momentum buffer so the next step is not a first step", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const o = { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0.01, nesterov: false };
  const p = Tensor.from(b, P0, [P0.length], { requiresGrad: true, category: "weights" });
  const s = new SGD([p], o);
  setGrad(b, p, 1);
  s.step();
  const state = await s.state();
  deepEqual(Object.keys(state).sort(), ["0.momentum", "0.step"]);
  s.dispose();
  const resumed = new SGD([p], o);
  resumed.loadState(state);
  for (let t = 2; t <= 3; t++) {
    setGrad(b, p, t);
    resumed.step();
  }
  ok(maxAbsDiff(await p.toArray(), sgdReference(o, 3)) < 1e-7);
  resumed.zeroGrad();
  resumed.dispose();
  p.dispose();
});

Deno.test("Adam.step() creates state lazily, skips parameters without a gradient, and zeroGrad/dispose free memory", () => {
  const b = new CpuBackend();
  const p = Tensor.from(b, P0, [5], { requiresGrad: true, category: "weights" });
  const frozen = Tensor.from(b, [1, 2, 3], [3], { requiresGrad: true, category: "weights" });
  const a = new Adam([p, frozen], { lr: 0.1 });
  equal(b.ledger.snapshot().live.optimizer, 0, "no state before the first step");
  setGrad(b, p, 1);
  a.step();
  // m and v for p only: 2 * 5 elements * 4 bytes.
  equal(b.ledger.snapshot().live.optimizer, 40);
  equal(b.ledger.snapshot().live.grads, 20);
  a.zeroGrad();
  equal(p.grad, null);
  equal(b.ledger.snapshot().live.grads, 0);
  a.dispose();
  equal(b.ledger.snapshot().live.optimizer, 0);
  p.dispose();
  frozen.dispose();
});

Deno.test("SGD() rejects nesterov without momentum, and SGD.step() names a mismatched gradient", () => {
  const b = new CpuBackend();
  const p = Tensor.from(b, [1, 2], [2], { requiresGrad: true, category: "weights" });
  throws(() => new SGD([p], { lr: 0.1, nesterov: true }), /SGD\(\): nesterov needs momentum > 0/);
  const s = new SGD([p], { lr: 0.1 });
  p.grad = Tensor.from(b, [1, 2, 3], [3], { category: "grads" });
  throws(() => s.step(), /SGD.step\(\): gradient \[3\] does not match parameter 0 \[2\]/);
  s.zeroGrad();
  s.dispose();
  p.dispose();
});
