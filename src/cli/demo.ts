/**
 * `edgetrain demo`: the main job on the embedded default model (an IRB net edgetrain trained on MNIST) and
 * embedded corrupted streams: source error vs BN-adapt and TENT, corruption by corruption (reset between
 * them), with progress on stderr.
 */
import { parseFlags } from "./args.ts";
import { BACKEND_FLAG, openBackend } from "./common.ts";
import { DEMO_ASSETS } from "./_demo_assets.ts";
import { decodeBase64 } from "../data/base64.ts";
import { gunzip, parseIdxImages, parseIdxLabels } from "../data/idx.ts";
import { preprocessFromJson } from "../data/preprocess.ts";
import { decodeModel } from "../onnx/model.ts";
import { importOnnx } from "../onnx/import.ts";
import { createMethod } from "../methods/registry.ts";
import { runAdaptation } from "../methods/run.ts";
import { progressObserver } from "./progress.ts";

export const HELP = `edgetrain demo [--backend webgpu|wasm|cpu|auto] [--threads N] [--json]

Adapts the embedded MNIST model to embedded corrupted digit streams (severity 5) and prints the error of the
unadapted model next to BN-adapt and TENT.`;

const STREAMS = ["gaussian_noise-s5", "fog-s5", "contrast-s5", "motion_blur-s5"];
const METHODS = ["source", "bn", "tent"];

export default async function demo(args: string[]): Promise<number> {
  const flags = parseFlags("demo", args, {
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    batch: { type: "string", default: "64" },
    ...BACKEND_FLAG,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const asset = (name: string) => {
    const b64 = DEMO_ASSETS[name];
    if (!b64) throw new Error(`demo: embedded asset "${name}" is missing (run tools/gen_demo_assets.ts)`);
    return decodeBase64(b64);
  };
  const backend = await openBackend(flags);
  const onnx = decodeModel(asset("mnist_irb.onnx"));
  const pre = preprocessFromJson(
    JSON.parse(new TextDecoder().decode(asset("mnist_irb.json"))),
    "mnist_irb.json",
  );
  const domains = [];
  for (const s of STREAMS) {
    const set = parseIdxImages(await gunzip(asset(`${s}-images-idx3-ubyte.gz`)), s);
    set.labels = parseIdxLabels(await gunzip(asset(`${s}-labels-idx1-ubyte.gz`)), s);
    domains.push({ name: s.replace(/-s5$/, ""), set });
  }
  const results: Record<string, Record<string, number>> = {};
  const means: Record<string, number> = {};
  for (const method of METHODS) {
    const model = importOnnx(backend, onnx);
    const m = await createMethod(method, model);
    const r = await runAdaptation(backend, m, domains, {
      batch: Number(flags.batch),
      protocol: "reset-each-domain",
      preprocess: pre,
      observers: [progressObserver(method, domains.reduce((n, d) => n + d.set.n, 0))],
    });
    results[method] = Object.fromEntries(r.domains.map((d) => [d.images, d.error!]));
    means[method] = r.error!;
    m.dispose();
    model.dispose();
  }
  if (flags.json) {
    console.log(
      JSON.stringify({ backend: backend.name, batch: Number(flags.batch), errors: results, mean: means }),
    );
  } else {
    const pct = (v: number) => `${(100 * v).toFixed(1)}%`.padStart(7);
    console.log(`edgetrain demo — MNIST digits with corruptions at severity 5, backend ${backend.name}\n`);
    console.log(`${"corruption".padEnd(16)}${METHODS.map((m) => m.padStart(8)).join("")}`);
    for (const d of domains) {
      console.log(`${d.name.padEnd(16)}${METHODS.map((m) => " " + pct(results[m][d.name])).join("")}`);
    }
    console.log(`${"mean".padEnd(16)}${METHODS.map((m) => " " + pct(means[m])).join("")}`);
    console.log(
      `\nTENT error relative to the unadapted model: ${
        (100 * (means.tent - means.source)).toFixed(1)
      } points`,
    );
  }
  backend.dispose();
  return 0;
}
