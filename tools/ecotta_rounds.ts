/**
 * EcoTTA's two claims on the default model (issue #4), measured:
 * 1. memory: ledger peak saved bytes of one `ecotta` step vs one `tent` step, same model and batch;
 * 2. stability: a long continual run over every corruption of CORRUPTIONS at severity 5, repeated for
 *    several rounds without reset; the last round's error must be no worse than the first's.
 *
 *   deno run -A tools/ecotta_rounds.ts [--model fixtures/models/mnist_irb.onnx] [--rounds 3] [--n 2000]
 *     [--batch 64] [--warmup 1000] [--backend cpu] [--out report.json]
 *
 * Test images: the first --n of mnistSplit()'s 2,000 test digits; warm-up: the first --warmup training
 * digits (clean source data, labels used; 0 runs without warm-up). Exits 1 when the last round is worse.
 */
import { parseArgs } from "node:util";
import { openBackend } from "../src/cli/common.ts";
import { corrupt, CORRUPTIONS } from "../src/data/corruptions.ts";
import { subset } from "../src/data/images.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import {
  loadPreprocessSidecar,
  outputShape,
  preprocessBatch,
  type PreprocessOptions,
} from "../src/data/preprocess.ts";
import { EcoTta } from "../src/methods/ecotta.ts";
import { streamed } from "../src/methods/streaming.ts";
import { type Domain, runAdaptation } from "../src/methods/run.ts";
import { Tent } from "../src/methods/tent.ts";
import { loadModel, type OnnxModel } from "../src/onnx/model.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { Tensor } from "../src/tensor.ts";
import type { Backend } from "../src/backend/backend.ts";
import type { ImageSet } from "../src/data/images.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
    rounds: { type: "string", default: "3" },
    n: { type: "string", default: "2000" },
    batch: { type: "string", default: "64" },
    warmup: { type: "string", default: "1000" },
    severity: { type: "string", default: "5" },
    backend: { type: "string", default: "cpu" },
    out: { type: "string" },
  },
}).values;

const rounds = Number(args.rounds), batch = Number(args.batch), warmupN = Number(args.warmup);
const backend = await openBackend(args.backend);
const onnx = await loadModel(args.model!);
const preprocess: PreprocessOptions = (await loadPreprocessSidecar(args.model!)) ?? {};
const { train, test } = await mnistSplit();
const first = (set: ImageSet, n: number) =>
  subset(set, Array.from({ length: Math.min(n, set.n) }, (_, i) => i));
const images = first(test, Number(args.n));
const warmup = warmupN > 0 ? { set: first(train, warmupN), preprocess } : undefined;
const name = args.model!;

/** Ledger peak of saved bytes over one step of a fresh method on the first `batch` clean test images. */
async function stepSaved(b: Backend, model: OnnxModel, make: "tent" | "ecotta"): Promise<number> {
  const net = importOnnx(b, model);
  const method = make === "tent" ? await Tent.create(net) : await EcoTta.create(net, { warmup, name });
  const x = preprocessBatch(images, Array.from({ length: batch }, (_, i) => i), preprocess);
  const { channels, height, width } = outputShape(images, preprocess);
  const input = Tensor.from(b, x, [batch, channels, height, width]);
  b.ledger.resetPeak();
  await method.learn(input);
  const saved = b.ledger.snapshot().peak.saved;
  input.dispose();
  method.dispose();
  net.dispose();
  return saved;
}

const tentSaved = await stepSaved(backend, onnx, "tent");
const ecoSaved = await stepSaved(backend, onnx, "ecotta");
console.error(
  `memory (batch ${batch}): ecotta saves ${ecoSaved} B, tent ${tentSaved} B: ${
    (100 * (1 - ecoSaved / tentSaved)).toFixed(1)
  }% less`,
);

const severity = Number(args.severity);
const domains: Domain[] = CORRUPTIONS.map((c) => ({ name: c, set: corrupt(images, c, { severity }) }));
const stream = Array.from({ length: rounds }, () => domains).flat();
const net = importOnnx(backend, onnx);
const method = streamed(await EcoTta.create(net, { warmup, name }), { stream: { capacity: batch } });
const report = await runAdaptation(backend, method, stream, { batch, preprocess });
const perRound = Array.from({ length: rounds }, (_, r) => {
  const ds = report.domains.slice(r * domains.length, (r + 1) * domains.length);
  return ds.reduce((s, d) => s + d.error! * d.n, 0) / ds.reduce((s, d) => s + d.n, 0);
});
for (const [r, e] of perRound.entries()) {
  const ds = report.domains.slice(r * domains.length, (r + 1) * domains.length);
  console.error(
    `round ${r + 1}: error ${(100 * e).toFixed(2)}%  (${
      ds.map((d) => `${d.images} ${(100 * d.error!).toFixed(1)}`).join(", ")
    })`,
  );
}
const result = {
  model: name,
  images: images.n,
  warmup_images: warmup?.set.n ?? 0,
  batch,
  severity,
  rounds,
  corruptions: CORRUPTIONS,
  tent_peak_saved_bytes: tentSaved,
  ecotta_peak_saved_bytes: ecoSaved,
  saved_reduction: 1 - ecoSaved / tentSaved,
  round_errors: perRound,
  resets: report.resets,
  ms_per_batch: report.ms_per_batch,
  peak_bytes: report.peak_bytes,
  domains: report.domains,
};
const json = JSON.stringify(result, null, 2) + "\n";
if (args.out) await Deno.writeTextFile(args.out, json);
else console.log(json);
method.dispose();
net.dispose();
Deno.exit(perRound.at(-1)! <= perRound[0] ? 0 : 1);
