import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { backward } from "../../src/autograd/tape.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { EcoTta, splitBlocks } from "../../src/methods/ecotta.ts";
import { l1ToConstant } from "../../src/methods/ecotta_meta.ts";
import { clippedNormalMoments } from "../../src/methods/ecotta_stats.ts";
import { stagedMismatch, stagesOf } from "../../src/methods/ecotta_partition.ts";
import { SourceOnly } from "../../src/methods/bn_adapt.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { decodeModel, loadModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import type { ImageSet } from "../../src/data/images.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";

const b = new CpuBackend();

/** Stem + 5 blocks (four IRBs and the last 1x1 conv): K = 4 splits them [1, 1, 2, 2]. */
function smallNet(seed = 3): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    stemStride: 1,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]],
    lastChannels: 32,
    seed,
  });
}

function batch(seed: number, n = 8): Tensor {
  return Tensor.from(b, new Rng(seed).normals(n * 16 * 16), [n, 1, 16, 16]);
}

function maxAbsDiff(a: ArrayLike<number>, c: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - c[i]));
  return m;
}

async function sourceLogits(net: IrbNet, x: Tensor): Promise<Float32Array> {
  const src = new SourceOnly(net);
  return (await src.step(x)).logits;
}

Deno.test("splitBlocks() puts the stem alone first and the extra blocks in the later partitions", () => {
  deepEqual(splitBlocks(8, 4), [1, 2, 2, 3]);
  deepEqual(splitBlocks(19, 4), [1, 6, 6, 6]);
  deepEqual(splitBlocks(4, 4), [1, 1, 1, 1]);
  deepEqual(splitBlocks(7, 4, 2), [2, 1, 2, 2]);
  throws(() => splitBlocks(3, 4), /cannot split 3 blocks into 4 partitions/);
});

Deno.test("EcoTta.create() with init identity starts as the source model: first logits equal its logits", async () => {
  const net = smallNet();
  const x = batch(1);
  const want = await sourceLogits(net, x);
  const eco = await EcoTta.create(net, { init: "identity" });
  deepEqual(eco.partitionSizes, [1, 1, 2, 2]);
  const got = await eco.predict(x);
  // Eval BN with running variance 1 - eps and a zero conv: identity up to float32 rounding.
  ok(maxAbsDiff(got.logits, want) < 1e-5, `max |diff| ${maxAbsDiff(got.logits, want)}`);
  x.dispose();
  eco.dispose();
});

Deno.test("EcoTta.learn() trains only the meta networks and lowers the entropy of a repeated batch", async () => {
  const net = smallNet();
  const before = await net.state();
  // E0 = ln C keeps every sample, so the entropy term always applies.
  const eco = await EcoTta.create(net, { entropyMargin: 1, kind: "adam", lr: 1e-2 });
  const metaBefore = await eco.state();
  const x = batch(2);
  const first = await eco.learn(x);
  equal(first.updated, true);
  equal(first.used, 8);
  let last = first;
  for (let i = 0; i < 8; i++) last = await eco.learn(x);
  ok(last.entropy! < first.entropy!, `entropy ${first.entropy} -> ${last.entropy}`);
  const after = await net.state();
  for (const k of Object.keys(before)) deepEqual(after[k], before[k], `${k} must stay frozen`);
  const metaAfter = await eco.state();
  ok(
    Object.keys(metaBefore).some((k) =>
      k.endsWith("conv.weight") && maxAbsDiff(metaBefore[k], metaAfter[k]) > 0
    ),
    "a meta conv moved away from zero",
  );
  x.dispose();
  eco.dispose();
});

Deno.test("EcoTta.learn() with no confident sample updates on the regulariser alone", async () => {
  const net = smallNet();
  const eco = await EcoTta.create(net, { entropyMargin: 0 });
  const x = batch(3);
  const r = await eco.learn(x);
  equal(r.used, 0);
  equal(r.updated, true);
  const frozen = await EcoTta.create(smallNet(), { entropyMargin: 0, lambda: 0 });
  const r0 = await frozen.learn(x);
  equal(r0.updated, false, "lambda 0 and no confident sample: nothing to learn from");
  x.dispose();
  eco.dispose();
  frozen.dispose();
});

Deno.test("EcoTta.reset() restores the meta networks and a fresh optimizer", async () => {
  const eco = await EcoTta.create(smallNet(), { entropyMargin: 1, kind: "adam", lr: 1e-2 });
  const start = await eco.state();
  const x = batch(4);
  await eco.learn(x);
  const a = await eco.predict(x);
  await eco.learn(x);
  eco.reset();
  deepEqual(await eco.state(), start);
  await eco.learn(x);
  const c = await eco.predict(x);
  deepEqual(Array.from(c.logits), Array.from(a.logits));
  x.dispose();
  eco.dispose();
});

