/**
 * Activations that exports write as small graphs, composed from the primitive ops (so every backend and
 * the tape get them for free): GELU (exact, x/2 (1 + erf(x / sqrt 2)), or the tanh approximation) and SiLU
 * (x sigmoid(x)).
 */
import type { Tensor } from "../tensor.ts";
import { erf, sigmoid } from "./activation.ts";
import { addScalar, mul, scale } from "./elementwise.ts";

function chain(x: Tensor, steps: ((t: Tensor) => Tensor)[]): Tensor {
  let h = x;
  for (const f of steps) {
    const next = f(h);
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

export function gelu(x: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  // tanh(z) = 2 sigmoid(2z) - 1, so 1 + tanh(z) = 2 sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3).
  const inner = approximate === "tanh"
    ? chain(x, [
      (t) => mul(t, t),
      (t) => scale(t, 0.044715),
      (t) => addScalar(t, 1),
      (t) => mul(t, x),
      (t) => scale(t, 2 * Math.sqrt(2 / Math.PI)),
      (t) => sigmoid(t),
      (t) => scale(t, 2),
    ])
    : chain(x, [(t) => scale(t, Math.SQRT1_2), (t) => erf(t), (t) => addScalar(t, 1)]);
  const y = mul(inner, x);
  inner.dispose();
  const out = scale(y, 0.5);
  y.dispose();
  return out;
}

export function silu(x: Tensor): Tensor {
  const s = sigmoid(x);
  const out = mul(x, s);
  s.dispose();
  return out;
}
