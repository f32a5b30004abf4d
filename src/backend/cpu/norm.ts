/** CPU reference kernels for batch normalisation: statistics, apply, and the two backward kernels. */
import type { CpuKernel } from "../cpu.ts";

// Two passes (mean, then the sum of squared deviations): E[x^2] - E[x]^2 cancels catastrophically in f32
// when |mean| >> std, which real activations (post-ReLU, large images) routinely have.
export const bn_stats: CpuKernel<"bn_stats"> = ({ x, mean, variance, attrs }, mem) => {
  const X = mem.f(x), M = mem.f(mean), V = mem.f(variance);
  const { n, c, hw } = attrs;
  const count = n * hw;
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      for (let i = 0; i < hw; i++) s += X[base + i];
    }
    const mu = s / count;
    let ss = 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      for (let i = 0; i < hw; i++) {
        const d = X[base + i] - mu;
        ss += d * d;
      }
    }
    M[ch] = mu;
    V[ch] = ss / count;
  }
};

export const bn_apply: CpuKernel<"bn_apply"> = (
  { x, mean, variance, gamma, beta, out, xhat, attrs },
  mem,
) => {
  const X = mem.f(x), M = mem.f(mean), V = mem.f(variance), G = mem.f(gamma), B = mem.f(beta);
  const Y = mem.f(out), H = xhat ? mem.f(xhat) : null;
  const { n, c, hw, eps } = attrs;
  for (let ch = 0; ch < c; ch++) {
    const mu = M[ch], invstd = 1 / Math.sqrt(V[ch] + eps), g = G[ch], bt = B[ch];
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      for (let i = 0; i < hw; i++) {
        const h = (X[base + i] - mu) * invstd;
        if (H) H[base + i] = h;
        Y[base + i] = g * h + bt;
      }
    }
  }
};

export const bn_grad_reduce: CpuKernel<"bn_grad_reduce"> = ({ dy, xhat, sumDy, sumDyXhat, attrs }, mem) => {
  const D = mem.f(dy), H = mem.f(xhat), S = mem.f(sumDy), SH = mem.f(sumDyXhat);
  const { n, c, hw } = attrs;
  for (let ch = 0; ch < c; ch++) {
    let s = 0, sh = 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      for (let i = 0; i < hw; i++) {
        s += D[base + i];
        sh += D[base + i] * H[base + i];
      }
    }
    S[ch] = s;
    SH[ch] = sh;
  }
};

export const bn_grad_input: CpuKernel<"bn_grad_input"> = (
  { dy, xhat, gamma, variance, sumDy, sumDyXhat, out, attrs },
  mem,
) => {
  const D = mem.f(dy), G = mem.f(gamma), V = mem.f(variance), DX = mem.f(out);
  const { n, c, hw, eps, training } = attrs;
  if (training && (!xhat || !sumDy || !sumDyXhat)) {
    throw new Error("bn_grad_input: training mode needs xhat, sumDy and sumDyXhat");
  }
  const H = training ? mem.f(xhat!) : null;
  const S = training ? mem.f(sumDy!) : null;
  const SH = training ? mem.f(sumDyXhat!) : null;
  const m = n * hw;
  for (let ch = 0; ch < c; ch++) {
    const k = G[ch] / Math.sqrt(V[ch] + eps);
    const meanDy = S ? S[ch] / m : 0, meanDyXhat = SH ? SH[ch] / m : 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      if (H) {
        for (let i = 0; i < hw; i++) DX[base + i] = k * (D[base + i] - meanDy - H[base + i] * meanDyXhat);
      } else for (let i = 0; i < hw; i++) DX[base + i] = k * D[base + i];
    }
  }
};
