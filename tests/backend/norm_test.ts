import { ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { backendTest } from "../_backends.ts";
import { type CompareInput, compareWithCpu, maxRelDiff } from "../_compare.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { batchNorm2d, type BatchNormOptions } from "../../src/ops/norm.ts";

// Relative tolerance (floor 1) for forward and every gradient. BN needs no looser bound at these sizes: the
// per-channel sums run over m = N*H*W <= 50 values, so a different f32 summation order moves them by about
// m * 2^-24 * max|term| ~ 1e-5, and dx's difference of three such terms stays well inside 1e-4.
const TOL = 1e-4;

function inputs(
  shape: number[],
  grads: { x: boolean; gamma: boolean; beta: boolean },
  offset = 0,
): CompareInput[] {
  const rng = new Rng(21);
  const c = shape[1];
  const n = shape.reduce((p, d) => p * d, 1);
  return [
    { shape, data: Array.from(rng.normals(n), (v) => v + offset), grad: grads.x },
    { shape: [c], data: rng.uniforms(c, 0.5, 1.5), grad: grads.gamma },
    { shape: [c], data: rng.uniforms(c, -0.5, 0.5), grad: grads.beta },
    { shape: [c], data: rng.uniforms(c, -0.2, 0.2), grad: false },
    { shape: [c], data: rng.uniforms(c, 0.5, 2), grad: false },
  ];
}

const bn = (options: BatchNormOptions) => (_: Backend, [x, gamma, beta, runningMean, runningVar]: Tensor[]) =>
  batchNorm2d(x, { gamma, beta, runningMean, runningVar }, options);

const ALL = { x: true, gamma: true, beta: true };

function check(r: { forward: number; grads: number[] }, label: string): void {
  ok(r.forward <= TOL, `${label}: forward ${r.forward}`);
  r.grads.forEach((g, i) => ok(g <= TOL, `${label}: grad of input ${i}: ${g}`));
}

backendTest("batchNorm2d() training forward and x/gamma/beta grads match the CPU reference", async (b) => {
  check(await compareWithCpu(b, bn({ training: true }), inputs([2, 4, 5, 5], ALL)), "training");
});

backendTest("batchNorm2d() eval forward and grads match the CPU reference", async (b) => {
  check(await compareWithCpu(b, bn({ training: false }), inputs([2, 4, 3, 3], ALL)), "eval");
});

backendTest("batchNorm2d() on [N, C] input matches the CPU reference", async (b) => {
  check(await compareWithCpu(b, bn({ training: true }), inputs([6, 5], ALL)), "[N, C]");
});

backendTest("batchNorm2d() with only beta or only gamma trainable matches the CPU reference", async (b) => {
  const beta = { x: false, gamma: false, beta: true }, gamma = { x: false, gamma: true, beta: false };
  check(await compareWithCpu(b, bn({ training: true }), inputs([2, 3, 4, 4], beta)), "beta only");
  check(await compareWithCpu(b, bn({ training: true }), inputs([2, 3, 4, 4], gamma)), "gamma only");
});

backendTest(
  "batchNorm2d() statistics stay accurate when the mean is large (two-pass variance)",
  async (b) => {
    // Mean 100, std 1: a one-pass E[x^2] - E[x]^2 in f32 loses ~1e-3 of the variance, which shows in xhat.
    check(await compareWithCpu(b, bn({ training: true }), inputs([2, 3, 5, 5], ALL, 100)), "offset 100");
  },
);

backendTest("batchNorm2d() updates running statistics like the CPU reference", async (b) => {
  const ins = inputs([2, 3, 4, 4], ALL);
  const run = async (be: Backend) => {
    const [x, gamma, beta, runningMean, runningVar] = ins.map((i) => Tensor.from(be, i.data, i.shape));
    noGrad(() => batchNorm2d(x, { gamma, beta, runningMean, runningVar }, { training: true, momentum: 0.2 }))
      .dispose();
    const out = [...await runningMean.toArray(), ...await runningVar.toArray()];
    for (const t of [x, gamma, beta, runningMean, runningVar]) t.dispose();
    return out;
  };
  const d = maxRelDiff(await run(b), await run(new CpuBackend()));
  ok(d <= TOL, `running stats differ by ${d}`);
});