Deno.test("EcoTta.loadState() continues from a checkpoint exactly", async () => {
  const x = batch(5), x2 = batch(6);
  const one = await EcoTta.create(smallNet(), { entropyMargin: 1 });
  await one.learn(x);
  const saved = await one.state();
  ok(Object.keys(saved).some((k) => k.startsWith("optimizer.")), "the SGD momentum is in the state");
  const two = await EcoTta.create(smallNet(), { entropyMargin: 1 });
  two.loadState(saved);
  await two.learn(x2);
  await one.learn(x2);
  deepEqual(Array.from((await two.predict(x2)).logits), Array.from((await one.predict(x2)).logits));
  for (const t of [x, x2]) t.dispose();
  one.dispose();
  two.dispose();
});

Deno.test("l1ToConstant() is mean |a - y| and its gradient sign(a - y)/n reaches a only", async () => {
  const a = Tensor.from(b, [1, -2, 3, 0.5], [1, 1, 2, 2], { requiresGrad: true });
  const y = Tensor.from(b, [0, 0, 4, 1], [1, 1, 2, 2], { requiresGrad: true });
  const loss = l1ToConstant(a, y);
  // |1| + |-2| + |-1| + |-0.5| = 4.5, over 4 elements.
  equal((await loss.data())[0], 4.5 / 4);
  backward(loss);
  deepEqual(Array.from(await a.grad!.data()), [0.25, -0.25, -0.25, -0.25]);
  equal(y.grad, null, "the frozen output is a constant target");
  for (const t of [loss, a, y]) t.dispose();
});

/** Unlabeled clean images whose one batch is the whole set, so batch statistics equal calibration ones. */
function cleanSet(n: number, seed: number, labels?: boolean): ImageSet {
  const rng = new Rng(seed);
  const pixels = Uint8Array.from({ length: n * 16 * 16 }, () => rng.int(256));
  return {
    n,
    channels: 1,
    height: 16,
    width: 16,
    pixels,
    ...(labels ? { labels: Int32Array.from({ length: n }, () => rng.int(10)) } : {}),
  };
}

Deno.test("EcoTta warm-up calibration makes batch-statistics meta BNs reproduce the source model on its data", async () => {
  const set = cleanSet(16, 7);
  const x = Tensor.from(b, Float32Array.from(set.pixels, (p) => p / 255), [16, 1, 16, 16]);
  const net = smallNet();
  const want = await sourceLogits(net, x);
  const eco = await EcoTta.create(net, { warmup: { set } });
  deepEqual(eco.warmupReport, { images: 16, epochs: 0, loss: null });
  ok(eco.metaNets.every((m) => m.batchStats), "every BN_k normalises with batch statistics");
  const got = await eco.predict(x);
  ok(maxAbsDiff(got.logits, want) < 1e-3, `max |diff| ${maxAbsDiff(got.logits, want)}`);
  x.dispose();
  eco.dispose();
});

Deno.test("EcoTta warm-up with labels trains the meta networks with cross-entropy", async () => {
  const set = cleanSet(32, 8, true);
  const eco = await EcoTta.create(smallNet(), {
    warmup: { set },
    warmupOptions: { epochs: 3, batch: 16, lr: 1e-2 },
  });
  equal(eco.warmupReport!.epochs, 3);
  ok(Number.isFinite(eco.warmupReport!.loss));
  const state = await eco.state();
  ok(Object.keys(state).some((k) => k.endsWith("conv.weight") && state[k].some((v) => v !== 0)));
  eco.reset();
  deepEqual(await eco.state(), state, "reset returns to the warmed-up meta networks");
  eco.dispose();
});

Deno.test("EcoTta on an ONNX-imported IRB net adapts exactly as on the IrbNet it came from", async () => {
  const net = smallNet();
  const onnx = importOnnx(b, decodeModel(await moduleToOnnx(net, { inputShape: [1, 16, 16] })));
  const x = batch(9);
  const native = await EcoTta.create(net, { entropyMargin: 1 });
  const imported = await EcoTta.create(onnx, { entropyMargin: 1, name: "small.onnx" });
  for (let i = 0; i < 3; i++) {
    await native.learn(x);
    await imported.learn(x);
    const [p, q] = [await native.predict(x), await imported.predict(x)];
    ok(maxAbsDiff(p.logits, q.logits) < 1e-4, `step ${i}: max |diff| ${maxAbsDiff(p.logits, q.logits)}`);
  }
  x.dispose();
  native.dispose();
  imported.dispose();
  onnx.dispose();
});

