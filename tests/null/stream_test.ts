import { deepEqual, equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { preprocessBatch } from "../../src/data/preprocess.ts";
import { randomImages } from "../../src/governor/measure.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { runAdaptation } from "../../src/methods/run.ts";
import { AdaptStream, type ResetEvent } from "../../src/methods/stream.ts";
import type { StepResult, TtaMethod } from "../../src/methods/tta.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { AdaptEngine } from "../../src/service/engine.ts";
import { Tensor } from "../../src/tensor.ts";

const INPUT = [1, 16, 16] as const;
const PRE = { mean: [0.5], std: [0.25] };

function net(b: Backend) {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 2, 2]],
    lastChannels: 32,
    seed: 9,
  });
}

Deno.test("adapt (runAdaptation) and serve (AdaptEngine) give identical online predictions and error on the same stream and chunking", async () => {
  const set = randomImages(60, INPUT, { seed: 3 });
  const chunk = 8;
  for (const method of ["tent", "sar", "eata"]) {
    const ba = new CpuBackend();
    const settings = { lr: 0.01, stream: { capacity: 16, every: chunk } };
    const ma = await createMethod(method, net(ba), settings);
    const viaAdapt: number[] = [];
    const report = await runAdaptation(ba, ma, [{ name: "random", set }], {
      batch: chunk,
      preprocess: PRE,
      observers: [{ chunk: (e) => viaAdapt.push(...e.stats.predictions) }],
    });

    const bs = new CpuBackend();
    const ms = await createMethod(method, net(bs), settings);
    const engine = new AdaptEngine({
      backend: bs,
      method: ms,
      shape: [...INPUT],
      modelPath: "m.onnx",
      modelSha256: "00",
      store: null,
      checkpointEvery: 0,
      log: () => {},
    });
    const viaServe: number[] = [];
    for (let start = 0; start < set.n; start += chunk) {
      const idx = Array.from({ length: Math.min(chunk, set.n - start) }, (_, i) => start + i);
      const x = preprocessBatch(set, idx, PRE);
      const per = x.length / idx.length;
      const xs = idx.map((_, i) => x.slice(i * per, (i + 1) * per));
      viaServe.push(...(await engine.step(xs)).map((p) => p.class));
    }
    deepEqual(viaServe, viaAdapt, `${method}: serve and adapt must predict the same`);
    const wrong = viaServe.filter((p, i) => p !== set.labels![i]).length;
    equal(wrong / set.n, report.error, `${method}: the same online error`);
    equal(engine.total.updates, report.updates);
    ok(report.adaptation_steps >= 6, `${method} learned ${report.adaptation_steps} times`);
    ma.dispose();
    ms.dispose();
  }
});

/** A method whose step is scripted: fixed predictions, and a reset when asked. */
function scripted(
  b: Backend,
  script: { pred: number; reset?: boolean; collapse?: boolean }[],
): TtaMethod & { resets: number } {
  let k = 0;
  const m = {
    name: "tent" as const,
    model: net(b),
    resets: 0,
    step(x: Tensor): Promise<StepResult> {
      const s = script[k++];
      const n = x.shape[0];
      const logits = new Float32Array(n * 10);
      for (let i = 0; i < n; i++) logits[i * 10 + s.pred] = 10;
      return Promise.resolve({
        logits,
        classes: 10,
        entropy: 0.1,
        updated: true,
        used: n,
        reset: s.reset ?? false,
        ...(s.reset ? { resetReason: "scripted reset", resetCause: s.collapse ? "collapse" : "method" } : {}),
      });
    },
    trainables: () => [],
    reset() {
      m.resets++;
    },
    state: () => Promise.resolve({}),
    loadState: () => {},
    dispose: () => {},
  };
  return m;
}

Deno.test("AdaptStream reports every chunk, and each reset with its cause, to its observers", async () => {
  const b = new CpuBackend();
  const script = [
    ...Array.from({ length: 5 }, (_, i) => ({ pred: i })),
    { pred: 5, reset: true },
    { pred: 0, reset: true, collapse: true },
  ];
  const m = scripted(b, script);
  const chunks: number[] = [];
  const resets: ResetEvent[] = [];
  const stream = new AdaptStream(m).observe({
    chunk: (e) => chunks.push(e.chunk),
    reset: (e) => resets.push(e),
  });
  for (let i = 0; i < script.length; i++) {
    const x = Tensor.zeros(b, [10, ...INPUT]);
    await stream.process(x, { domain: 0, chunk: i });
    x.dispose();
  }
  stream.reset("api", "POST /v1/reset");
  deepEqual(chunks, script.map((_, i) => i));
  deepEqual(resets.map((r) => [r.cause, r.chunk]), [["method", 5], ["collapse", 6], ["api", 6]]);
  equal(m.resets, 1, "the stream resets the method only for resets from outside it");
});

Deno.test("AdaptStream: the unadapted source model never resets, even when every frame gets one class", async () => {
  const b = new CpuBackend();
  const m = await createMethod("source", net(b));
  const resets: ResetEvent[] = [];
  const stream = new AdaptStream(m).observe({ reset: (e) => resets.push(e) });
  for (let i = 0; i < 12; i++) {
    const x = Tensor.zeros(b, [4, ...INPUT]);
    await stream.process(x);
    x.dispose();
  }
  deepEqual(resets, [], "zeros predict one class, but an unadapted model cannot collapse");
});
