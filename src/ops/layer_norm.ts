/**
 * Layer normalisation over the trailing axes from `axis` (ONNX LayerNormalization, PyTorch LayerNorm):
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, with the biased variance. Composed from reduce and
 * broadcast arithmetic (STYLE rule 1), so its backward comes from theirs; gamma/beta broadcast over the
 * leading dims (shape = x.shape[axis:]).
 */
import type { Tensor } from "../tensor.ts";
import { shapeString } from "../tensor.ts";
import { unaryMath } from "./activation.ts";
import { add, addScalar, mul, sub } from "./elementwise.ts";
import { mean } from "./reduce.ts";
import { reshape } from "./shape.ts";

export function layerNorm(
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  options: { axis?: number; eps?: number } = {},
): Tensor {
  const axis = options.axis ?? -1, eps = options.eps ?? 1e-5;
  const a = axis < 0 ? axis + x.rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= x.rank) {
    throw new Error(`layerNorm(): axis ${axis} is out of range for input ${shapeString(x.shape)}`);
  }
  const norm = x.shape.slice(a);
  for (const [name, p] of [["gamma", gamma], ["beta", beta]] as const) {
    if (p && p.shape.join() !== norm.join() && p.size !== norm.reduce((s, d) => s * d, 1)) {
      throw new Error(`layerNorm(): ${name} ${shapeString(p.shape)} does not match ${shapeString(norm)}`);
    }
  }
  const axes = norm.map((_, i) => a + i);
  const mu = mean(x, axes, true);
  const d = sub(x, mu);
  mu.dispose();
  const sq = unaryMath(d, "square");
  const variance = mean(sq, axes, true);
  sq.dispose();
  const ve = addScalar(variance, eps);
  variance.dispose();
  const inv = unaryMath(ve, "rsqrt");
  ve.dispose();
  let y = mul(d, inv);
  d.dispose();
  inv.dispose();
  for (const [p, op] of [[gamma, mul], [beta, add]] as const) {
    if (!p) continue;
    const shaped = p.shape.join() === norm.join() ? p : reshape(p, norm);
    const next = op(y, shaped);
    if (shaped !== p) shaped.dispose();
    y.dispose();
    y = next;
  }
  return y;
}
