import { ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { backendTest } from "../_backends.ts";
import { compareWithCpu } from "../_compare.ts";
import type { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { add, addScalar, div, mul, scale, sub } from "../../src/ops/elementwise.ts";
import { logSoftmax, softmax } from "../../src/ops/softmax.ts";
import { crossEntropy, entropy, entropyPerSample } from "../../src/ops/loss.ts";

// Relative tolerance (floor 1) for the forward output and every gradient: these ops are a few f32 flops per
// element plus row sums over <= 10 values, so backends differ by a few ulps.
const TOL = 1e-4;

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);
const data = (shape: number[], seed: number, lo = -1, hi = 1) => ({
  shape,
  data: new Rng(seed).uniforms(size(shape), lo, hi),
});

function check(r: { forward: number; grads: number[] }, label: string): void {
  ok(r.forward <= TOL, `${label}: forward ${r.forward}`);
  r.grads.forEach((g, i) => ok(g <= TOL, `${label}: grad of input ${i}: ${g}`));
}

const PATTERNS: [number[], number[]][] = [
  [[2, 3, 4], [2, 3, 4]],
  [[2, 3, 4], [4]],
  [[2, 1, 4], [3, 1]],
  [[2, 3, 2, 2], [1, 3, 1, 1]],
  [[5], []],
];

backendTest("add(), sub(), mul() and div() with broadcasting match the CPU reference", async (b) => {
  const ops = { add, sub, mul, div };
  for (const [name, op] of Object.entries(ops)) {
    for (const [sa, sb] of PATTERNS) {
      const rhs = name === "div" ? data(sb, 2, 0.5, 1.5) : data(sb, 2);
      check(
        await compareWithCpu(b, (_, [x, y]) => op(x, y), [data(sa, 1), rhs]),
        `${name}([${sa}], [${sb}])`,
      );
    }
  }
});

backendTest("scale() and addScalar() match the CPU reference", async (b) => {
  check(
    await compareWithCpu(b, (_, [x]) => addScalar(scale(x, -1.5), 0.25), [data([3, 7], 3)]),
    "scale+addScalar",
  );
});

backendTest("softmax() and logSoftmax() match the CPU reference, including large logits", async (b) => {
  for (const op of [softmax, logSoftmax]) {
    check(await compareWithCpu(b, (_, [x]) => op(x), [data([4, 10], 4, -3, 3)]), op.name);
    // Logits near 80 overflow exp() in f32 unless the row max is subtracted.
    check(await compareWithCpu(b, (_, [x]) => op(x), [data([3, 6], 5, 75, 90)]), `${op.name} large`);
  }
});

backendTest("crossEntropy(), entropy() and entropyPerSample() match the CPU reference", async (b) => {
  const logits = [data([6, 10], 6, -2, 2)];
  const cases: [string, (b: Backend, xs: Tensor[]) => Tensor][] = [
    ["crossEntropy", (_, [x]) => crossEntropy(x, [0, 9, 3, 3, 5, 1])],
    ["entropy", (_, [x]) => entropy(x)],
    ["entropyPerSample", (_, [x]) => entropyPerSample(x)],
  ];
  for (const [name, f] of cases) check(await compareWithCpu(b, f, logits), name);
});
