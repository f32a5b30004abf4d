/**
 * Run the same computation on the CPU reference and on another backend from identical seeded inputs, and
 * compare the forward output and the gradient of every input that requires one. A non-scalar output is
 * backpropagated with a seeded random upstream gradient (or `seed`).
 */
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { Tensor } from "../src/tensor.ts";
import { backward } from "../src/autograd/tape.ts";
import { Rng } from "../src/random.ts";

export interface CompareInput {
  shape: number[];
  data: ArrayLike<number>;
  grad?: boolean;
}

export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(floor, Math.abs(b[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

async function runOn(
  b: Backend,
  f: (b: Backend, xs: Tensor[]) => Tensor,
  inputs: CompareInput[],
  seed?: ArrayLike<number>,
) {
  const xs = inputs.map((i) =>
    Tensor.from(b, i.data, i.shape, { requiresGrad: i.grad !== false, category: "weights" })
  );
  const y = f(b, xs);
  const out = Array.from(await y.data());
  const grads: number[][] = [];
  if (y.node) {
    // A seeded random upstream gradient: all-ones would hide errors (softmax's gradient of a sum is 0).
    const s = y.size > 1 ? Tensor.from(b, seed ?? new Rng(7).uniforms(y.size), y.shape) : undefined;
    backward(y, s);
    for (const x of xs) grads.push(x.grad ? Array.from(await x.grad.data()) : []);
  }
  y.dispose();
  for (const x of xs) {
    x.grad?.dispose();
    x.dispose();
  }
  return { out, grads };
}

/**
 * Returns the max relative error (|a-b| / max(1,|b|)) of the forward output and of each input gradient,
 * `b` vs the CPU reference.
 */
export async function compareWithCpu(
  b: Backend,
  f: (b: Backend, xs: Tensor[]) => Tensor,
  inputs: CompareInput[],
  seed?: ArrayLike<number>,
): Promise<{ forward: number; grads: number[] }> {
  const ref = await runOn(new CpuBackend(), f, inputs, seed);
  const got = await runOn(b, f, inputs, seed);
  return {
    forward: maxRelDiff(got.out, ref.out),
    grads: ref.grads.map((g, i) => maxRelDiff(got.grads[i], g)),
  };
}
