/**
 * EcoTTA's meta network beside one frozen partition f_k (Song et al., CVPR 2023, sec. 3.1, Fig. 3):
 *
 *   x~_k = BN_k(f_k(x~_{k-1})) + conv_k(x~_{k-1})
 *
 * BN_k normalises the frozen partition's output (with test-batch statistics once calibrated) and conv_k, a
 * k x k convolution with the partition's stride, adds a correction computed from the partition's input.
 *
 * Deviation from the authors' sample code, whose conv block is Conv-BN-ReLU: here it is one convolution with a
 * bias, zero-initialised. A zero-initialised BN followed by ReLU has zero derivative everywhere (ReLU'(0) = 0),
 * so it could never leave zero; a zero conv adds exactly 0 at the start yet gets a gradient (dW = x * dy), and
 * it saves only its input for backward (no x-hat of an extra BN, no ReLU mask). The "BN + conv".
 */
import type { Backend } from "../backend/backend.ts";
import { withTag } from "../autograd/tape.ts";
import { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d } from "../nn/layers.ts";
import { relu } from "../ops/activation.ts";
import { add, scale, sub } from "../ops/elementwise.ts";
import { sum } from "../ops/reduce.ts";
import type { Tensor } from "../tensor.ts";
import type { ChannelStats } from "./ecotta_stats.ts";

export interface MetaNetOptions {
  inChannels: number;
  outChannels: number;
  stride: number;
  /** 1 or 3 (default 3, as the authors' code); widened to cover every input pixel when stride > 2. */
  kernelSize?: number;
}

function outputChannelsOf(bn: BatchNorm2d): number {
  return bn.runningVar.size;
}

export class MetaNet extends Module {
  readonly bn: BatchNorm2d;
  readonly conv: Conv2d;
  /**
   * false: BN_k is the identity (running mean 0, variance 1, eval mode) with a trainable affine — the start
   * without warm-up data. true: BN_k normalises with batch statistics (after calibration on clean data).
   */
  #batchStats = false;

  constructor(b: Backend, options: MetaNetOptions) {
    super();
    const { inChannels, outChannels, stride } = options;
    // A kernel narrower than the stride would skip input pixels: use the smallest odd size that covers them.
    const k = Math.max(options.kernelSize ?? 3, 2 * Math.floor(stride / 2) + 1);
    this.bn = this.addChild("bn", new BatchNorm2d(b, { numFeatures: outChannels }));
    this.conv = this.addChild(
      "conv",
      new Conv2d(b, { inChannels, outChannels, kernelSize: k, stride, padding: (k - 1) >> 1 }),
    );
    b.write(this.conv.weight.storage, new Float32Array(this.conv.weight.size));
    // Running variance 1 - eps makes the eval-mode BN divide by sqrt(var + eps) = 1: an exact identity.
    b.write(this.bn.runningVar.storage, new Float32Array(outputChannelsOf(this.bn)).fill(1 - this.bn.eps));
    this.batchStats = false;
  }

  get batchStats(): boolean {
    return this.#batchStats;
  }

  set batchStats(on: boolean) {
    this.#batchStats = on;
    this.bn.training = on;
    // Test batches must not move the calibrated source statistics (they are what a reset returns to).
    this.bn.trackRunningStats = false;
  }

  override train(mode = true): this {
    // BN_k's mode follows batchStats, not the caller's train()/eval().
    super.train(mode);
    this.bn.training = this.#batchStats;
    return this;
  }

  forward(_x: Tensor): Tensor {
    throw new Error("MetaNet: call adapt(input, frozenOutput)");
  }

  /** x~ = BN(y) + conv(h) for the partition input h and the frozen partition output y. */
  adapt(h: Tensor, y: Tensor): Tensor {
    return withTag(this.tag ?? "ecotta", () => {
      const c = this.conv.call(h);
      const n = this.bn.call(y);
      if (c.shape.join() !== n.shape.join()) {
        const shapes = `[${c.shape.join(", ")}] vs [${n.shape.join(", ")}]`;
        c.dispose();
        n.dispose();
        throw new Error(`EcoTTA: meta conv output and partition output differ in shape: ${shapes}`);
      }
      const out = add(n, c);
      c.dispose();
      n.dispose();
      return out;
    });
  }
}

/**
 * The self-distilled regulariser of one partition, mean |a - y| (L1, as nn.L1Loss) with y a constant: the
 * frozen output is a target, so no gradient flows into it. |d| = relu(d) + relu(-d) keeps two 1-bit masks
 * for backward instead of d itself.
 */
export function l1ToConstant(a: Tensor, y: Tensor): Tensor {
  const target = y.view(y.shape); // a view carries no autograd node: a stop-gradient alias
  const d = sub(a, target);
  target.dispose();
  const pos = relu(d);
  const negD = scale(d, -1);
  const neg = relu(negD);
  const axes = a.shape.map((_, i) => i);
  const sp = sum(pos, axes);
  const sn = sum(neg, axes);
  const s = add(sp, sn);
  const out = scale(s, 1 / a.size);
  for (const t of [d, pos, negD, neg, sp, sn, s]) t.dispose();
  return out;
}

/** Per-channel sums of x [N, C, H, W] and of its squares, accumulated on the host in float64. */
export class ChannelMoments {
  readonly sum: Float64Array;
  readonly sumSq: Float64Array;
  count = 0;

  constructor(readonly channels: number) {
    this.sum = new Float64Array(channels);
    this.sumSq = new Float64Array(channels);
  }

  async add(x: Tensor): Promise<void> {
    const [n, c] = x.shape;
    const hw = x.size / (n * c);
    const d = await x.data();
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < c; ch++) {
        let s = 0, s2 = 0;
        const o = (i * c + ch) * hw;
        for (let j = 0; j < hw; j++) {
          const v = d[o + j];
          s += v;
          s2 += v * v;
        }
        this.sum[ch] += s;
        this.sumSq[ch] += s2;
      }
    }
    this.count += n * hw;
  }

  /** Mean and biased variance per channel. */
  moments(): ChannelStats {
    const mean = new Float32Array(this.channels), variance = new Float32Array(this.channels);
    for (let c = 0; c < this.channels; c++) {
      const m = this.sum[c] / this.count;
      mean[c] = m;
      variance[c] = Math.max(0, this.sumSq[c] / this.count - m * m);
    }
    return { mean, variance };
  }
}

/**
 * Make BN_k reproduce the frozen output on source data while normalising with batch statistics:
 * gamma = sqrt(var + eps), beta = mean of the frozen output on source data (measured on clean images, or
 * read from the backbone's BN layers: ecotta_stats.ts), so BN_k(y) ~ y on source batches and re-standardises
 * shifted target batches to the source statistics.
 */
export function calibrate(meta: MetaNet, stats: ChannelStats): void {
  const { mean, variance } = stats;
  const bn = meta.bn;
  const b = bn.weight.backend;
  b.write(bn.weight.storage, variance.map((v) => Math.sqrt(v + bn.eps)));
  b.write(bn.bias.storage, mean);
  b.write(bn.runningMean.storage, mean);
  b.write(bn.runningVar.storage, variance);
  meta.batchStats = true;
}
