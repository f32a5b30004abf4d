import { deepEqual, equal, notDeepEqual, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { onForward } from "../../src/nn/module.ts";
import { Conv2d } from "../../src/nn/layers.ts";
import { Tent } from "../../src/methods/tent.ts";
import { Eata } from "../../src/methods/eata.ts";
import { Sar } from "../../src/methods/sar.ts";
import { BnAdapt } from "../../src/methods/bn_adapt.ts";
import { effectiveClasses } from "../../src/methods/collapse.ts";
import { batchNorms } from "../../src/methods/tta.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";

const b = new CpuBackend();

function smallNet(): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
}

function batch(seed: number, n = 8): Tensor {
  return Tensor.from(b, new Rng(seed).normals(n * 16 * 16), [n, 1, 16, 16]);
}

async function snapshot(net: IrbNet): Promise<Record<string, number[]>> {
  const s = await net.state();
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Array.from(v)]));
}

Deno.test("Tent.learn() lowers the minibatch entropy and changes only BN affine parameters", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  // Statistics that follow the stream (track false): learning itself moves nothing but the affine.
  const tent = await Tent.create(net, { lr: 1e-2, stats: { track: false, momentum: 0.05 } });
  const x = batch(1);
  const first = await tent.learn(x);
  let last = first;
  for (let i = 0; i < 5; i++) last = await tent.learn(x);
  ok(last.entropy! < first.entropy!, `entropy ${first.entropy} -> ${last.entropy}`);
  const after = await snapshot(net);
  const bnAffine = new Set(batchNorms(net).flatMap(([n]) => [`${n}.weight`, `${n}.bias`]));
  for (const k of Object.keys(before)) {
    if (bnAffine.has(k)) continue;
    deepEqual(after[k], before[k], `${k} must not change (frozen, or running stats untracked)`);
  }
  ok([...bnAffine].some((k) => after[k].join() !== before[k].join()), "some BN affine parameter moved");
  x.dispose();
  tent.dispose();
});

Deno.test("Tent.learn() with statistics from the bank moves each BN's target mean by the momentum", async () => {
  const net = smallNet();
  const [stemConv] = net.namedModules().filter(([, m]) => m instanceof Conv2d).map(([, m]) => m);
  const [, bn] = batchNorms(net)[0];
  const source = Array.from(await bn.runningMean.data());
  const x = batch(7);
  // The minibatch mean per channel of the first BN's input (the stem conv's output), read with a hook.
  let input: Float32Array | null = null;
  const stop = onForward((m, out) => {
    if (m === stemConv && !input) input = out.data() as unknown as Float32Array;
  });
  const tent = await Tent.create(net, { lr: 0, stats: { track: true, momentum: 0.25 } });
  await tent.learn(x);
  stop();
  const h = await (input as unknown as Promise<Float32Array>);
  const [n, c, hw] = [8, source.length, h.length / (8 * source.length)];
  const mean = Array.from({ length: c }, (_, ch) => {
    let s = 0;
    for (let k = 0; k < n; k++) for (let i = 0; i < hw; i++) s += h[(k * c + ch) * hw + i];
    return s / (n * hw);
  });
  const moved = Array.from(await bn.runningMean.data());
  moved.forEach((v, ch) => {
    const want = 0.75 * source[ch] + 0.25 * mean[ch];
    ok(Math.abs(v - want) < 1e-5, `channel ${ch}: ${v} vs (1 - 0.25) * source + 0.25 * batch = ${want}`);
  });
  tent.reset();
  deepEqual(Array.from(await bn.runningMean.data()), source, "reset restores the source statistics");
  x.dispose();
  tent.dispose();
});

Deno.test("Tent.reset() restores the exact source state, and a fresh optimizer", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const tent = await Tent.create(net, { lr: 1e-2 });
  const x = batch(2);
  await tent.learn(x);
  notDeepEqual(await snapshot(net), before);
  tent.reset();
  deepEqual(await snapshot(net), before);
  // A fresh optimizer: the first step after a reset equals the very first step.
  await tent.learn(x);
  const a = await tent.predict(x);
  tent.reset();
  await tent.learn(x);
  const c = await tent.predict(x);
  deepEqual(Array.from(a.logits), Array.from(c.logits));
  x.dispose();
  tent.dispose();
});

Deno.test("BnAdapt.predict() answers with the source statistics and changes nothing", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const m = await BnAdapt.create(net);
  const x = batch(3);
  const r = await m.predict(x);
  equal(r.logits.length, 8 * 10);
  deepEqual(await snapshot(net), before);
  x.dispose();
});

Deno.test("Eata.learn() spends its first minibatches on the Fisher estimate, then adapts on reliable samples", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  // E0 = 1.0 * ln C keeps every sample: the random net is uncertain.
  const eata = await Eata.create(net, {
    lr: 1e-2,
    entropyMargin: 1.0,
    redundancyMargin: 2,
    fisherBatches: 2,
    stats: { track: false, momentum: 0.05 },
  });
  const x = batch(4);
  for (let i = 0; i < 2; i++) {
    await eata.learn(x);
    deepEqual(await snapshot(net), before, `Fisher minibatch ${i} must not update the model`);
  }
  const r = await eata.learn(x);
  ok(r.updated && r.used === 8, `used ${r.used}`);
  notDeepEqual(await snapshot(net), before);
  // With the default margin (0.4 ln C) the uncertain random net's samples are all filtered out.
  const strict = await Eata.create(smallNet(), { fisherAlpha: 0 });
  const s = await strict.learn(x);
  equal(s.used, 0);
  equal(s.updated, false);
  x.dispose();
  eata.dispose();
  strict.dispose();
});

Deno.test("Sar.learn() asks for a reset to the source model when the entropy EMA falls below its threshold", async () => {
  const net = smallNet();
  const sar = await Sar.create(net, { lr: 1e-2, entropyMargin: 1.0, resetEntropy: 100 });
  const x = batch(5);
  const r = await sar.learn(x);
  ok(r.resetReason?.startsWith("SAR reset"), "an EMA below 100 asks for the reset");
  const calm = await Sar.create(smallNet(), { lr: 1e-2, entropyMargin: 1.0, resetEntropy: 0 });
  const r2 = await calm.learn(x);
  ok(r2.updated && !r2.resetReason);
  ok(calm.ema !== null && calm.ema > 0);
  x.dispose();
  sar.dispose();
  calm.dispose();
});

Deno.test("effectiveClasses() is exp of the histogram's entropy", () => {
  equal(effectiveClasses([Int32Array.of(5, 5)], 2).toFixed(6), "2.000000");
  equal(effectiveClasses([Int32Array.of(10, 0)], 2), 1);
});
