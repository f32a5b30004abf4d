/**
 * EcoTTA's warm-up on clean source images, before deployment (paper sec. 3.1, Fig. 3b):
 * 1. calibration (no labels needed): one pass records each frozen partition's output statistics and sets
 *    BN_k to reproduce them from batch statistics (ecotta_meta.ts `calibrate`);
 * 2. with labels: the meta networks train with cross-entropy, backbone frozen (the paper pre-trains them on
 *    the source set; the authors' reference uses CE only, no regulariser, during warm-up).
 */
import { backward } from "../autograd/tape.ts";
import type { ImageSet } from "../data/images.ts";
import type { PreprocessOptions } from "../data/preprocess.ts";
import { batches } from "../data/stream.ts";
import { crossEntropy } from "../ops/loss.ts";
import { Adam } from "../ops/optim.ts";
import { Tensor } from "../tensor.ts";
import { calibrate, ChannelMoments, type MetaNet } from "./ecotta_meta.ts";

export interface WarmupOptions {
  preprocess?: PreprocessOptions;
  /** Cross-entropy epochs over the warm-up set when it has labels (1); 0 calibrates only. */
  epochs?: number;
  /** Batch size (64). */
  batch?: number;
  /** Adam learning rate of the cross-entropy warm-up (1e-3). */
  lr?: number;
  seed?: number;
}

/** What the warm-up needs from EcoTta. */
export interface WarmupTarget {
  metaNets: MetaNet[];
  params: Tensor[];
  /** Logits of the adapted model (on the tape). */
  forward(x: Tensor): Tensor;
  /** A no-gradient pass showing partition k's frozen output y_k before meta network k runs. */
  calibrationPass(x: Tensor, visit: (k: number, y: Tensor) => Promise<void>): Promise<void>;
  verify(x: Tensor): Promise<void>;
}

export interface WarmupReport {
  images: number;
  epochs: number;
  /** Mean cross-entropy of the last epoch, or null without labels. */
  loss: number | null;
}

export async function warmUp(
  target: WarmupTarget,
  set: ImageSet,
  options: WarmupOptions = {},
): Promise<WarmupReport> {
  if (set.n === 0) throw new Error("EcoTTA warm-up: the warm-up image set is empty");
  const backend = target.params[0].backend;
  const batch = options.batch ?? 64;
  const moments = target.metaNets.map((m) => new ChannelMoments(m.bn.runningMean.size));
  for (const { x, shape } of batches(set, batch, { preprocess: options.preprocess })) {
    const input = Tensor.from(backend, x, shape);
    await target.verify(input);
    await target.calibrationPass(input, (k, y) => moments[k].add(y));
    input.dispose();
  }
  target.metaNets.forEach((m, k) => calibrate(m, moments[k].moments()));

  const epochs = set.labels ? options.epochs ?? 1 : 0;
  let loss: number | null = null;
  if (epochs > 0) {
    const opt = new Adam(target.params, { lr: options.lr ?? 1e-3 });
    for (let e = 0; e < epochs; e++) {
      let total = 0, seen = 0;
      const order = { preprocess: options.preprocess, shuffle: true, seed: (options.seed ?? 0) + e };
      for (const { x, shape, labels } of batches(set, batch, order)) {
        if (shape[0] < 2) continue; // BN_k needs more than one value per channel
        const input = Tensor.from(backend, x, shape);
        const logits = target.forward(input);
        input.dispose();
        const ce = crossEntropy(logits, labels!);
        logits.dispose();
        total += (await ce.data())[0] * shape[0];
        seen += shape[0];
        backward(ce);
        ce.dispose();
        opt.step();
        opt.zeroGrad();
      }
      loss = seen ? total / seen : null;
    }
    opt.dispose();
  }
  return { images: set.n, epochs, loss };
}
