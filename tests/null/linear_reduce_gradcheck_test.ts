import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { gradcheck, type GradInput } from "../../src/autograd/gradcheck.ts";
import { backward } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { gemm, type GemmOptions, linear, matmul } from "../../src/ops/linear.ts";
import { globalAvgPool, mean, sum } from "../../src/ops/reduce.ts";
import { flatten, reshape } from "../../src/ops/shape.ts";

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

/** sum(y * r) as a [1, 1] dot product, r a fixed random tensor passed as the last (constant) input. */
const dot = (y: Tensor, r: Tensor) => linear(flatten(y, 0), r);

/** Gradcheck f over `shapes` (all trainable) against a random linear functional of its output. */
async function check(name: string, shapes: number[][], outSize: number, f: (t: Tensor[]) => Tensor) {
  const rng = new Rng(shapes.flat().reduce((p, d) => p * 31 + d, 7) >>> 0);
  const inputs: GradInput[] = shapes.map((shape) => ({ shape, data: rng.uniforms(size(shape)) }));
  inputs.push({ shape: [1, outSize], data: rng.uniforms(outSize), grad: false });
  const res = await gradcheck((_b: Backend, t: Tensor[]) => dot(f(t.slice(0, -1)), t[t.length - 1]), inputs);
  ok(res.maxError <= 1e-6, `${name}: max error ${res.maxError}`);
  for (let i = 0; i < shapes.length; i++) {
    ok(res.analytic[i].some((v) => v !== 0), `${name}: input ${i} got no gradient`);
  }
}

Deno.test("linear() backward matches finite differences (with bias, and a 3-D input without)", async () => {
  await check("linear", [[3, 4], [5, 4], [5]], 15, (t) => linear(t[0], t[1], t[2]));
  await check("linear 3-D", [[2, 3, 4], [5, 4]], 30, (t) => linear(t[0], t[1]));
});

Deno.test("matmul() backward matches finite differences (2-D, batched, shared right operand)", async () => {
  await check("matmul", [[3, 4], [4, 2]], 6, (t) => matmul(t[0], t[1]));
  await check("matmul batched", [[2, 3, 4], [2, 4, 5]], 30, (t) => matmul(t[0], t[1]));
  await check("matmul shared b", [[2, 3, 4], [4, 5]], 30, (t) => matmul(t[0], t[1]));
});

const GEMMS: { name: string; a: number[]; b: number[]; c?: number[]; o: GemmOptions }[] = [
  { name: "plain with c [M, N]", a: [3, 4], b: [4, 5], c: [3, 5], o: { alpha: 0.7, beta: 1.3 } },
  { name: "transA", a: [4, 3], b: [4, 5], c: [5], o: { transA: true, alpha: -1.5, beta: 0.5 } },
  { name: "transB, bias row", a: [3, 4], b: [5, 4], c: [1, 5], o: { transB: true } },
  {
    name: "transA transB, c [M, 1]",
    a: [4, 3],
    b: [5, 4],
    c: [3, 1],
    o: { transA: true, transB: true, alpha: 2 },
  },
  { name: "scalar c", a: [3, 4], b: [4, 5], c: [1], o: { beta: 2 } },
  { name: "no c, alpha", a: [3, 4], b: [5, 4], o: { transB: true, alpha: 0.25 } },
];

Deno.test("gemm() backward matches finite differences (transA/transB, alpha/beta, broadcast c)", async () => {
  for (const g of GEMMS) {
    const shapes = g.c ? [g.a, g.b, g.c] : [g.a, g.b];
    await check(`gemm ${g.name}`, shapes, 15, (t) => gemm(t[0], t[1], { ...g.o, c: t[2] ?? null }));
  }
});

