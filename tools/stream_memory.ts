/**
 * Ledger peak of one learning step of each streaming method at the same minibatch, for docs/streaming.md:
 *
 *   deno run -A tools/stream_memory.ts [--batch 64] [--methods tent,rotta,bn]
 *
 * Each figure is the ledger's measured peak of the real method run on the null backend (src/governor/
 * estimate.ts; equal byte for byte to a CPU run, tests/null/governor_estimate_test.ts), chunk 1 as a camera
 * delivers frames: RoTTA's includes its memory bank of `batch` frames and its teacher.
 */
import { parseArgs } from "node:util";
import { Estimator } from "../src/governor/estimate.ts";
import type { MethodName } from "../src/methods/registry.ts";
import { loadModel } from "../src/onnx/model.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    batch: { type: "string", default: "64" },
    methods: { type: "string", default: "tent,rotta,bn" },
  },
});
const MODELS: [string, number[]][] = [
  ["fixtures/models/mnist_irb.onnx", [1, 32, 32]],
  ["fixtures/models/mobilenet_v2_preserve.onnx", [3, 32, 32]],
];
const mib = (b: number) => (b / 2 ** 20).toFixed(2);
for (const [path, input] of MODELS) {
  const est = Estimator.forOnnx(await loadModel(path), input);
  for (const method of a.methods!.split(",") as MethodName[]) {
    const e = await est.estimate({ method, batch: Number(a.batch), chunk: 1, store: "fp32", guard: true });
    const cats = Object.entries(e.at_peak).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${mib(v)}`);
    console.log(
      `${path.split("/").pop()} ${method.padEnd(6)} batch ${a.batch}: peak ${mib(e.peak_bytes)} MiB (${
        cats.join(", ")
      })`,
    );
  }
}
