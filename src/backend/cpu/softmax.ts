/** CPU reference kernel: row-wise softmax / log-softmax of [rows, cols]. */
import type { CpuKernel } from "../cpu.ts";

// Subtracting the row max keeps exp() in range (no overflow to Infinity for logits > ~88 in f32).
export const softmax: CpuKernel<"softmax"> = ({ x, out, attrs }, mem) => {
  const X = mem.f(x), Y = mem.f(out);
  const { rows, cols, log } = attrs;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let max = -Infinity;
    for (let j = 0; j < cols; j++) if (X[base + j] > max) max = X[base + j];
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.exp(X[base + j] - max);
    if (log) {
      const lse = Math.log(sum);
      for (let j = 0; j < cols; j++) Y[base + j] = X[base + j] - max - lse;
    } else {
      for (let j = 0; j < cols; j++) Y[base + j] = Math.exp(X[base + j] - max) / sum;
    }
  }
};