Deno.test("gemm() and matmul() forward match the definition", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const rng = new Rng(5);
  for (const g of GEMMS) {
    const [A, B] = [rng.uniforms(size(g.a)), rng.uniforms(size(g.b))];
    const C = g.c ? rng.uniforms(size(g.c)) : null;
    const { alpha = 1, beta = 1, transA = false, transB = false } = g.o;
    const [m, k] = transA ? [g.a[1], g.a[0]] : g.a;
    const n = transB ? g.b[0] : g.b[1];
    const at = (i: number, p: number) => (transA ? A[p * m + i] : A[i * k + p]);
    const bt = (p: number, j: number) => (transB ? B[j * k + p] : B[p * n + j]);
    // c broadcast: [M, N], [N], [1, N], [M, 1] or [1].
    const ct = (i: number, j: number) =>
      !C ? 0 : C.length === m * n ? C[i * n + j] : g.c!.at(-1) === 1 ? C[C.length === 1 ? 0 : i] : C[j];
    const want: number[] = [];
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += at(i, p) * bt(p, j);
        want.push(alpha * s + beta * ct(i, j));
      }
    }
    const ta = Tensor.from(b, A, g.a), tb = Tensor.from(b, B, g.b), tc = C ? Tensor.from(b, C, g.c!) : null;
    const y = gemm(ta, tb, { ...g.o, c: tc });
    deepEqual(y.shape, [m, n]);
    const got = await y.data();
    ok(want.every((v, i) => Math.abs(v - got[i]) <= 1e-12), `gemm ${g.name}: ${got} vs ${want}`);
    for (const t of [ta, tb, tc, y]) t?.dispose();
  }
  // Batched matmul: y[b] = a[b] @ b[b].
  const a = Tensor.from(b, [1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2]);
  const m = Tensor.from(b, [1, 0, 0, 1, 0, 1, 1, 0], [2, 2, 2]); // identity, then a column swap
  const y = matmul(a, m);
  deepEqual(Array.from(await y.data()), [1, 2, 3, 4, 6, 5, 8, 7]);
  for (const t of [a, m, y]) t.dispose();
  equal(b.ledger.liveBytes, 0);
});

Deno.test("matmul kernel matches the definition for every transpose, batch stride, bias and accumulate", async () => {
  const be = new CpuBackend({ precision: "f64" });
  const rng = new Rng(9);
  const [batch, m, n, k] = [3, 4, 5, 6];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (
        const [accumulate, withBias, shareB] of [[false, false, false], [true, true, true], [
          false,
          true,
          false,
        ]]
      ) {
        const A = rng.uniforms(batch * m * k), B = rng.uniforms(batch * k * n), bias = rng.uniforms(n);
        const C0 = rng.uniforms(batch * m * n);
        const want = Float64Array.from(C0, (v) => (accumulate ? v : 0));
        for (let bi = 0; bi < batch; bi++) {
          const bo = shareB ? 0 : bi * k * n;
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              let s = withBias ? bias[j] : 0;
              for (let p = 0; p < k; p++) {
                s += (transA ? A[bi * m * k + p * m + i] : A[bi * m * k + i * k + p]) *
                  (transB ? B[bo + j * k + p] : B[bo + p * n + j]);
              }
              want[bi * m * n + i * n + j] += s;
            }
          }
        }
        const [ta, tb, tbias, tc] = [A, B, bias, C0].map((d) => Tensor.from(be, d, [d.length]));
        be.run("matmul", {
          a: ta.storage,
          b: tb.storage,
          ...(withBias ? { bias: tbias.storage } : {}),
          out: tc.storage,
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
        const got = await tc.data();
        ok(
          want.every((v, i) => Math.abs(v - got[i]) <= 1e-12),
          `transA=${transA} transB=${transB} acc=${accumulate}`,
        );
        for (const t of [ta, tb, tbias, tc]) t.dispose();
      }
    }
  }
});

Deno.test("sum(), mean() and globalAvgPool() backward match finite differences", async () => {
  await check("sum [1]", [[2, 3, 4]], 8, (t) => sum(t[0], [1]));
  await check("sum [0, 2] keepDims", [[2, 3, 4]], 3, (t) => sum(t[0], [0, 2], true));
  await check("sum all", [[2, 3]], 1, (t) => reshape(sum(t[0], [0, 1]), [1]));
  await check("sum none", [[2, 3]], 6, (t) => sum(t[0], []));
  await check("mean [-1]", [[2, 3, 4]], 6, (t) => mean(t[0], [-1]));
  await check("mean [0, 2, 3]", [[2, 3, 2, 2]], 3, (t) => mean(t[0], [0, 2, 3]));
  await check("mean [0, 3] keepDims", [[2, 3, 1, 4]], 3, (t) => mean(t[0], [0, 3], true));
  await check("globalAvgPool", [[2, 3, 3, 2]], 6, (t) => globalAvgPool(t[0]));
});

