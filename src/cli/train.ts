/**
 * `edgetrain train --model M.onnx --images I --labels L --method full|bias|mobiletl [--top-blocks K] ...`
 * Supervised transfer with few labels on the top K inverted residual blocks (src/methods/mobiletl.ts),
 * with the ledger's measured peaks and per-block saved bytes; --out writes the trained model as ONNX.
 */
import { oneOf, parseFlags, parseNumber } from "./args.ts";
import {
  BACKEND_FLAG,
  fitPreprocess,
  openBackend,
  openModel,
  openStreams,
  PREPROCESS_FLAGS,
  preprocessFor,
} from "./common.ts";
import { UsageError } from "./errors.ts";
import { methodHelp, names, trainMethod } from "../methods/registry.ts";
import { trainSupervised } from "../methods/supervised.ts";
import { STORES, withStore } from "../memory/policy.ts";
import { exportModule } from "../onnx/export.ts";
import { outputShape } from "../data/preprocess.ts";
import { governed, GOVERNOR_FLAGS } from "./plan.ts";

export const HELP = `edgetrain train --model M.onnx --images I --labels L --method METHOD [options]

  --method METHOD|auto      what trains in the top blocks (required; see docs/memory.md); auto: the
                            strongest that fits the budget
${methodHelp("train", "                              ")}
  --top-blocks K            inverted residual blocks to train, counted from the output (default: all)
  --epochs E                passes over the images (default 5)
  --batch N|auto            images per step (default 32; auto: the largest that fits, up to 64)
  --lr X                    Adam learning rate (default 0.001)
  --store fp32|fp16|int8|int4|mask|auto   how saved activations are kept (default auto: mask for
                            mobiletl, fp32 otherwise; the most faithful that fits when the governor plans)
  --budget B | --device NAME|auto   plan method/batch/store to fit B (256MiB) or a device profile's usable
                            memory (devices/*.json); auto: half the available system memory
  --val-images V --val-labels VL   labelled validation images, evaluated after every epoch
  --seed S                  shuffling seed (default 0)
  --out A.onnx              write the trained model as ONNX
  --backend webgpu|cpu|auto --mean --std --pad --size --channels
  --json                    print one JSON object on stdout`;

export default async function train(args: string[]): Promise<number> {
  const flags = parseFlags("train", args, {
    model: { type: "string" },
    images: { type: "string" },
    labels: { type: "string" },
    method: { type: "string" },
    "top-blocks": { type: "string" },
    epochs: { type: "string", default: "5" },
    batch: { type: "string", default: "32" },
    lr: { type: "string", default: "0.001" },
    store: { type: "string", default: "auto" },
    ...GOVERNOR_FLAGS,
    "val-images": { type: "string" },
    "val-labels": { type: "string" },
    seed: { type: "string", default: "0" },
    out: { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
    ...PREPROCESS_FLAGS,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.method) throw new UsageError(`--method is required (one of ${names("train").join(", ")})`);
  oneOf("method", flags.method, [...names("train"), "auto"]);
  oneOf("store", flags.store, STORES);
  const topBlocks = parseNumber("top-blocks", flags["top-blocks"], { integer: true, min: 0 });
  const epochs = parseNumber("epochs", flags.epochs, { integer: true, min: 1 })!;
  const lr = parseNumber("lr", flags.lr, { min: 0 })!;
  const seed = parseNumber("seed", flags.seed, { integer: true })!;
  if (!flags.labels) throw new UsageError("--labels is required: train learns from labelled images");
  if (Boolean(flags["val-images"]) !== Boolean(flags["val-labels"])) {
    throw new UsageError("--val-images and --val-labels go together");
  }
  const [data] = await openStreams([flags.images!].filter(Boolean), [flags.labels]);
  const val = flags["val-images"]
    ? (await openStreams([flags["val-images"]], [flags["val-labels"]!]))[0]
    : null;

  const backend = await openBackend(flags.backend, !flags.json);
  const model = await openModel(backend, flags.model);
  const basePre = await preprocessFor(model.path, flags);
  const pre = fitPreprocess(data.set, basePre, model, data.name);
  if (val) fitPreprocess(val.set, basePre, model, val.name);
  const shape = outputShape(data.set, pre);
  const gov = await governed({
    task: "train",
    method: flags.method,
    batch: flags.batch!,
    store: flags.store!,
    budget: flags.budget,
    device: flags.device,
    model,
    input: [shape.channels, shape.height, shape.width],
    backend,
    topBlocks,
  });
  const { method, batch, store: used } = gov;
  const plan = trainMethod(method).prepare(model.module, { topBlocks });
  const report = await withStore(used, () =>
    trainSupervised(backend, model.module, data.set, {
      epochs,
      batch,
      optimizer: { kind: "adam", lr },
      preprocess: pre,
      seed,
      val: val?.set,
      progress: !flags.json,
      label: `train ${method}`,
      setMode: plan.setMode,
    }));
  if (flags.out) {
    await Deno.writeFile(
      flags.out,
      await exportModule(model.onnx, model.module, { producerName: "edgetrain" }),
    );
  }
  const out = {
    model: model.path,
    backend: backend.name,
    method,
    store: used,
    top_blocks: plan.blocks.length,
    trained_blocks: plan.blocks.map((b) => b.name),
    trainable_parameters: plan.params.reduce((s, p) => s + p.size, 0),
    n: data.set.n,
    ...report,
    predicted_peak_bytes: gov.predicted_peak_bytes,
    ...(gov.plan
      ? {
        budget_bytes: gov.plan.budget_bytes,
        budget_source: gov.plan.budget_source,
        plan: { reason: gov.plan.reason, alternatives: gov.plan.alternatives },
      }
      : {}),
    ...(flags.out ? { out: flags.out } : {}),
  };
  if (flags.json) console.log(JSON.stringify(out));
  else {
    const pct = (v: number | null) => v === null ? "-" : `${(100 * v).toFixed(2)}%`;
    console.log(
      `${method} on ${out.top_blocks} top blocks (${out.trainable_parameters} parameters), store ${used}, ` +
        `batch ${batch}, ${epochs} epochs, backend ${out.backend}`,
    );
    console.log(
      `train error ${pct(out.train_error)}, val error ${pct(out.val_error)}, ${
        out.ms_per_batch.toFixed(1)
      } ms/batch, ` +
        `peak ${out.peak_bytes} B (saved activations ${out.peak_saved_bytes} B)` +
        (out.predicted_peak_bytes !== null ? `, predicted ${out.predicted_peak_bytes} B` : ""),
    );
    for (const [block, bytes] of Object.entries(out.saved_bytes_by_block)) {
      console.log(`  ${block}: ${bytes} B saved`);
    }
    if (flags.out) console.log(`wrote ${flags.out}`);
  }
  backend.dispose();
  return 0;
}
