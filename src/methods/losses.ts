/** Loss pieces the TTA methods share, composed from differentiable ops. */
import { add, mul, scale, sub } from "../ops/elementwise.ts";
import { entropyPerSample } from "../ops/loss.ts";
import { logSoftmax } from "../ops/softmax.ts";
import { sum } from "../ops/reduce.ts";
import { Tensor } from "../tensor.ts";

/** sum_i w_i * H(softmax(logits_i)); weights are constants (filters and EATA's re-weighting, / count). */
export function weightedEntropy(logits: Tensor, weights: Float32Array): Tensor {
  const h = entropyPerSample(logits);
  const w = Tensor.from(logits.backend, weights, [weights.length]);
  const hw = mul(h, w);
  const loss = sum(hw, [0]);
  for (const t of [h, w, hw]) t.dispose();
  return loss;
}

/**
 * sum_i w_i * CE(softmax(targets_i), logits_i) / n = -sum_i w_i sum_c q_ic log p_ic / n, with q the targets'
 * probabilities (constants: a teacher's soft labels, RoTTA eq. 6) and w per-sample weights.
 */
export function softCrossEntropy(logits: Tensor, targets: Float64Array, weights: ArrayLike<number>): Tensor {
  const [n, c] = logits.shape;
  if (targets.length !== n * c || weights.length !== n) {
    throw new Error(
      `softCrossEntropy(): ${targets.length} targets and ${weights.length} weights for [${n}, ${c}]`,
    );
  }
  const pick = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < c; k++) pick[i * c + k] = -weights[i] * targets[i * c + k] / n;
  }
  const q = Tensor.from(logits.backend, pick, [n, c]);
  const lp = logSoftmax(logits);
  const prod = mul(lp, q);
  const loss = sum(prod, [0, 1]);
  for (const t of [q, lp, prod]) t.dispose();
  return loss;
}

/** EWC (Kirkpatrick et al. 2017) as EATA uses it: alpha * sum_k F_k (p_k - p0_k)^2. */
export function ewcPenalty(params: Tensor[], fisher: Tensor[], anchors: Tensor[], alpha: number): Tensor {
  let total: Tensor | null = null;
  params.forEach((p, i) => {
    const d = sub(p, anchors[i]);
    const d2 = mul(d, d);
    const fd2 = mul(d2, fisher[i]);
    const s = sum(fd2, [0]);
    for (const t of [d, d2, fd2]) t.dispose();
    if (total) {
      const next: Tensor = add(total, s);
      total.dispose();
      s.dispose();
      total = next;
    } else total = s;
  });
  const scaled = scale(total!, alpha);
  (total as Tensor | null)?.dispose();
  return scaled;
}

/** Cosine similarity of two probability vectors. */
export function cosine(a: ArrayLike<number>, aOffset: number, b: ArrayLike<number>, n: number): number {
  let dot = 0, na = 0, nb = 0;
  for (let c = 0; c < n; c++) {
    const x = a[aOffset + c], y = b[c];
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  // F.cosine_similarity clamps each norm at eps = 1e-8.
  return dot / (Math.max(Math.sqrt(na), 1e-8) * Math.max(Math.sqrt(nb), 1e-8));
}
