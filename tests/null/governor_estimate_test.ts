import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { buildMobileNetV3 } from "../../src/nn/mobilenet_v3.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { decodeModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { Estimator } from "../../src/governor/estimate.ts";
import { GuardedBackend } from "../../src/governor/guarded_backend.ts";
import { measurePeak } from "../../src/governor/measure.ts";
import { type MethodName, METHODS } from "../../src/methods/registry.ts";
import type { Module } from "../../src/nn/module.ts";
import type { Backend } from "../../src/backend/backend.ts";

const ALL = METHODS.map((m) => m.name);
const STORES = ["fp32", "fp16", "int8", "int4", "mask"] as const;
const INPUT = [1, 16, 16];

function smallIrb(b: Backend): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
}

/**
 * The estimate (real code on the null backend) must equal the ledger's measured peak of the real method on
 * the CPU backend, byte for byte, with and without the runtime guard, and a run must leave nothing live.
 */
async function compare(
  build: (b: Backend) => Module,
  est: Estimator,
  methods: readonly MethodName[],
  batch: number,
) {
  const rows: string[] = [];
  for (const guard of [false, true]) {
    const b = new GuardedBackend(new CpuBackend());
    const model = build(b);
    for (const method of methods) {
      const stores = method === "source" || method === "bn" ? ["fp32"] as const : STORES;
      for (const store of stores) {
        if (guard && METHODS.find((m) => m.name === method)!.task === "train") continue;
        const predicted = (await est.estimate({ method, batch, store, guard })).peak_bytes;
        const measured = await measurePeak(b, model, {
          method,
          batch,
          store,
          input: INPUT,
          batches: 4,
          guard,
        });
        if (predicted !== measured.peak_bytes || measured.leaked_bytes !== 0) {
          rows.push(
            `${method}/${store}${
              guard ? "/guard" : ""
            }: predicted ${predicted}, measured ${measured.peak_bytes}, ` +
              `leaked ${measured.leaked_bytes}`,
          );
        }
      }
    }
  }
  deepEqual(rows, [], `estimate vs ledger:\n${rows.join("\n")}`);
}

Deno.test("Estimator.estimate() equals the measured peak of every method and store on an IRB net", async () => {
  await compare(smallIrb, new Estimator(smallIrb, INPUT), ALL, 4);
});

Deno.test("Estimator.estimate() equals the measured peak on an imported ONNX graph", async () => {
  const bytes = await moduleToOnnx(smallIrb(new CpuBackend()), { inputShape: [1, 16, 16] });
  const onnx = decodeModel(bytes);
  await compare((b) => importOnnx(b, onnx), Estimator.forOnnx(onnx, INPUT), ALL, 6);
});

Deno.test("Estimator.estimate() equals the measured peak on a MobileNetV3 net (hard-swish, squeeze-excite)", async () => {
  const build = (b: Backend) =>
    buildMobileNetV3(b, {
      inChannels: 1,
      numClasses: 10,
      stemChannels: 8,
      blocks: [[3, 1, 8, true, "RE", 2], [3, 4, 16, true, "HS", 2], [3, 4, 16, true, "HS", 1]],
      lastChannels: 32,
      hiddenFeatures: 16,
    });
  await compare(build, new Estimator(build, INPUT), ["tent", "eata", "full", "mobiletl"], 4);
});

Deno.test("Estimator.estimate() weights equal the ledger's weights and grow with the batch", async () => {
  const b = new CpuBackend();
  smallIrb(b);
  const est = new Estimator(smallIrb, INPUT);
  equal(est.weightsBytes, b.ledger.liveBytes);
  const peaks: number[] = [];
  for (const batch of [2, 4, 8, 16]) {
    peaks.push((await est.estimate({ method: "tent", batch, store: "fp32" })).peak_bytes);
  }
  for (let i = 1; i < peaks.length; i++) {
    ok(peaks[i] > peaks[i - 1], `peaks ${peaks} must grow with the batch`);
  }
  const e = await est.estimate({ method: "tent", batch: 8, store: "int4" });
  equal(e.store, "int4");
  equal(Object.values(e.at_peak).reduce((s, v) => s + v, 0), e.peak_bytes);
  ok(e.at_peak.optimizer > 0 && e.at_peak.weights === est.weightsBytes);
});

Deno.test("Estimator.estimate() takes the expensive side of data-dependent filters (the plan switch)", async () => {
  // On the null backend every logit reads as 0, so every entropy is ln C: without the plan switch EATA, SAR
  // and EcoTTA would filter every sample out and skip backward, estimating no more than BN adaptation.
  const est = new Estimator(smallIrb, INPUT);
  const bn = (await est.estimate({ method: "bn", batch: 8 })).peak_bytes;
  for (const method of ["eata", "sar", "ecotta"] as const) {
    const e = await est.estimate({ method, batch: 8 });
    ok(e.at_peak.saved > 0 || e.peak_by_category.saved > 0, `${method} must plan a backward pass`);
    ok(e.peak_bytes > bn, `${method} ${e.peak_bytes} must need more than bn ${bn}`);
  }
});

Deno.test("Estimator rejects a batch that is not a positive integer", async () => {
  await rejects(
    new Estimator(smallIrb, INPUT).estimate({ method: "tent", batch: 0 }),
    /batch must be a positive integer/,
  );
});
