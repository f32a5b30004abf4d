/**
 * `edgetrain train --model M.onnx --images I [--labels L] --method full|bias|mobiletl [--top-blocks K] ...`
 * Supervised transfer with few labels on the top K blocks (src/methods/mobiletl.ts: blocks found from the
 * graph), with the ledger's measured peaks and per-block saved bytes; --num-classes N puts a fresh classifier
 * for a new label set on the model; --out writes the trained model as ONNX.
 */
import { oneOf, parseFlags, parseNumber } from "./args.ts";
import {
  BACKEND_FLAG,
  fitPreprocess,
  modelClasses,
  openBackend,
  openModel,
  openStreams,
  PREPROCESS_FLAGS,
  preprocessFor,
} from "./common.ts";
import { replaceClassifier } from "../onnx/classifier.ts";
import type { ImageSet } from "../data/images.ts";
import { UsageError } from "./errors.ts";
import { methodHelp, names, trainMethod } from "../methods/registry.ts";
import { batchNorms } from "../methods/tta.ts";
import { trainSupervised } from "../methods/supervised.ts";
import { STORES, withStore } from "../memory/policy.ts";
import { exportModule } from "../onnx/export.ts";
import { outputShape } from "../data/preprocess.ts";
import { governed, GOVERNOR_FLAGS } from "./plan.ts";
import { memoryReport } from "./memory.ts";

export const HELP = `edgetrain train --model M.onnx --images I [--labels L] --method METHOD [options]

  --images I                IDX file or image folder; a folder labels itself through its labels.csv /
                            labels.txt or torchvision's ImageFolder layout (one sub-folder per class)
  --labels L                labels for the images (needed for IDX files and unlabelled folders)

  --method METHOD|auto      what trains in the top blocks (required; see docs/memory.md); auto: the
                            strongest that fits the budget
${methodHelp("train", "                              ")}
  --top-blocks K            blocks to train, counted from the output (default: all): residual blocks
                            (ResNet, ConvNeXt, RegNet, ViT layers), dense/fire/shuffle units, inverted
                            residual blocks (MobileTL counts these only), found from the graph
  --num-classes N           replace the final classifier (Linear or 1x1 conv) with a fresh one of N
                            outputs for a new label set; --out writes it
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
  --backend webgpu|wasm|cpu|auto --threads N --mean --std --pad --size --channels
  --json                    print one JSON object on stdout`;

/** Labels must index the model's outputs; a folder with other classes needs --num-classes. */
function checkTrainLabels(
  sets: { name: string; set: ImageSet }[],
  classes: number | null,
  model: string,
): void {
  if (classes === null) return;
  for (const { name, set } of sets) {
    const max = set.labels!.reduce((m, v) => Math.max(m, v), -1);
    const folderClasses = set.classes?.length;
    if (max >= classes || (folderClasses !== undefined && folderClasses !== classes)) {
      throw new UsageError(
        `"${name}" has ${folderClasses ?? max + 1} classes but model "${model}" outputs ${classes}: ` +
          `add --num-classes ${folderClasses ?? max + 1} to train a new classifier for them`,
      );
    }
  }
}

export default async function train(args: string[]): Promise<number> {
  const flags = parseFlags("train", args, {
    model: { type: "string" },
    images: { type: "string" },
    labels: { type: "string" },
    method: { type: "string" },
    "top-blocks": { type: "string" },
    "num-classes": { type: "string" },
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
  const numClasses = parseNumber("num-classes", flags["num-classes"], { integer: true, min: 1 });
  if (flags["val-labels"] && !flags["val-images"]) throw new UsageError("--val-labels needs --val-images");
  const labels = (path: string | undefined) => (path ? [path] : undefined);
  const [data] = await openStreams([flags.images!].filter(Boolean), labels(flags.labels));
  if (!data.set.labels) {
    throw new UsageError(
      `train learns from labelled images, but "${data.name}" has no labels: give --labels, a labels.csv ` +
        `in the folder, or the ImageFolder layout (one sub-folder per class)`,
    );
  }
  const val = flags["val-images"]
    ? (await openStreams([flags["val-images"]], labels(flags["val-labels"])))[0]
    : null;
  if (val && !val.set.labels) {
    throw new UsageError(`--val-images "${val.name}" have no labels: give --val-labels or a labelled folder`);
  }

  const backend = await openBackend(flags, !flags.json);
  const model = await openModel(backend, flags.model);
  if (!batchNorms(model.module).length) {
    // Not an error: full and bias train the folded convolutions; but BN statistics and shifts (MobileTL's
    // inner BNs, bias's BN shifts) do not exist to train, which a user of an eval export should know.
    console.error(
      `edgetrain train: warning: "${model.path}" has no BatchNormalization layers; if it is a PyTorch eval ` +
        "export, BN was folded into the convolutions: re-export with " +
        "training=torch.onnx.TrainingMode.PRESERVE to train BN shifts and statistics",
    );
  }
  const replaced = numClasses === undefined ? null : replaceClassifier(model.module, numClasses, seed);
  checkTrainLabels([data, ...(val ? [val] : [])], replaced?.classes ?? modelClasses(model), model.path);
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
    samples: (data.set.n + (val?.set.n ?? 0)) * epochs,
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
      await exportModule(model.onnx, model.module, { producerName: "edgetrain", classes: replaced?.classes }),
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
    ...(replaced ? { classifier: replaced } : {}),
    n: data.set.n,
    ...report,
    predicted_peak_bytes: gov.predicted_peak_bytes,
    ...memoryReport(gov, backend),
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
    if (replaced) {
      console.log(
        `new classifier "${replaced.name}": ${replaced.inFeatures} features -> ${replaced.classes} classes ` +
          `(was ${replaced.oldClasses})`,
      );
    }
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
