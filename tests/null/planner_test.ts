import { deepEqual, equal, ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { Estimator } from "../../src/governor/estimate.ts";
import { type Plan, planRun, storesFor } from "../../src/governor/planner.ts";
import { autoCandidates } from "../../src/methods/registry.ts";
import { builtinFootprint } from "../../src/devices/footprint.ts";

const INPUT = [1, 16, 16];
const net = (b: Backend) =>
  buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
// No runtime around the tensors, so that budgets of a few MiB exercise the planner's order: the process's
// peak is then the tensors' plus one decode buffer and the source copy (src/governor/process.ts).
const bare = {
  ...builtinFootprint("cpu"),
  runtime_bytes: 0,
  backend_bytes: 0,
  step_bytes: 0,
  gc_slack_bytes: 0,
};
const est = new Estimator(net, INPUT, { target: "cpu", process: { footprint: bare, modelHostBytes: 0 } });
const ADAPT_PREFERENCE = autoCandidates("adapt").map((m) => m.name);
const TRAIN_PREFERENCE = autoCandidates("train").map((m) => m.name);

/** Lower is better: method rank, then larger batch, then more faithful store. */
function rank(p: Plan, methods: readonly string[]): [number, number, number] {
  return [methods.indexOf(p.method), -p.batch, storesFor(p.method).indexOf(p.store)];
}

function notWorse(a: [number, number, number], b: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return true;
}

Deno.test("planRun() never picks a worse configuration for a larger budget, and its pick fits", async () => {
  const methods = [...ADAPT_PREFERENCE];
  let prev: Plan | null = null;
  for (let mib = 0.5; mib <= 64; mib *= 1.25) {
    const plan = await planRun(est, { budgetBytes: Math.round(mib * 2 ** 20), methods, fallback: true });
    if (plan.fits) ok(plan.predicted_process_peak_bytes <= plan.usable_bytes);
    ok(
      plan.predicted_peak_bytes < plan.predicted_process_peak_bytes,
      "the process holds more than the ledger",
    );
    if (prev?.fits) {
      ok(plan.fits);
      ok(
        notWorse(rank(plan, methods), rank(prev, methods)),
        `${mib} MiB picked ${plan.method}/${plan.batch}/${plan.store} after ${prev.method}/${prev.batch}/${prev.store}`,
      );
    }
    prev = plan;
  }
  ok(prev!.fits && prev!.method === ADAPT_PREFERENCE[0] && prev!.batch === 64 && prev!.store === "fp32");
});

Deno.test("planRun() falls back to BN adaptation when no backward pass fits", async () => {
  const bn = (await est.estimate({ method: "bn", batch: 2 })).process_peak_bytes;
  const backward: number[] = [];
  for (const method of ["ecotta", "sar", "eata", "tent"] as const) {
    for (const store of storesFor(method)) {
      backward.push((await est.estimate({ method, batch: 2, store })).process_peak_bytes);
    }
  }
  const least = Math.min(...backward);
  ok(bn < least, "BN adaptation at batch 2 must need less than any method with a backward pass");
  const plan = await planRun(est, {
    budgetBytes: Math.floor((bn + least) / 2 / 0.9),
    methods: ADAPT_PREFERENCE,
    fallback: true,
  });
  equal(plan.method, "bn");
  ok(plan.fits && plan.predicted_process_peak_bytes <= plan.usable_bytes);
  ok(/no method with a backward pass fits/.test(plan.reason));
  ok(plan.alternatives.some((a) => a.method === "tent" && !a.fits), "TENT is listed as not fitting");
});

Deno.test("planRun() reports the cheapest configuration when nothing fits", async () => {
  const plan = await planRun(est, { budgetBytes: est.weightsBytes, methods: ["tent"] });
  equal(plan.fits, false);
  equal(plan.method, "tent");
  equal(plan.batch, 2);
  ok(plan.predicted_process_peak_bytes > plan.usable_bytes);
  ok(/nothing fits/.test(plan.reason));
});

Deno.test("planRun() honours a fixed method, batch and store, and explains what did not fit", async () => {
  const fixed = await planRun(est, { budgetBytes: 2 ** 30, methods: ["sar"], batch: 12, store: "int8" });
  deepEqual([fixed.method, fixed.batch, fixed.store, fixed.fits], ["sar", 12, "int8", true]);
  // Between what batch 32 needs with int4 and with fp32: batch 32 is kept, the store goes down.
  const lo = (await est.estimate({ method: "tent", batch: 32, store: "int4" })).process_peak_bytes;
  const hi = (await est.estimate({ method: "tent", batch: 32, store: "fp32" })).process_peak_bytes;
  const mid = await planRun(est, {
    budgetBytes: Math.round((lo + hi) / 2 / 0.9),
    methods: ["tent"],
    batchCap: 32,
  });
  equal(mid.batch, 32);
  ok(mid.store !== "fp32");
  ok(
    mid.alternatives.some((a) => a.batch === 32 && !a.fits && a.store !== mid.store),
    "the better store is listed",
  );
  const sum = Object.values(mid.by_category).reduce((s, v) => s + v, 0);
  equal(sum, mid.predicted_peak_bytes);
});

Deno.test("planRun() plans transfer methods and puts MobileTL's mask store first", async () => {
  const plan = await planRun(est, { budgetBytes: 2 ** 30, methods: TRAIN_PREFERENCE });
  deepEqual([plan.method, plan.batch, plan.store], ["full", 64, "fp32"]);
  equal(storesFor("mobiletl")[0], "mask");
  const tight = (await est.estimate({ method: "mobiletl", batch: 64, store: "mask" })).process_peak_bytes;
  const p = await planRun(est, { budgetBytes: Math.ceil(tight / 0.9), methods: ["mobiletl"] });
  deepEqual([p.method, p.batch, p.store], ["mobiletl", 64, "mask"]);
});
