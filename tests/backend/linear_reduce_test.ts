/**
 * linear / matmul / gemm, the raw batched matmul kernel, and sum / mean / globalAvgPool / reshape on every
 * backend against the CPU reference. Error metric: |got - ref| / max(1, |ref|) <= 1e-4 (compareWithCpu).
 */
import { equal, ok } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { type CompareInput, compareWithCpu } from "../_compare.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { gemm, linear, matmul } from "../../src/ops/linear.ts";
import { globalAvgPool, mean, sum } from "../../src/ops/reduce.ts";
import { flatten, reshape } from "../../src/ops/shape.ts";

const TOLERANCE = 1e-4;

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

async function expectMatch(
  b: Backend,
  f: (b: Backend, t: Tensor[]) => Tensor,
  shapes: number[][],
  seed: number,
) {
  const rng = new Rng(seed);
  const inputs: CompareInput[] = shapes.map((shape) => ({ shape, data: rng.uniforms(size(shape)) }));
  const err = await compareWithCpu(b, f, inputs);
  ok(err.forward <= TOLERANCE, `forward error ${err.forward}`);
  equal(err.grads.length, shapes.length, "every input got a gradient to compare");
  err.grads.forEach((e, i) => ok(e <= TOLERANCE, `gradient of input ${i} error ${e}`));
}

backendTest("linear() forward and gradients match the CPU reference", async (b) => {
  await expectMatch(b, (_b, t) => linear(t[0], t[1], t[2]), [[6, 20], [10, 20], [10]], 1);
  await expectMatch(b, (_b, t) => linear(t[0], t[1]), [[2, 3, 17], [5, 17]], 2);
});

backendTest("matmul() forward and gradients match the CPU reference (2-D, batched, shared b)", async (b) => {
  await expectMatch(b, (_b, t) => matmul(t[0], t[1]), [[7, 13], [13, 9]], 3);
  await expectMatch(b, (_b, t) => matmul(t[0], t[1]), [[3, 5, 6], [3, 6, 4]], 4);
  await expectMatch(b, (_b, t) => matmul(t[0], t[1]), [[2, 5, 6], [6, 4]], 5);
});

backendTest("gemm() forward and gradients match the CPU reference for every transpose", async (b) => {
  const [m, n, k] = [5, 7, 6];
  let seed = 10;
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = transA ? [k, m] : [m, k], bb = transB ? [n, k] : [k, n];
      await expectMatch(b, (_b, t) => gemm(t[0], t[1], { c: t[2], alpha: 0.5, beta: 1.5, transA, transB }), [
        a,
        bb,
        [m, n],
      ], seed++);
      await expectMatch(b, (_b, t) => gemm(t[0], t[1], { c: t[2], transA, transB }), [a, bb, [n]], seed++);
      await expectMatch(b, (_b, t) => gemm(t[0], t[1], { c: t[2], beta: -1, transA, transB }), [a, bb, [
        m,
        1,
      ]], seed++);
    }
  }
});

backendTest(
  "matmul kernel (batched, transposed, strided, bias, accumulate) matches the CPU reference",
  async (b) => {
    const [batch, m, n, k] = [3, 5, 6, 7];
    let seed = 20;
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const [accumulate, shareB] of [[false, false], [true, true]]) {
          const rng = new Rng(seed++);
          // Inputs are constants here: the raw kernel has no autograd, so only its output is compared.
          const inputs: CompareInput[] = [batch * m * k, batch * k * n, n, batch * m * n].map((len) => ({
            shape: [len],
            data: rng.uniforms(len),
            grad: false,
          }));
          const err = await compareWithCpu(b, (be, t) => {
            const out = Tensor.empty(be, [batch * m * n]);
            be.run("copy", {
              x: t[3].storage,
              out: out.storage,
              attrs: { n: out.size, srcOffset: 0, dstOffset: 0 },
            });
            be.run("matmul", {
              a: t[0].storage,
              b: t[1].storage,
              bias: t[2].storage,
              out: out.storage,
              attrs: {
                batch,
                m,
                n,
                k,
                transA,
                transB,
                strideA: m * k,
                strideB: shareB ? 0 : k * n,
                strideC: m * n,
                accumulate,
              },
            });
            return out;
          }, inputs);
          ok(
            err.forward <= TOLERANCE,
            `transA=${transA} transB=${transB} accumulate=${accumulate}: ${err.forward}`,
          );
        }
      }
    }
  },
);

backendTest("sum(), mean() and globalAvgPool() forward and gradients match the CPU reference", async (b) => {
  await expectMatch(b, (_b, t) => sum(t[0], [1]), [[3, 5, 4]], 30);
  await expectMatch(b, (_b, t) => sum(t[0], [0, 2, 3], true), [[3, 4, 5, 5]], 31);
  await expectMatch(b, (_b, t) => mean(t[0], [-1]), [[6, 33]], 32);
  await expectMatch(b, (_b, t) => mean(t[0], [0, 1, 2]), [[2, 3, 4]], 33);
  await expectMatch(b, (_b, t) => globalAvgPool(t[0]), [[2, 6, 5, 5]], 34);
});

backendTest("reshape() and flatten() gradients match the CPU reference", async (b) => {
  // Views alone have nothing to compute: pass them through a matmul so data actually moves.
  await expectMatch(
    b,
    (_b, t) => matmul(flatten(t[0]), reshape(t[1], [-1, 4])),
    [[3, 2, 2, 3], [3, 4, 4]],
    40,
  );
});
