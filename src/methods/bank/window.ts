/**
 * What a new slot opens from (`--bank-open window`): the frames that made the bank open it. A chunk of a
 * whole window or more is itself those frames; smaller chunks (a camera, frame by frame) are kept here, the
 * last `size` frames as device copies (ledger category "bank": frames kept to adapt on).
 */
import { noGrad } from "../../autograd/tape.ts";
import type { Backend } from "../../backend/backend.ts";
import type { Module } from "../../nn/module.ts";
import { clone } from "../../ops/copy.ts";
import { concat } from "../../ops/layout.ts";
import { keep, Tensor } from "../../tensor.ts";
import { statisticsForward, type StreamCore } from "../streaming.ts";
import { batchNorms } from "../tta.ts";

export class FrameWindow {
  #frames: Tensor[] = [];

  constructor(readonly size: number) {}

  /** Keeps x's frames while chunks are smaller than the window; a larger chunk needs none kept. */
  remember(x: Tensor): void {
    if (x.shape[0] >= this.size) {
      this.clear();
      return;
    }
    this.#frames.push(keep(clone(x, { category: "bank" })));
    let rows = this.#frames.reduce((s, t) => s + t.shape[0], 0);
    while (rows - this.#frames[0].shape[0] >= this.size) {
      rows -= this.#frames[0].shape[0];
      this.#frames.shift()!.dispose();
    }
  }

  /** The frames that opened a slot at chunk x: x itself, or the kept window (the caller disposes it if not x). */
  frames(x: Tensor): Tensor {
    return x.shape[0] >= this.size || !this.#frames.length ? x : noGrad(() => concat(this.#frames, 0));
  }

  clear(): void {
    for (const t of this.#frames) t.dispose();
    this.#frames = [];
  }

  /** The kept frames and their shape, for checkpoints (a resumed stream opens from the same frames). */
  async state(prefix: string): Promise<Record<string, Float32Array>> {
    if (!this.#frames.length) return {};
    const all = noGrad(() => concat(this.#frames, 0));
    try {
      const d = await all.data();
      return {
        [prefix]: d instanceof Float32Array ? d.slice() : Float32Array.from(d),
        [`${prefix}.shape`]: Float32Array.from(all.shape),
      };
    } finally {
      all.dispose();
    }
  }

  loadState(prefix: string, state: Record<string, Float32Array>, backend: Backend): void {
    this.clear();
    const data = state[prefix], shape = state[`${prefix}.shape`];
    if (data && shape) {
      this.#frames.push(keep(Tensor.from(backend, data, Array.from(shape), { category: "bank" })));
    }
  }
}

/**
 * A new slot's BN statistics from `frames` (the core's own statistics pass, with every BN's momentum 1 for
 * the while), so that a domain the method would need thousands of frames to normalise is normalised from its
 * first window; the method's robust statistics refine them from there. Only the bank knows a new domain
 * began here.
 */
export async function statisticsFrom(model: Module, core: StreamCore, frames: Tensor): Promise<void> {
  const bns = batchNorms(model).map(([, bn]) => bn);
  const momentum = bns.map((bn) => bn.momentum);
  for (const bn of bns) bn.momentum = 1;
  try {
    if (core.statisticsPass) await core.statisticsPass(frames);
    else await statisticsForward(model, frames);
  } finally {
    bns.forEach((bn, i) => (bn.momentum = momentum[i]));
  }
}
