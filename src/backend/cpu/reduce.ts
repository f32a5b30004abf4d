/** CPU reference kernel: reduce the middle axis of [outer, size, inner]. */
import type { CpuKernel } from "../cpu.ts";

// Sums accumulate in a JS number (f64) even for f32 storage, so the reference is as exact as it can be.
export const reduce: CpuKernel<"reduce"> = ({ x, out, attrs }, mem) => {
  const X = mem.f(x), Y = mem.f(out);
  const { op, outer, size, inner } = attrs;
  for (let o = 0; o < outer; o++) {
    const base = o * size * inner;
    for (let i = 0; i < inner; i++) {
      let acc = op === "max" ? -Infinity : 0;
      if (op === "max") {
        for (let s = 0; s < size; s++) {
          const v = X[base + s * inner + i];
          // NaN propagates, as in PyTorch's max.
          if (v > acc || Number.isNaN(v)) acc = v;
          if (Number.isNaN(acc)) break;
        }
      } else {
        for (let s = 0; s < size; s++) acc += X[base + s * inner + i];
        if (op === "mean") acc /= size;
      }
      Y[o * inner + i] = acc;
    }
  }
};
