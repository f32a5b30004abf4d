import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { buildMobileNetV3 } from "../../src/nn/mobilenet_v3.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { decodeModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import {
  ADAPT_METHODS,
  Estimator,
  type GovernedMethod,
  maskBytes,
  savedBytes,
  TRAIN_METHODS,
} from "../../src/governor/estimate.ts";
import { measurePeak } from "../../src/governor/measure.ts";
import { encodedBytes } from "../../src/memory/codecs_quant.ts";
import { Module, Sequential } from "../../src/nn/module.ts";
import { Linear } from "../../src/nn/layers.ts";
import type { Backend } from "../../src/backend/backend.ts";
import type { Tensor } from "../../src/tensor.ts";

/** The estimate must match the ledger's measured peak within this fraction (the issue asks for 10%). */
const TOLERANCE = 0.01;
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

async function compare(
  b: Backend,
  model: Module,
  est: Estimator,
  methods: readonly GovernedMethod[],
  batch: number,
) {
  const rows: string[] = [];
  for (const method of methods) {
    const stores = method === "source" || method === "bn" ? ["fp32"] as const : STORES;
    for (const store of stores) {
      const predicted = est.estimate({ method, batch, store }).peak_bytes;
      const measured = await measurePeak(b, model, { method, batch, store, input: INPUT, batches: 4 });
      const err = predicted / measured.peak_bytes - 1;
      if (Math.abs(err) > TOLERANCE || measured.leaked_bytes !== 0) {
        rows.push(
          `${method}/${store}: predicted ${predicted}, measured ${measured.peak_bytes}, leaked ${measured.leaked_bytes}`,
        );
      }
    }
  }
  deepEqual(rows, [], `estimate vs ledger off by more than ${TOLERANCE * 100}%:\n${rows.join("\n")}`);
}

Deno.test("Estimator.estimate() matches the measured peak of every method and store on an IRB net", async () => {
  const b = new CpuBackend();
  const net = smallIrb(b);
  await compare(b, net, new Estimator(net, INPUT), [...ADAPT_METHODS, ...TRAIN_METHODS], 4);
});

Deno.test("Estimator.estimate() matches the measured peak on an imported ONNX graph", async () => {
  const b = new CpuBackend();
  const bytes = await moduleToOnnx(smallIrb(new CpuBackend()), { inputShape: [1, 16, 16] });
  const onnx = decodeModel(bytes);
  const model = importOnnx(b, onnx);
  await compare(b, model, new Estimator(model, INPUT, { onnx }), ["bn", "tent", "sar", "mobiletl"], 6);
});

Deno.test("Estimator.estimate() matches the measured peak on a MobileNetV3 net (hard-swish, squeeze-excite)", async () => {
  const b = new CpuBackend();
  const net = buildMobileNetV3(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[3, 1, 8, true, "RE", 2], [3, 4, 16, true, "HS", 2], [3, 4, 16, true, "HS", 1]],
    lastChannels: 32,
    hiddenFeatures: 16,
  });
  await compare(b, net, new Estimator(net, INPUT), ["tent", "full", "mobiletl"], 4);
});

Deno.test("Estimator.estimate() weights equal the ledger's weights and grow with the batch", () => {
  const b = new CpuBackend();
  const net = smallIrb(b);
  const est = new Estimator(net, INPUT);
  equal(est.weightsBytes, b.ledger.liveBytes);
  const peaks = [2, 4, 8, 16].map((batch) =>
    est.estimate({ method: "tent", batch, store: "fp32" }).peak_bytes
  );
  for (let i = 1; i < peaks.length; i++) {
    ok(peaks[i] > peaks[i - 1], `peaks ${peaks} must grow with the batch`);
  }
  const e = est.estimate({ method: "tent", batch: 8, store: "int4" });
  equal(e.store, "int4");
  equal(Object.values(e.at_peak).reduce((s, v) => s + v, 0), e.peak_bytes);
  ok(e.at_peak.optimizer > 0 && e.at_peak.weights === est.weightsBytes);
});

Deno.test("Estimator.estimate() leaves the model's trainability and modes as they were", () => {
  const b = new CpuBackend();
  const net = smallIrb(b).eval();
  net.setTrainable(() => false);
  const est = new Estimator(net, INPUT);
  for (const method of [...ADAPT_METHODS, ...TRAIN_METHODS]) est.estimate({ method, batch: 2 });
  ok(net.parameters().every((p) => !p.requiresGrad));
  ok(net.namedModules().every(([, m]) => !m.training));
});

Deno.test("savedBytes() and maskBytes() are the codecs' byte counts", () => {
  // int8: one byte per element packed 4 per word + 8 bytes (scale, offset) per 8x8 plane group.
  equal(savedBytes("int8", [2, 3, 8, 8]), encodedBytes("int8", [2, 3, 8, 8]));
  equal(savedBytes("int8", [2, 3, 8, 8]), 384 + 6 * 8);
  equal(savedBytes("fp16", [3]), 8);
  equal(maskBytes(33), 8);
});

Deno.test("Estimator rejects models and methods it cannot estimate, naming them", () => {
  const b = new CpuBackend();
  class Odd extends Module {
    forward(x: Tensor): Tensor {
      return x;
    }
  }
  const odd = new Sequential([new Linear(b, { inFeatures: 4, outFeatures: 2 }), new Odd()]);
  throws(
    () => new Estimator(odd, [4]).estimate({ method: "bn", batch: 2 }),
    /cannot infer the memory of a Odd module/,
  );
  const net = smallIrb(b);
  throws(
    () => new Estimator(net, INPUT).estimate({ method: "tent", batch: 0 }),
    /batch must be a positive integer/,
  );
});
