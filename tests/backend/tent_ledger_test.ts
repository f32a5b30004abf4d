/**
 * The memory ledger over TENT steps on buildIrbNet()'s default net: train mode, only BN affine trainable,
 * entropy loss, backward, Adam. What backward keeps must be exactly the BN x-hats (plus per-channel vectors):
 * frozen convs keep no inputs (TinyTL's rule), every ReLU6 follows a BN whose x-hat rebuilds its input (so it
 * keeps no mask), and nothing leaks across steps.
 */
import { equal, ok } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { Tensor } from "../../src/tensor.ts";
import { backward } from "../../src/autograd/tape.ts";
import { entropy } from "../../src/ops/loss.ts";
import { Adam } from "../../src/ops/optim.ts";
import { Rng } from "../../src/random.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { BatchNorm2d, bnAffine, Conv2d } from "../../src/nn/layers.ts";
import { type Module, onForward } from "../../src/nn/module.ts";

const BATCH = 8;
const STEPS = 20;
const F32 = 4;

function tentStep(model: IrbNet, opt: Adam, x: Tensor): void {
  const logits = model.call(x);
  const loss = entropy(logits);
  logits.dispose();
  backward(loss);
  loss.dispose();
  opt.step();
  opt.zeroGrad();
}

/** What one block should save: the x-hat of each BN; and what would betray a leak. */
interface BlockExpectation {
  xhats: number;
  /** Up to two per-channel vectors per BN (its variance for dx, say). */
  perChannelBound: number;
  /** Lower bound on the bytes of the smallest conv input in the block, had one been saved. */
  smallestConvInput: number;
}

backendTest("buildIrbNet() TENT step saves only BN x-hats (no ReLU6 masks), and leaks nothing", async (b) => {
  const base = b.ledger.liveBytes;
  const model = buildIrbNet(b, { inChannels: 1, numClasses: 10 }).train();
  const params = model.setTrainable(bnAffine);
  const trainableBytes = params.reduce((n, p) => n + p.size * F32, 0);
  const opt = new Adam(params, { lr: 1e-3 });
  const x = Tensor.from(b, new Rng(3).normals(BATCH * 32 * 32), [BATCH, 1, 32, 32]);

  const tagOf = new Map<Module, string>();
  for (const block of model.features.layers) {
    for (const [, m] of block.namedModules()) tagOf.set(m, block.tag!);
  }
  const expected = new Map<string, BlockExpectation>(
    model.blockTags.map((t) => [t, { xhats: 0, perChannelBound: 0, smallestConvInput: Infinity }]),
  );
  const outputs = new Map<number, number>(); // storage id -> bytes, every distinct forward output
  const stopTrace = onForward((m, out) => {
    outputs.set(out.storage.id, out.size * F32);
    const e = expected.get(tagOf.get(m) ?? "");
    if (!e) return;
    if (m instanceof BatchNorm2d) {
      e.xhats += out.size * F32;
      e.perChannelBound += 2 * out.shape[1] * F32;
    } else if (m instanceof Conv2d) {
      // N * Cin * outH * outW: no more than the input (stride >= 1, "same" padding).
      const [n, , h, w] = out.shape;
      const cin = m.weight.shape[1] * m.groups;
      e.smallestConvInput = Math.min(e.smallestConvInput, n * cin * h * w * F32);
    }
  });

  const before = b.ledger.snapshot();
  b.ledger.resetPeak();
  tentStep(model, opt, x);
  stopTrace();
  await b.sync(); // surfaces any device error of the step
  const first = b.ledger.snapshot();

  const activationBytes = [...outputs.values()].reduce((s, v) => s + v, 0);
  const savedPeak = first.peak.saved;
  ok(savedPeak < activationBytes, `saved peak ${savedPeak} < all activations ${activationBytes}`);
  let tagged = 0;
  for (const [tag, e] of expected) {
    const saved = first.savedByTag[tag] ?? 0;
    tagged += saved;
    ok(e.perChannelBound < e.smallestConvInput, `${tag}: the bound can tell a saved conv input apart`);
    ok(
      saved >= e.xhats && saved <= e.xhats + e.perChannelBound,
      `${tag}: saved ${saved} bytes, expected ${e.xhats} (x-hats) + at most ${e.perChannelBound}`,
    );
  }
  // Untagged: the pooled features, classifier and loss keep at most a few [N, classes] tensors.
  ok(savedPeak - tagged <= 4 * BATCH * 10 * F32, `untagged saved bytes ${savedPeak - tagged}`);
  if ((Deno.env.get("EDGETRAIN_DEBUG") ?? "").includes("ledger")) {
    console.log(`${b.name}: saved peak ${savedPeak} B, sum of activations ${activationBytes} B`);
  }

  // After a step only Adam's m and v are new: no saved, activation, gradient or workspace bytes remain.
  const afterStep = before.liveBytes + 2 * trainableBytes;
  equal(first.live.optimizer - before.live.optimizer, 2 * trainableBytes);
  equal(first.live.saved, 0);
  equal(first.live.grads, 0);
  equal(first.live.workspace, before.live.workspace);
  equal(first.liveBytes, afterStep);
  for (let i = 1; i < STEPS; i++) {
    tentStep(model, opt, x);
    equal(b.ledger.liveBytes, afterStep, `live bytes after step ${i + 1}`);
  }
  await b.sync();

  opt.dispose();
  model.dispose();
  x.dispose();
  equal(b.ledger.liveBytes, base);
});
