/**
 * EcoTTA's memory claim on the ledger: on buildIrbNet()'s default net, a step keeps about 80% fewer saved
 * bytes than a TENT step on the same batch, the frozen blocks keep only 1-bit ReLU6 masks and per-channel
 * vectors (no conv inputs, no BN x-hats), and nothing outlives a step.
 *
 * The bound is 0.21x: TENT's ReLU6 derivatives are recomputed from its BN x-hats (it keeps no masks since),
 * which made TENT 2.8% leaner and moved EcoTTA's unchanged bytes from 0.194x to 0.203x of TENT's.
 */
import { equal, ok } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { BatchNorm2d, ReLU6 } from "../../src/nn/layers.ts";
import { type Module, onForward } from "../../src/nn/module.ts";
import { Tent } from "../../src/methods/tent.ts";
import { EcoTta } from "../../src/methods/ecotta.ts";

const BATCH = 4;
const F32 = 4;

backendTest(
  "EcoTta.step() saves at most 0.21x of Tent.step() and its frozen blocks keep only masks",
  async (b) => {
    const base = b.ledger.liveBytes;
    const x = Tensor.from(b, new Rng(5).normals(BATCH * 32 * 32), [BATCH, 1, 32, 32]);

    const tentNet = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
    const tent = await Tent.create(tentNet);
    b.ledger.resetPeak();
    await tent.learn(x);
    const tentSaved = b.ledger.snapshot().peak.saved;
    tent.dispose();
    tentNet.dispose();

    const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
    const eco = await EcoTta.create(net);
    // Bound on what a frozen block may keep: a mask word per 32 ReLU6 inputs, one variance vector per BN.
    const tagOf = new Map<Module, string>();
    for (const block of net.features.layers) {
      for (const [, m] of block.namedModules()) {
        tagOf.set(m, block.tag!);
      }
    }
    const bound = new Map<string, number>();
    const stop = onForward((m, out) => {
      const tag = tagOf.get(m);
      if (tag === undefined) return;
      const add = m instanceof ReLU6
        ? Math.ceil(out.size / 32) * 4
        : m instanceof BatchNorm2d
        ? out.shape[1] * F32
        : 0;
      bound.set(tag, (bound.get(tag) ?? 0) + add);
    });
    const before = b.ledger.snapshot();
    b.ledger.resetPeak();
    await eco.learn(x);
    stop();
    await b.sync();
    const snap = b.ledger.snapshot();
    const ecoSaved = snap.peak.saved;
    ok(
      ecoSaved <= 0.21 * tentSaved,
      `ecotta saved ${ecoSaved} B vs tent ${tentSaved} B: ${(ecoSaved / tentSaved).toFixed(3)}x`,
    );
    for (const [tag, max] of bound) {
      const saved = snap.savedByTag[tag] ?? 0;
      ok(saved <= max, `${tag}: saved ${saved} B, at most ${max} B (masks and per-channel vectors)`);
    }
    equal(snap.savedByTag["features.0"] ?? 0, 0, "the stem is upstream of every trainable parameter");
    if ((Deno.env.get("EDGETRAIN_DEBUG") ?? "").includes("ledger")) {
      console.log(`${b.name}: ecotta saved ${ecoSaved} B, tent ${tentSaved} B`);
    }

    // Nothing outlives a step but the SGD momentum, created at the first step.
    equal(snap.live.saved, 0);
    equal(snap.live.grads, 0);
    equal(snap.live.activations, before.live.activations);
    const after = b.ledger.liveBytes;
    for (let i = 0; i < 3; i++) await eco.learn(x);
    equal(b.ledger.liveBytes, after);
    eco.dispose();
    net.dispose();
    x.dispose();
    equal(b.ledger.liveBytes, base);
  },
);
