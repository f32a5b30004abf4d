/**
 * Losses composed from differentiable ops (no kernels of their own), so their gradients come from the
 * primitives' autograd on every backend:
 * crossEntropy = mean_n(-logSoftmax(x)[n, label_n]); entropy = mean_n(-sum_c p log p) (TENT, Wang et al.
 * 2021, eq. 2); entropyPerSample keeps the per-sample values for EATA/SAR's filtering and weighting.
 */
import { shapeString, Tensor } from "../tensor.ts";
import { mul, scale } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";
import { logSoftmax, softmax } from "./softmax.ts";

function checkLogits(op: string, logits: Tensor): [number, number] {
  if (logits.rank !== 2) throw new Error(`${op}(): logits ${shapeString(logits.shape)} must be [N, C]`);
  return [logits.shape[0], logits.shape[1]];
}

/** Dispose intermediates of a composition: the graph keeps what backward needs through its saved handles. */
function disposeAll(...ts: Tensor[]): void {
  for (const t of ts) t.dispose();
}

/** Mean cross-entropy of logits [N, C] against integer class labels (PyTorch's F.cross_entropy). */
export function crossEntropy(logits: Tensor, labels: ArrayLike<number>): Tensor {
  const [n, c] = checkLogits("crossEntropy", logits);
  if (labels.length !== n) {
    throw new Error(`crossEntropy(): ${labels.length} labels for logits ${shapeString(logits.shape)}`);
  }
  // The gather of -logp[n, label_n] / N as a product with a constant one-hot matrix, then a full sum.
  const pick = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (!Number.isInteger(l) || l < 0 || l >= c) {
      throw new Error(`crossEntropy(): label ${l} at index ${i} is not a class in [0, ${c})`);
    }
    pick[i * c + l] = -1 / n;
  }
  const w = Tensor.from(logits.backend, pick, [n, c]);
  const lp = logSoftmax(logits);
  const picked = mul(lp, w);
  const loss = sum(picked, [0, 1]);
  disposeAll(w, lp, picked);
  return loss;
}

/** Softmax entropy of each row of logits [N, C]: -sum_c p log p, shape [N]. */
export function entropyPerSample(logits: Tensor): Tensor {
  checkLogits("entropyPerSample", logits);
  const p = softmax(logits);
  const lp = logSoftmax(logits);
  const plp = mul(p, lp);
  const s = sum(plp, [1]);
  const h = scale(s, -1);
  disposeAll(p, lp, plp, s);
  return h;
}

/** Mean softmax entropy over the batch (TENT's loss), a scalar. */
export function entropy(logits: Tensor): Tensor {
  checkLogits("entropy", logits);
  const h = entropyPerSample(logits);
  const loss = mean(h, [0]);
  h.dispose();
  return loss;
}