Deno.test("sum(), mean() and globalAvgPool() forward match the definition and shapes", async () => {
  const b = new CpuBackend({ precision: "f64" });
  const x = Tensor.from(b, Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]); // x[i, j, k] = 12i + 4j + k
  const cases: [Tensor, number[], number[]][] = [
    [sum(x, [1]), [2, 4], [12, 15, 18, 21, 48, 51, 54, 57]],
    [sum(x, [0, 2], true), [1, 3, 1], [60, 92, 124]],
    [mean(x, [-1]), [2, 3], [1.5, 5.5, 9.5, 13.5, 17.5, 21.5]],
    [mean(x, [0, 1, 2]), [], [11.5]],
  ];
  const x4 = reshape(x, [2, 3, 2, 2]);
  cases.push([globalAvgPool(x4), [2, 3, 1, 1], [1.5, 5.5, 9.5, 13.5, 17.5, 21.5]]);
  for (const [y, shape, want] of cases) {
    deepEqual(y.shape, shape);
    deepEqual(Array.from(await y.data()), want);
  }
  throws(() => sum(x, [3]), { message: "sum(): axis 3 is out of range for input [2, 3, 4]" });
  throws(() => mean(x, [1, -2]), /axis -2 is repeated/);
  throws(() => globalAvgPool(x), /globalAvgPool\(\): input \[2, 3, 4\] must be 4-D/);
  for (const [y] of cases) y.dispose();
  x.dispose();
  x4.dispose();
  equal(b.ledger.liveBytes, 0);
});

Deno.test("reshape() and flatten() are views whose gradients flow back", async () => {
  await check("reshape -1", [[2, 3, 4]], 24, (t) => reshape(t[0], [4, -1]));
  await check("flatten", [[2, 3, 2, 2]], 24, (t) => flatten(t[0]));
  const b = new CpuBackend();
  const x = Tensor.zeros(b, [2, 3, 4, 5]);
  deepEqual(flatten(x).shape, [2, 60]);
  deepEqual(flatten(x, 0).shape, [1, 120]);
  deepEqual(flatten(x, -1).shape, [24, 5]);
  deepEqual(flatten(x, 4).shape, [120, 1]);
  deepEqual(reshape(x, [-1, 4, 5]).shape, [6, 4, 5]);
  equal(b.ledger.liveBytes, 120 * 4, "views allocate nothing");
  throws(() => reshape(x, [7, -1]), /cannot reshape \[2, 3, 4, 5\] \(120 elements\) to \[7, -1\]/);
  throws(() => reshape(x, [-1, -1]), /more than one -1/);
  throws(() => flatten(x, 5), /flatten\(\): axis 5 is out of range/);
});

Deno.test("linear(), matmul() and gemm() save the data operand only when the weight trains", () => {
  const b = new CpuBackend();
  const rng = new Rng(1);
  for (const trainW of [false, true]) {
    const x = Tensor.from(b, rng.uniforms(12), [3, 4], { requiresGrad: true });
    const w = Tensor.from(b, rng.uniforms(20), [5, 4], { category: "weights", requiresGrad: trainW });
    const w45 = reshape(w, [4, 5]); // a view: on the weight's path when it trains
    for (const f of [() => linear(x, w), () => matmul(x, w45), () => gemm(x, w, { transB: true })]) {
      const y = f();
      equal(b.ledger.snapshot().live.saved, trainW ? 12 * 4 : 0, `trainable weight=${trainW}`);
      backward(y, Tensor.full(b, y.shape, 1));
      equal(b.ledger.snapshot().live.saved, 0);
      ok(x.grad !== null);
      equal(w.grad !== null, trainW);
      for (const t of [y, x.grad, w.grad]) t?.dispose();
      x.grad = w.grad = null;
    }
    for (const t of [x, w, w45]) t.dispose();
  }
  equal(b.ledger.liveBytes, 0);
});

Deno.test("sum() and globalAvgPool() save nothing for backward", () => {
  const b = new CpuBackend();
  const x = Tensor.full(b, [2, 3, 4, 4], 1, { requiresGrad: true });
  const y = sum(globalAvgPool(x), [0, 1, 2, 3]);
  equal(b.ledger.snapshot().live.saved, 0);
  backward(y);
  deepEqual(x.grad!.shape, [2, 3, 4, 4]);
  for (const t of [x, x.grad, y]) t?.dispose();
});

Deno.test("linear(), matmul() and gemm() reject mismatched shapes naming the op and shapes", () => {
  const b = new CpuBackend();
  const x = Tensor.zeros(b, [3, 4]), w = Tensor.zeros(b, [5, 3]);
  throws(() => linear(x, w), { message: "linear(): input [3, 4] must end in 3 features for weight [5, 3]" });
  throws(() => matmul(x, w), /matmul\(\): a \[3, 4\] and b \[5, 3\] do not multiply/);
  throws(
    () => gemm(x, w),
    /gemm\(\): a \[3, 4\] \(transA=false\) and b \[5, 3\] \(transB=false\) have inner dims 4 and 5/,
  );
  const w2 = Tensor.zeros(b, [3, 2]);
  throws(() => gemm(x, w2, { transA: true, c: x }), {
    message: "gemm(): c [3, 4] does not broadcast to the output [4, 2]",
  });
  for (const t of [x, w, w2]) t.dispose();
});
