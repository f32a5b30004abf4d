/**
 * Gradient checks: analytic gradients from the tape against float64 central differences on the CPU backend.
 *
 * `f` builds a scalar loss from its input tensors (all marked requiresGrad). Each input element is nudged by
 * ±eps and the loss recomputed without recording, so the check covers every op on the path.
 */
import { CpuBackend } from "../backend/cpu.ts";
import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../tensor.ts";
import { backward, noGrad } from "./tape.ts";

export interface GradInput {
  shape: number[];
  data: ArrayLike<number>;
  /** false: a constant input (no gradient checked, requiresGrad stays false). */
  grad?: boolean;
}

export interface GradcheckResult {
  /** Largest |analytic - numeric| / max(1, |numeric|) over all checked elements. */
  maxError: number;
  analytic: Float64Array[];
  numeric: Float64Array[];
}

export async function gradcheck(
  f: (b: Backend, inputs: Tensor[]) => Tensor,
  inputs: GradInput[],
  options: { eps?: number } = {},
): Promise<GradcheckResult> {
  const eps = options.eps ?? 1e-6;
  const b = new CpuBackend({ precision: "f64" });
  const make = (datas: Float64Array[], grad: boolean) =>
    inputs.map((inp, i) =>
      Tensor.from(b, datas[i], inp.shape, { requiresGrad: grad && inp.grad !== false, category: "weights" })
    );
  const base = inputs.map((inp) => Float64Array.from(inp.data));

  const ts = make(base, true);
  const loss = f(b, ts);
  if (loss.size !== 1) throw new Error(`gradcheck(): f must return a scalar, got [${loss.shape}]`);
  backward(loss);
  const analytic: Float64Array[] = [];
  for (let i = 0; i < ts.length; i++) {
    const g = ts[i].grad;
    analytic.push(g ? Float64Array.from(await g.data()) : new Float64Array(ts[i].size));
  }

  const evalAt = async (datas: Float64Array[]) => {
    const xs = make(datas, false);
    const l = noGrad(() => f(b, xs));
    const v = (await l.data())[0];
    l.dispose();
    for (const x of xs) x.dispose();
    return v;
  };

  const numeric: Float64Array[] = [];
  let maxError = 0;
  for (let i = 0; i < inputs.length; i++) {
    const num = new Float64Array(base[i].length);
    if (inputs[i].grad !== false) {
      for (let j = 0; j < base[i].length; j++) {
        const orig = base[i][j];
        base[i][j] = orig + eps;
        const up = await evalAt(base);
        base[i][j] = orig - eps;
        const down = await evalAt(base);
        base[i][j] = orig;
        num[j] = (up - down) / (2 * eps);
        const err = Math.abs(analytic[i][j] - num[j]) / Math.max(1, Math.abs(num[j]));
        if (err > maxError) maxError = err;
      }
    }
    numeric.push(num);
  }
  return { maxError, analytic, numeric };
}
