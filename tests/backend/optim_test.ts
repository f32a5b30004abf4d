import { ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { backendTest } from "../_backends.ts";
import { maxRelDiff } from "../_compare.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { Adam, SGD } from "../../src/ops/optim.ts";

// Parameters are O(1) and each step moves them by <= lr ~ 0.05; an f32 kernel differs from the reference by
// a few ulps of p per step, so 1e-5 (relative, floor 1) is loose enough yet catches any formula error,
// which would be a fraction of lr.
const TOL = 1e-5;

async function run(b: Backend, make: (ps: Tensor[]) => SGD | Adam): Promise<number[]> {
  const rng = new Rng(31);
  const shapes = [[3, 5], [7]];
  const ps = shapes.map((s) =>
    Tensor.from(b, rng.normals(s[0] * (s[1] ?? 1)), s, { requiresGrad: true, category: "weights" })
  );
  const opt = make(ps);
  for (let t = 0; t < 3; t++) {
    for (const p of ps) {
      p.grad?.dispose();
      p.grad = Tensor.from(b, rng.normals(p.size), p.shape, { category: "grads" });
    }
    opt.step();
  }
  const out: number[] = [];
  for (const p of ps) out.push(...await p.toArray());
  opt.zeroGrad();
  opt.dispose();
  for (const p of ps) p.dispose();
  return out;
}

backendTest(
  "SGD.step() matches the CPU reference (momentum, dampening, weight decay, nesterov)",
  async (b) => {
    const cases = [
      { lr: 0.05 },
      { lr: 0.05, weightDecay: 0.01 },
      { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 },
      { lr: 0.05, momentum: 0.9, weightDecay: 0.01, nesterov: true },
    ];
    for (const o of cases) {
      const d = maxRelDiff(
        await run(b, (ps) => new SGD(ps, o)),
        await run(new CpuBackend(), (ps) => new SGD(ps, o)),
      );
      ok(d <= TOL, `${JSON.stringify(o)}: ${d}`);
    }
  },
);

backendTest("Adam.step() and AdamW.step() match the CPU reference", async (b) => {
  const cases = [
    { lr: 0.01 },
    { lr: 0.01, beta1: 0.8, beta2: 0.99, weightDecay: 0.1 },
    { lr: 0.01, weightDecay: 0.1, decoupled: true },
  ];
  for (const o of cases) {
    const d = maxRelDiff(
      await run(b, (ps) => new Adam(ps, o)),
      await run(new CpuBackend(), (ps) => new Adam(ps, o)),
    );
    ok(d <= TOL, `${JSON.stringify(o)}: ${d}`);
  }
});