Deno.test("EcoTta partitions an ONNX MobileNetV2 whose modules are named stem, body.N, head (from its graph)", async () => {
  const model = importOnnx(b, await loadModel("fixtures/models/zoo/irb_custom_preserve.onnx"));
  const staged = await stagesOf(model, { name: "irb_custom" });
  deepEqual(staged.stages.map((s) => s.name), [
    "stem",
    "body.0",
    "body.1",
    "body.2",
    "body.3",
    "body.4",
    "head",
  ]);
  deepEqual(staged.stages.map((s) => s.stride), [2, 1, 2, 1, 2, 1, 1]);
  ok(staged.verified, "the chain of stages computes what the graph does (checked on a probe)");
  const x = Tensor.from(b, new Rng(4).normals(2 * 3 * 64 * 64), [2, 3, 64, 64]);
  ok(await stagedMismatch(model, staged, x) < 1e-5);
  const eco = await EcoTta.create(model, { entropyMargin: 1, name: "irb_custom" });
  const learned = await eco.learn(x);
  ok(learned.updated);
  const r = await eco.predict(x);
  ok(Array.from(r.logits).every(Number.isFinite));
  x.dispose();
  eco.dispose();
  model.dispose();
});

Deno.test("EcoTta.create() names an ONNX model it cannot partition", async () => {
  const model = importOnnx(b, await loadModel("fixtures/models/small_cnn_preserve.onnx"));
  await rejects(
    EcoTta.create(model, { name: "fixtures/models/small_cnn_preserve.onnx" }),
    /EcoTTA cannot partition fixtures\/models\/small_cnn_preserve\.onnx: /,
  );
  model.dispose();
});

Deno.test("clippedNormalMoments() matches the closed form for N(0, 1) clipped to [0, 6]", () => {
  // mean = phi(0) - phi(6) + 6 P(Z > 6) ~ 1/sqrt(2 pi); E[y^2] ~ P(0 < Z < 6) = 1/2, so var ~ 1/2 - 1/(2 pi).
  const [m, v] = clippedNormalMoments(0, 1, 0, 6);
  ok(Math.abs(m - 1 / Math.sqrt(2 * Math.PI)) < 1e-6, `mean ${m}`);
  ok(Math.abs(v - (0.5 - 1 / (2 * Math.PI))) < 1e-6, `variance ${v}`);
  // Far inside the window nothing is clipped: N(3, 0.1^2) keeps its moments.
  const [m3, v3] = clippedNormalMoments(3, 0.1, 0, 6);
  ok(Math.abs(m3 - 3) < 1e-9 && Math.abs(v3 - 0.01) < 1e-7, `${m3} ${v3}`);
});

Deno.test("EcoTta.create() without warm-up reads BN-ended partitions' statistics from the backbone's BN", async () => {
  // Running statistics made exact for a set D (momentum 1, D as one batch), then BN_k calibrated from the BN
  // parameters must match BN_k calibrated by measuring D, where a partition ends in a non-residual IRB.
  const set = cleanSet(32, 11);
  const x = Tensor.from(b, Float32Array.from(set.pixels, (p) => p / 255), [32, 1, 16, 16]);
  const make = () => {
    const net = buildIrbNet(b, {
      inChannels: 1,
      numClasses: 10,
      stemChannels: 8,
      stemStride: 1,
      blocks: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]],
      lastChannels: 32,
      seed: 3,
      bn: { momentum: 1 },
    });
    net.train();
    net.call(x).dispose();
    return net;
  };
  const blocksPerPartition = [2, 1, 2, 1]; // partitions 2 and 3 end in stride-2 IRBs: BN, no residual
  const free = await EcoTta.create(make(), { blocksPerPartition });
  const measured = await EcoTta.create(make(), { blocksPerPartition, warmup: { set } });
  for (const k of [1, 2]) {
    const [a, c] = [free.metaNets[k], measured.metaNets[k]];
    ok(a.batchStats && c.batchStats);
    // gamma_k is the output's standard deviation: the scale both comparisons are relative to.
    const std = Math.max(...Array.from(await c.bn.weight.data(), Math.abs));
    for (const [p, q] of [[a.bn.weight, c.bn.weight], [a.bn.bias, c.bn.bias]]) {
      const d = maxAbsDiff(await p.data(), await q.data());
      ok(d < 0.01 * std, `partition ${k}: max |diff| ${d}, output std ${std}`);
    }
  }
  x.dispose();
  free.dispose();
  measured.dispose();
});
