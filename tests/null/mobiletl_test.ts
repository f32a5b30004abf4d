import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { backward } from "../../src/autograd/tape.ts";
import { withStore } from "../../src/memory/policy.ts";
import { prepareTransfer, transferBlocks, type TransferMethod } from "../../src/methods/mobiletl.ts";
import { BatchNorm2d } from "../../src/nn/layers.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { buildMobileNetV3 } from "../../src/nn/mobilenet_v3.ts";
import { crossEntropy } from "../../src/ops/loss.ts";
import { SGD } from "../../src/ops/optim.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

/** 1x8x8 input, stem 8 channels at stride 1, two residual IRBs 8 -> 48 -> 8 (t = 6), last conv 16. */
function tinyV2(b: CpuBackend): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 4,
    stemChannels: 8,
    stemStride: 1,
    blocks: [[6, 8, 2, 1]],
    lastChannels: 16,
  });
}

/** 1x4x4 input: stem 8 channels, two hard-swish squeeze-excite IRBs 8 -> 48 -> 8, last conv 16. */
function tinyV3(b: CpuBackend): IrbNet {
  return buildMobileNetV3(b, {
    inChannels: 1,
    numClasses: 4,
    stemChannels: 8,
    stemStride: 1,
    blocks: [[3, 6, 8, true, "HS", 1], [3, 6, 8, true, "HS", 1]],
    lastChannels: 16,
    hiddenFeatures: 8,
  });
}

/** Saved bytes per block tag at the end of one forward (the peak), then backward. */
async function savedByBlock(b: CpuBackend, net: IrbNet, method: TransferMethod, k: number, hw: number) {
  const plan = prepareTransfer(net, method, { topBlocks: k });
  const x = Tensor.from(b, new Rng(3).normals(2 * hw * hw), [2, 1, hw, hw]);
  return await withStore(plan.store, () => {
    b.ledger.resetPeak();
    const logits = net.call(x);
    const loss = crossEntropy(logits, [1, 3]);
    const snap = b.ledger.snapshot();
    backward(loss);
    loss.dispose();
    logits.dispose();
    x.dispose();
    net.zeroGrad();
    equal(b.ledger.snapshot().live.saved, 0, "backward released every saved tensor");
    return snap.savedByTag;
  });
}

Deno.test("transferBlocks() finds the inverted residual blocks of an IRB net from its traced graph", () => {
  const b = new CpuBackend();
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
  const blocks = transferBlocks(net, "full");
  // The stem and the last 1x1 conv are layers, not blocks; the names are the modules holding each block.
  deepEqual(blocks.map((x) => x.name), Array.from({ length: 6 }, (_, i) => `features.${i + 1}`));
  deepEqual(blocks.map((x) => x.irb), [true, true, true, true, true, true]);
  deepEqual(blocks.map((x) => x.residual), [true, false, true, false, true, false]);
  equal(blocks[1].bns.length, 3);
  net.dispose();
});

Deno.test("prepareTransfer() mobiletl trains conv weights, inner BN shifts and the last BN of the top blocks", () => {
  const b = new CpuBackend();
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
  const plan = prepareTransfer(net, "mobiletl", { topBlocks: 2 });
  const names = net.namedParameters((_n, p) => p.requiresGrad).map(([n]) => n);
  const block = (i: number) => [
    `features.${i}.conv.0.0.weight`,
    `features.${i}.conv.0.1.bias`,
    `features.${i}.conv.1.0.weight`,
    `features.${i}.conv.1.1.bias`,
    `features.${i}.conv.2.weight`,
    `features.${i}.conv.3.weight`,
    `features.${i}.conv.3.bias`,
  ];
  deepEqual(names, [
    ...block(5),
    ...block(6),
    "features.7.0.weight",
    "features.7.1.weight",
    "features.7.1.bias",
    "classifier.1.weight",
    "classifier.1.bias",
  ]);
  deepEqual(plan.blocks.map((x) => x.name), ["features.5", "features.6"]);
  equal(plan.store, "mask");
  // Batch statistics only where scale and statistics train: the blocks' last BN and the layers above them.
  const training = net.namedModules().filter(([, m]) => m instanceof BatchNorm2d && m.training).map(([n]) =>
    n
  );
  deepEqual(training, ["features.5.conv.3", "features.6.conv.3", "features.7.1"]);
  throws(
    () => prepareTransfer(net, "mobiletl", { topBlocks: 7 }),
    /--top-blocks 7 must be an integer from 0 to 6/,
  );
  net.dispose();
});

Deno.test("prepareTransfer() bias trains only biases in the top blocks and the whole classifier", () => {
  const b = new CpuBackend();
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
  prepareTransfer(net, "bias", { topBlocks: 1 });
  const names = net.namedParameters((_n, p) => p.requiresGrad).map(([n]) => n);
  deepEqual(names, [
    "features.6.conv.0.1.bias",
    "features.6.conv.1.1.bias",
    "features.6.conv.3.bias",
    "features.7.1.bias",
    "classifier.1.weight",
    "classifier.1.bias",
  ]);
  ok(net.namedModules().every(([, m]) => !m.training), "every BN keeps its running statistics");
  net.dispose();
});

