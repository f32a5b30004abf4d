import { deepEqual, equal, notDeepEqual, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { Tent } from "../../src/methods/tent.ts";
import { Eata } from "../../src/methods/eata.ts";
import { Sar } from "../../src/methods/sar.ts";
import { BnAdapt } from "../../src/methods/bn_adapt.ts";
import { CollapseGuard, effectiveClasses } from "../../src/methods/collapse.ts";
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

Deno.test("Tent.step() lowers the batch entropy and changes only BN affine parameters", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const tent = await Tent.create(net, { lr: 1e-2 });
  const x = batch(1);
  const first = await tent.step(x);
  let last = first;
  for (let i = 0; i < 5; i++) last = await tent.step(x);
  ok(last.entropy < first.entropy, `entropy ${first.entropy} -> ${last.entropy}`);
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

Deno.test("Tent.reset() restores the exact source state (episodic protocol)", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const tent = await Tent.create(net, { lr: 1e-2 });
  const x = batch(2);
  await tent.step(x);
  notDeepEqual(await snapshot(net), before);
  tent.reset();
  deepEqual(await snapshot(net), before);
  // A fresh optimizer: the first step after a reset equals the very first step.
  const a = await tent.step(x);
  tent.reset();
  const c = await tent.step(x);
  deepEqual(Array.from(a.logits), Array.from(c.logits));
  x.dispose();
  tent.dispose();
});

Deno.test("BnAdapt.step() trains nothing and leaves every parameter and running statistic unchanged", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const m = await BnAdapt.create(net);
  const x = batch(3);
  const r = await m.step(x);
  equal(r.updated, false);
  equal(r.logits.length, 8 * 10);
  deepEqual(await snapshot(net), before);
  x.dispose();
});

Deno.test("Eata.step() spends its first batches on the Fisher estimate, then adapts on reliable samples", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  // E0 = 1.0 * ln C keeps every sample: the random net is uncertain.
  const eata = await Eata.create(net, {
    lr: 1e-2,
    entropyMargin: 1.0,
    redundancyMargin: 2,
    fisherBatches: 2,
  });
  const x = batch(4);
  for (let i = 0; i < 2; i++) {
    await eata.step(x);
    deepEqual(await snapshot(net), before, `Fisher batch ${i} must not update the model`);
  }
  const r = await eata.step(x);
  ok(r.updated && r.used === 8, `used ${r.used}`);
  notDeepEqual(await snapshot(net), before);
  // With the default margin (0.4 ln C) the uncertain random net's samples are all filtered out.
  const strict = await Eata.create(smallNet(), { fisherAlpha: 0 });
  const s = await strict.step(x);
  equal(s.used, 0);
  equal(s.updated, false);
  x.dispose();
  eata.dispose();
  strict.dispose();
});

Deno.test("Sar.step() resets to the source model when the entropy EMA falls below its threshold", async () => {
  const net = smallNet();
  const before = await snapshot(net);
  const sar = await Sar.create(net, { lr: 1e-2, entropyMargin: 1.0, resetEntropy: 100 });
  const x = batch(5);
  const r = await sar.step(x);
  ok(r.reset, "an EMA below 100 triggers the reset");
  deepEqual(await snapshot(net), before);
  const calm = await Sar.create(smallNet(), { lr: 1e-2, entropyMargin: 1.0, resetEntropy: 0 });
  const r2 = await calm.step(x);
  ok(r2.updated && !r2.reset);
  ok(calm.ema !== null && calm.ema > 0);
  x.dispose();
  sar.dispose();
  calm.dispose();
});

Deno.test("CollapseGuard.observe() flags a stream whose predictions collapse to one class", () => {
  equal(effectiveClasses([Int32Array.of(5, 5)], 2).toFixed(6), "2.000000");
  equal(effectiveClasses([Int32Array.of(10, 0)], 2), 1);
  const guard = new CollapseGuard(10, { window: 2 });
  const spread = Int32Array.from({ length: 50 }, (_, i) => i % 10);
  const collapsed = new Int32Array(50).fill(3);
  equal(guard.observe(spread), null);
  equal(guard.observe(spread), null, "first full window sets the reference");
  equal(guard.observe(spread), null);
  equal(guard.observe(collapsed), null, "half a window is not yet a collapse");
  ok(guard.observe(collapsed)?.includes("collapse guard"));
});
