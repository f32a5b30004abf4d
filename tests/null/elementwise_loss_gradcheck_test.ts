import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { gradcheck } from "../../src/autograd/gradcheck.ts";
import { backward } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { add, addScalar, broadcastShapes, div, mul, scale, sub } from "../../src/ops/elementwise.ts";
import { logSoftmax, softmax } from "../../src/ops/softmax.ts";
import { crossEntropy, entropy, entropyPerSample } from "../../src/ops/loss.ts";
import { sum } from "../../src/ops/reduce.ts";

const TOL = 1e-6; // float64 central differences (eps 1e-6): truncation ~1e-12, rounding ~1e-10

/** sum(y * w) with fixed random w, so every output element's gradient is distinct. */
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

// [a, b] shape pairs: equal, trailing vector, both sides broadcast, leading rank difference, scalars.
const PATTERNS: [number[], number[]][] = [
  [[2, 3], [2, 3]],
  [[2, 3, 4], [4]],
  [[2, 1, 4], [3, 1]],
  [[3, 1], [1, 4]],
  [[2, 3, 2, 2], [1, 3, 1, 1]],
  [[4], []],
  [[1], [2, 3]],
];

Deno.test("add(), sub(), mul() and div() backward match finite differences under broadcasting", async () => {
  const ops = { add, sub, mul, div };
  for (const [name, op] of Object.entries(ops)) {
    for (const [sa, sb] of PATTERNS) {
      // div: keep the divisor in [0.5, 1.5] so 1/b^2 is well conditioned.
      const b = name === "div" ? input(sb, 2, 0.5, 1.5) : input(sb, 2);
      const r = await gradcheck((be, [x, y]) => weightedSum(be, op(x, y)), [input(sa, 1), b]);
      ok(r.maxError <= TOL, `${name}([${sa}], [${sb}]): max error ${r.maxError}`);
    }
  }
});

Deno.test("mul() and div() backward match finite differences when one operand is constant", async () => {
  for (const op of [mul, div]) {
    for (const constant of [0, 1]) {
      const inputs = [input([2, 3], 1), { ...input([3], 2, 0.5, 1.5), grad: true }];
      inputs[constant] = { ...inputs[constant], grad: false };
      const r = await gradcheck((be, [x, y]) => weightedSum(be, op(x, y)), inputs);
      ok(r.maxError <= TOL, `${op.name} with input ${constant} constant: max error ${r.maxError}`);
    }
  }
});

Deno.test("mul(x, x) backward accumulates both paths (d/dx x^2 = 2x)", async () => {
  const r = await gradcheck((be, [x]) => weightedSum(be, mul(x, x)), [input([5], 4)]);
  ok(r.maxError <= TOL, `max error ${r.maxError}`);
});

Deno.test("scale() and addScalar() backward match finite differences", async () => {
  const r = await gradcheck((be, [x]) => weightedSum(be, addScalar(scale(x, -2.5), 0.75)), [
    input([2, 3], 1),
  ]);
  ok(r.maxError <= TOL, `max error ${r.maxError}`);
});