Deno.test("mobiletl saves nothing for inner BNs: ledger bytes per V2 block match the analysis", async () => {
  const b = new CpuBackend();
  // Per block, N=2, HW=64, C=8, hidden 48; f32 bytes: x = 4096, a hidden map = 24576.
  const x = 2 * 64 * 8 * 4, hid = 2 * 64 * 48 * 4;
  const masks = 2 * 4 * Math.ceil(2 * 64 * 48 / 32); // two ReLU6 masks of 6144 bits
  const variances = (48 + 48 + 8) * 4; // per-channel variance each BN keeps for dx
  const full = await savedByBlock(b, tinyV2(b), "full", 2, 8);
  const mobile = await savedByBlock(b, tinyV2(b), "mobiletl", 2, 8);
  for (const block of ["features.1", "features.2"]) {
    // full: expand input, x-hat 1, depthwise input, x-hat 2, projection input, x-hat 3; the ReLU6s after
    // x-hats 1 and 2 rebuild their inputs from them, so they keep no masks.
    equal(full[block], x + 4 * hid + x + variances, `full ${block}`);
    // mobiletl: the inner x-hats are gone, so the ReLU6s keep their 1-bit masks.
    equal(mobile[block], x + 2 * hid + x + masks + variances, `mobiletl ${block}`);
  }
});

Deno.test("mobiletl keeps 1-bit masks for hard-swish and hard-sigmoid: V3 block bytes match the analysis", async () => {
  const b = new CpuBackend();
  // N=2, HW=16, C=8, hidden 48, squeeze 16.
  const x = 2 * 16 * 8 * 4, hid = 2 * 16 * 48 * 4, vec = 2 * 48 * 4, sq = 2 * 16 * 4;
  const variances = (48 + 48 + 8) * 4;
  const relu = 4; // squeeze ReLU: 32 bits
  // full: expand input, x-hat 1, hs 1 input, depthwise input, x-hat 2, hs 2 input, SE product input,
  // projection input, x-hat 3; SE: fc1 input, fc2 input, hardsigmoid input, the product's scale.
  const full = await savedByBlock(b, tinyV3(b), "full", 2, 4);
  const mobile = await savedByBlock(b, tinyV3(b), "mobiletl", 2, 4);
  const hsMasks = 2 * 4 * Math.ceil(2 * 16 * 48 / 32), hsigMask = 4 * Math.ceil(2 * 48 / 32);
  for (const block of ["features.1", "features.2"]) {
    equal(full[block], 2 * x + 7 * hid + vec + sq + relu + vec + vec + variances, `full ${block}`);
    // mobiletl: no inner x-hats, hard-swish and hard-sigmoid as masks.
    equal(
      mobile[block],
      2 * x + 3 * hid + hsMasks + vec + sq + relu + hsigMask + vec + variances,
      `mobiletl ${block}`,
    );
  }
});

Deno.test("mobiletl training moves only what it trains: inner BN scale and statistics stay frozen", async () => {
  const b = new CpuBackend();
  const net = tinyV2(b);
  const plan = prepareTransfer(net, "mobiletl", { topBlocks: 1 });
  const before = await net.state();
  const opt = new SGD(plan.params, { lr: 0.1, momentum: 0, weightDecay: 0 });
  const x = Tensor.from(b, new Rng(5).normals(4 * 64), [4, 1, 8, 8]);
  await withStore(plan.store, () => {
    plan.setMode(net);
    const loss = crossEntropy(net.call(x), [0, 1, 2, 3]);
    backward(loss);
    opt.step();
    loss.dispose();
  });
  const after = await net.state();
  const same = (k: string) => deepEqual(after[k], before[k], `${k} must not change`);
  const moved = (k: string) => notDeepEqual(after[k], before[k], `${k} must change`);
  for (const k of ["weight", "running_mean", "running_var"]) same(`features.2.conv.0.1.${k}`);
  moved("features.2.conv.0.1.bias");
  for (const k of ["weight", "bias", "running_mean", "running_var"]) moved(`features.2.conv.3.${k}`);
  moved("features.2.conv.1.0.weight");
  for (const k of Object.keys(before).filter((k) => /^features\.[01]\./.test(k))) same(k);
  x.dispose();
  opt.dispose();
});

Deno.test("prepareTransfer() finds the blocks of an imported torchvision MobileNetV3 from its graph", async () => {
  const { loadModel } = await import("../../src/onnx/model.ts");
  const { importOnnx } = await import("../../src/onnx/import.ts");
  const b = new CpuBackend();
  const net = importOnnx(
    b,
    await loadModel(
      new URL("../../fixtures/models/mobilenet_v3_small_preserve.onnx", import.meta.url).pathname,
    ),
  );
  deepEqual(
    transferBlocks(net, "mobiletl").map((x) => x.name),
    Array.from({ length: 11 }, (_, i) => `features.${i + 1}`),
  );
  const saved: Record<string, Record<string, number>> = {};
  for (const method of ["full", "mobiletl"] as const) {
    const plan = prepareTransfer(net, method, { topBlocks: 1 });
    const trained = net.namedParameters((_n, p) => p.requiresGrad).map(([n]) => n);
    if (method === "mobiletl") {
      // Inner BNs (expansion, depthwise) train their shift only; the projection BN trains both.
      ok(trained.includes("features.11.block.0.1.bias") && !trained.includes("features.11.block.0.1.weight"));
      ok(trained.includes("features.11.block.1.1.bias") && !trained.includes("features.11.block.1.1.weight"));
      ok(
        trained.includes("features.11.block.3.1.weight") &&
          trained.includes("features.11.block.2.fc1.weight"),
      );
    }
    ok(!trained.some((n) => n.startsWith("features.10.")), "blocks below the top one stay frozen");
    const x = Tensor.from(b, new Rng(1).normals(2 * 3 * 32 * 32), [2, 3, 32, 32]);
    saved[method] = await withStore(plan.store, () => {
      b.ledger.resetPeak();
      const loss = crossEntropy(net.call(x), [1, 2]);
      const snap = b.ledger.snapshot();
      backward(loss);
      loss.dispose();
      return snap.savedByTag;
    });
    x.dispose();
    net.zeroGrad();
  }
  ok(saved.mobiletl["features.11"] < saved.full["features.11"], JSON.stringify(saved));
});
