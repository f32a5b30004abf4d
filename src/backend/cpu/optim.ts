/** CPU reference kernels for optimizer steps (in place), PyTorch semantics. */
import type { CpuKernel } from "../cpu.ts";

export const sgd: CpuKernel<"sgd"> = ({ param, grad, momentumBuf, attrs }, mem) => {
  const P = mem.f(param), G = mem.f(grad);
  const { n, lr, momentum, dampening, weightDecay, nesterov, firstStep } = attrs;
  // PyTorch keeps no momentum buffer when momentum is 0, so the buffer is neither read nor written then.
  const B = momentum !== 0 ? mem.f(momentumBuf) : null;
  for (let i = 0; i < n; i++) {
    const g = G[i] + weightDecay * P[i];
    let d = g;
    if (B) {
      const buf = firstStep ? g : momentum * B[i] + (1 - dampening) * g;
      B[i] = buf;
      d = nesterov ? g + momentum * buf : buf;
    }
    P[i] -= lr * d;
  }
};

export const adam: CpuKernel<"adam"> = ({ param, grad, m, v, attrs }, mem) => {
  const P = mem.f(param), G = mem.f(grad), M = mem.f(m), V = mem.f(v);
  const { n, lr, beta1, beta2, eps, weightDecay, decoupled, step } = attrs;
  if (!(step >= 1)) throw new Error(`adam: step must be >= 1, got ${step}`);
  const bc1 = 1 - Math.pow(beta1, step);
  const sqrtBc2 = Math.sqrt(1 - Math.pow(beta2, step));
  const stepSize = lr / bc1;
  for (let i = 0; i < n; i++) {
    let p = P[i], g = G[i];
    if (decoupled) p *= 1 - lr * weightDecay;
    else g += weightDecay * p;
    const mi = beta1 * M[i] + (1 - beta1) * g;
    const vi = beta2 * V[i] + (1 - beta2) * g * g;
    M[i] = mi;
    V[i] = vi;
    // torch.optim.Adam: denom = sqrt(v) / sqrt(1 - beta2^t) + eps; p -= lr / (1 - beta1^t) * m / denom.
    P[i] = p - stepSize * mi / (Math.sqrt(vi) / sqrtBc2 + eps);
  }
};
