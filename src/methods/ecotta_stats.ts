/**
 * Data-free source statistics of the frozen blocks' outputs, read from their BN layers.
 *
 * A BN in eval mode maps its input, whose population statistics on the source data are its running ones, to
 * per-channel mean beta and variance gamma^2 * var / (var + eps). Through the end of a block that gives:
 * - ...BN: (beta, gamma^2 var / (var + eps));
 * - ...BN, ReLU6: the moments of a normal with those parameters clipped to [0, 6] (a Gaussian assumption);
 * - residual x + BN(...): the input's statistics plus the BN's (independence assumption).
 * EcoTTA uses them to calibrate BN_k without warm-up images (ecotta_meta.ts `calibrate`); a block whose end
 * is not one of these (no BN: folded by an eval export) has unknown statistics.
 */
import type { BatchNorm2d } from "../nn/layers.ts";

/** How a block ends, for the statistics of its output. */
export interface StageTail {
  bn: BatchNorm2d;
  relu6: boolean;
  residual: boolean;
}

export interface ChannelStats {
  mean: Float32Array;
  variance: Float32Array;
}

/** Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
function erf(x: number): number {
  const s = Math.sign(x), a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t *
      Math.exp(-a * a);
  return s * y;
}

const cdf = (z: number) => 0.5 * (1 + erf(z / Math.SQRT2));
const pdf = (z: number) => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);

/** Mean and variance of clip(z, lo, hi) for z ~ N(m, s^2). */
export function clippedNormalMoments(m: number, s: number, lo: number, hi: number): [number, number] {
  if (s <= 0) {
    const v = Math.min(hi, Math.max(lo, m));
    return [v, 0];
  }
  const a = (lo - m) / s, b = (hi - m) / s;
  const pa = cdf(a), pb = cdf(b), da = pdf(a), db = pdf(b);
  const inside = pb - pa;
  // E[z; a < Z < b] and E[z^2; a < Z < b] with z = m + sZ.
  const e1 = m * inside + s * (da - db);
  const e2 = m * m * inside + 2 * m * s * (da - db) + s * s * (inside + a * da - b * db);
  const mean = lo * pa + e1 + hi * (1 - pb);
  const second = lo * lo * pa + e2 + hi * hi * (1 - pb);
  return [mean, Math.max(0, second - mean * mean)];
}

/** Per-channel output statistics of a block ending in `tail`, given its input's (null when unknown). */
export async function tailStatistics(
  tail: StageTail,
  input: ChannelStats | null,
): Promise<ChannelStats | null> {
  const { bn } = tail;
  const [gamma, beta, rv] = await Promise.all([bn.weight.data(), bn.bias.data(), bn.runningVar.data()]);
  const c = beta.length;
  const mean = new Float32Array(c), variance = new Float32Array(c);
  for (let i = 0; i < c; i++) {
    const v = gamma[i] * gamma[i] * rv[i] / (rv[i] + bn.eps);
    if (tail.relu6) [mean[i], variance[i]] = clippedNormalMoments(beta[i], Math.sqrt(v), 0, 6);
    else [mean[i], variance[i]] = [beta[i], v];
  }
  if (!tail.residual) return { mean, variance };
  if (!input || input.mean.length !== c) return null;
  return {
    mean: mean.map((m, i) => m + input.mean[i]),
    variance: variance.map((v, i) => v + input.variance[i]),
  };
}