Deno.test("add() and addScalar() forward values broadcast like numpy", async () => {
  const b = new CpuBackend();
  const x = Tensor.from(b, [1, 2, 3, 4, 5, 6], [2, 3]);
  const col = Tensor.from(b, [10, 20], [2, 1]);
  const y = add(x, col), z = addScalar(x, 0.5);
  deepEqual(await y.toArray(), [11, 12, 13, 24, 25, 26]);
  deepEqual(y.shape, [2, 3]);
  deepEqual(await z.toArray(), [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
  const s = Tensor.from(b, [2], []), s1 = addScalar(s, 1);
  deepEqual(s1.shape, [], "addScalar() keeps a scalar's shape");
  deepEqual(broadcastShapes("add", [8, 1, 6, 1], [7, 1, 5]), [8, 7, 6, 5]);
  const v2 = Tensor.from(b, [1, 2], [2]);
  throws(() => add(x, v2), /add\(\): shapes \[2, 3\] and \[2\] are not broadcastable \(dim -1: 3 vs 2\)/);
  for (const t of [x, col, y, z, v2, s, s1]) t.dispose();
  equal(b.ledger.liveBytes, 0);
});

Deno.test("mul() saves only the operand the other input's gradient needs", () => {
  const b = new CpuBackend();
  // Both are activations (counted when saved): a trains, c is a constant [3] vector.
  const a = Tensor.from(b, [1, 2, 3, 4, 5, 6], [2, 3], { requiresGrad: true });
  const c = Tensor.from(b, [1, 2, 3], [3]);
  const y = mul(a, c);
  // d/da = dy * c needs c (12 bytes); a itself is not kept since c needs no gradient.
  equal(b.ledger.snapshot().live.saved, 12);
  backward(y, Tensor.full(b, y.shape, 1));
  equal(b.ledger.snapshot().live.saved, 0);
  for (const t of [a.grad!, a, c, y]) t.dispose();
  equal(b.ledger.liveBytes, 0);
});

Deno.test("softmax() and logSoftmax() backward match finite differences", async () => {
  for (const shape of [[3, 5], [2, 2, 4], [1, 1]]) {
    for (const op of [softmax, logSoftmax]) {
      const r = await gradcheck((be, [x]) => weightedSum(be, op(x)), [input(shape, 6, -3, 3)]);
      ok(r.maxError <= TOL, `${op.name}([${shape}]): max error ${r.maxError}`);
    }
  }
});

Deno.test("softmax() and logSoftmax() are stable for large logits", async () => {
  const b = new CpuBackend();
  const x = Tensor.from(b, [1000, 1001, 1002, -1000, 0, 1000], [2, 3]);
  const p = await softmax(x).toArray(), lp = await logSoftmax(x).toArray();
  // exp(-2), exp(-1), 1 normalised: softmax([0, 1, 2]).
  const z = 1 + Math.exp(-1) + Math.exp(-2);
  // Row 2, [-1000, 0, 1000]: exp(-1000) underflows to 0, so [0, 0, 1] without NaN.
  const expected = [Math.exp(-2) / z, Math.exp(-1) / z, 1 / z, 0, 0, 1];
  p.forEach((v, i) => ok(Math.abs(v - expected[i]) < 1e-6, `softmax[${i}] = ${v}`));
  ok(lp.every(Number.isFinite), `logSoftmax is finite: ${lp}`);
  ok(Math.abs(lp[0] - (-2 - Math.log(z))) < 1e-5);
  // log softmax of -1000 in that row is -1000 - 1000 - log(1 + exp(-1000) + exp(-2000)) = -2000 exactly.
  equal(lp[3], -2000);
  const xs = Tensor.from(b, [-1, 2], [1, 2]);
  equal(softmax(xs, 1).shape.join(), "1,2", "axis = rank - 1 is the last axis");
  equal(softmax(x, 0).shape.join(), "2,3", "any axis");
  throws(() => softmax(x, 2), /softmax\(\): axis 2 is out of range for input \[2, 3\]/);
});

Deno.test("crossEntropy(), entropy() and entropyPerSample() backward match finite differences", async () => {
  const logits = input([4, 5], 9, -2, 2);
  const labels = [0, 4, 2, 2];
  const cases: [string, (b: Backend, x: Tensor) => Tensor][] = [
    ["crossEntropy", (_, x) => crossEntropy(x, labels)],
    ["entropy", (_, x) => entropy(x)],
    ["entropyPerSample", (b, x) => weightedSum(b, entropyPerSample(x))],
  ];
  for (const [name, f] of cases) {
    const r = await gradcheck((b, [x]) => f(b, x), [logits]);
    ok(r.maxError <= TOL, `${name}: max error ${r.maxError}`);
  }
});

Deno.test("crossEntropy() and entropy() forward values match their definitions", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const rows = [[1, 2, 3], [0.5, -1, 0]];
  const x = Tensor.from(b, rows.flat(), [2, 3]);
  const lsm = (r: number[]) => {
    const lse = Math.log(r.reduce((p, v) => p + Math.exp(v), 0));
    return r.map((v) => v - lse);
  };
  // F.cross_entropy(x, [2, 0]) = -(lsm(row0)[2] + lsm(row1)[0]) / 2.
  const ce = -(lsm(rows[0])[2] + lsm(rows[1])[0]) / 2;
  const h = rows.map((r) => -lsm(r).reduce((p, l) => p + Math.exp(l) * l, 0));
  const [gotCe] = await crossEntropy(x, [2, 0]).toArray();
  const gotH = await entropyPerSample(x).toArray();
  const [gotMean] = await entropy(x).toArray();
  ok(Math.abs(gotCe - ce) < 1e-12, `crossEntropy ${gotCe} vs ${ce}`);
  ok(
    Math.abs(gotH[0] - h[0]) < 1e-12 && Math.abs(gotH[1] - h[1]) < 1e-12,
    `entropyPerSample ${gotH} vs ${h}`,
  );
  ok(Math.abs(gotMean - (h[0] + h[1]) / 2) < 1e-12);
  throws(() => crossEntropy(x, [2, 3]), /crossEntropy\(\): label 3 at index 1 is not a class in \[0, 3\)/);
  throws(() => crossEntropy(x, [2]), /crossEntropy\(\): 1 labels for logits \[2, 3\]/);
  throws(() => entropy(Tensor.from(b, [1, 2], [2])), /entropy\(\): logits \[2\] must be \[N, C\]/);
});
