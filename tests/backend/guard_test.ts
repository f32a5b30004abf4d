import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { OutOfMemoryError } from "../../src/backend/backend.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { runAdaptation } from "../../src/methods/run.ts";
import type { TtaMethod } from "../../src/methods/tta.ts";
import { sizeOf, Tensor } from "../../src/tensor.ts";
import { Estimator } from "../../src/governor/estimate.ts";
import { type Backoff, RuntimeGuard } from "../../src/governor/guard.ts";
import { GuardedBackend, MemoryCappedBackend } from "../../src/governor/guarded_backend.ts";
import { randomImages } from "../../src/governor/measure.ts";

const INPUT = [1, 16, 16];
const BATCH = 8;

function net(b: Backend): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2]],
    lastChannels: 32,
    seed: 5,
  });
}

async function affine(model: IrbNet): Promise<number[][]> {
  return await Promise.all(model.trainableParameters().map(async (p) => Array.from(await p.data())));
}

/** SAR with every sample passing its filter, learning on every chunk of `batch` frames. */
function sarOn(model: IrbNet, batch: number) {
  return createMethod("sar", model, {
    lr: 0.05,
    extra: { entropyMargin: 1.01, resetEntropy: -1 },
    stream: { capacity: batch, every: batch, collapseGuard: false },
  });
}

/** A model on a guarded, capped backend: the guard undoes steps, the cap plays a small device. */
function guarded(b: Backend) {
  const capped = new MemoryCappedBackend(b, Infinity);
  const backend = new GuardedBackend(capped);
  return { capped, backend, model: net(backend) };
}

backendTest("RuntimeGuard backs off on out-of-memory mid-stream and loses no adapted state", async (b) => {
  const { capped, backend, model } = guarded(b);
  const est = new Estimator(net, INPUT);
  // SAR perturbs the weights between its two passes: the guard must put them back.
  const sar = await sarOn(model, BATCH);
  const before = capped.ledger.liveBytes;
  // Transient bytes of a step on top of what lives between steps (weights, optimizer, the guard's copy).
  const transient = async (store: "fp32" | "int4") => {
    const e = await est.estimate({ method: "sar", batch: BATCH, store, guard: true });
    return e.peak_bytes - e.at_peak.weights - e.at_peak.optimizer;
  };
  const [t4, t32] = [await transient("int4"), await transient("fp32")];
  ok(t4 < t32, "int4 must need less than fp32 for the test to mean anything");
  const seen: Backoff[] = [];
  let afterUndo: number[][] | null = null;
  const guard = new RuntimeGuard(backend, {
    batch: BATCH,
    store: "fp32",
    backward: true,
    peakOf: async (batch, store) =>
      (await est.estimate({ method: "sar", batch, store, guard: true })).peak_bytes,
    onBackoff: async (bo) => {
      seen.push(bo);
      afterUndo = await affine(model);
    },
  });
  const set = randomImages(BATCH * 5, INPUT, { seed: 2 });
  const rows = BATCH * sizeOf(INPUT);
  let atFailure: number[][] = [];
  for (let k = 0; k < 5; k++) {
    if (k === 2) {
      // From the third batch on the device is smaller: fp32 at batch 8 no longer fits, int4 does.
      atFailure = await affine(model);
      capped.limitBytes = capped.ledger.liveBytes + rows * 4 + Math.floor((t4 + t32) / 2);
    }
    const x = Tensor.from(
      backend,
      Float32Array.from(set.pixels.subarray(k * rows, (k + 1) * rows), (v) => v / 255 - 0.5),
      [
        BATCH,
        ...INPUT,
      ],
    );
    const result = await guard.run(sar, x);
    x.dispose();
    equal(result.logits.length, BATCH * 10);
    ok(result.updated);
  }
  equal(seen.length, guard.backoffs.length);
  ok(seen.length >= 1, "the guard must have backed off");
  equal(seen[0].step, 2);
  deepEqual(seen[0].from, { batch: BATCH, store: "fp32" });
  ok(guard.store !== "fp32", `the guard must run on with a cheaper store, got ${guard.store}`);
  deepEqual(afterUndo, atFailure, "the failed step's partial updates must be undone exactly");
  notDeepEqual(await affine(model), atFailure, "adaptation must continue after the back-off");
  sar.dispose();
  guard.dispose();
  equal(capped.ledger.liveBytes, before, "nothing the failed step allocated may stay live");
});

backendTest(
  "RuntimeGuard rethrows out-of-memory at the bottom of its ladder and other errors at once",
  async (b) => {
    const { capped, backend, model } = guarded(b);
    const tent = await createMethod("tent", model, { stream: { capacity: 4, collapseGuard: false } });
    const guard = new RuntimeGuard(backend, { batch: 4, store: "int4", backward: true, minBatch: 2 });
    const set = randomImages(4, INPUT);
    // Room for the guard's parameter copy, the input (4 KiB) and one half-batch chunk (2 KiB), none for the forward.
    const copy = 4 * model.trainableParameters().reduce((n, p) => n + p.size, 0);
    capped.limitBytes = capped.ledger.liveBytes + copy + 4096 + 2048;
    await rejects(
      runAdaptation(backend, tent, [{ name: "random", set }], { batch: 4, guard }),
      OutOfMemoryError,
    );
    deepEqual(guard.backoffs.map((x) => x.to), [{ batch: 2, store: "int4" }]);
    capped.limitBytes = Infinity;
    const broken: TtaMethod = {
      name: "tent",
      model,
      step: () => Promise.reject(new Error("not memory")),
      trainables: () => [],
      reset: () => {},
      state: () => Promise.resolve({}),
      loadState: () => {},
      dispose: () => {},
    };
    const x = Tensor.zeros(backend, [2, ...INPUT]);
    await rejects(guard.run(broken, x), /not memory/);
    x.dispose();
    tent.dispose();
    guard.dispose();
  },
);

backendTest("RuntimeGuard restores parameters a step changed before it ran out of memory", async (b) => {
  const { capped, backend, model } = guarded(b);
  const sar = await sarOn(model, 4);
  let afterUndo: number[][] = [];
  const guard = new RuntimeGuard(backend, {
    batch: 4,
    store: "fp32",
    backward: true,
    onBackoff: async () => {
      afterUndo = await affine(model);
    },
  });
  const x = Tensor.from(backend, Float32Array.from({ length: 4 * sizeOf(INPUT) }, (_, i) => Math.sin(i)), [
    4,
    ...INPUT,
  ]);
  const n0 = capped.allocations;
  await guard.run(sar, x);
  const perStep = capped.allocations - n0;
  const atFailure = await affine(model);
  // Fail in SAR's second pass, after it moved the weights to w + e(w).
  capped.failAfterAllocs = Math.floor(perStep * 0.8);
  await guard.run(sar, x);
  equal(guard.backoffs.length, 1);
  deepEqual(guard.backoffs[0].to, { batch: 4, store: "fp16" });
  deepEqual(afterUndo, atFailure);
  notDeepEqual(await affine(model), atFailure);
  x.dispose();
  sar.dispose();
  guard.dispose();
});
