/**
 * `edgetrain predict --model M.onnx --images I [--labels L] [--out P.jsonl|P.csv [--top-k K] [--logits]] [--json]`
 * Inference with the model as exported (eval mode, running statistics); error when labels are given; with
 * --out, one row per image written as it is produced (src/data/predictions_out.ts).
 */
import { parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, type Job, modelClasses, openJob, PREPROCESS_FLAGS } from "./common.ts";
import { SourceOnly } from "../methods/bn_adapt.ts";
import { type Domain, runAdaptation, type RunObserver } from "../methods/run.ts";
import { progressObserver } from "./progress.ts";
import { openPredictions, predictionsFormat, type PredictionsWriter } from "../data/predictions_out.ts";

export const HELP = `edgetrain predict --model M.onnx --images I [--images I2 ...] [--labels L ...] [options]

  --images I                  an IDX file, a single image, a folder of images (PNG, JPEG, WebP, BMP) with an
                              optional labels.csv, or an ImageFolder (one sub-folder per class)
  --backend webgpu|wasm|cpu|auto   where to run (default auto: WebGPU on a GPU, else wasm)
  --threads N                 wasm backend threads (default: the machine's cores)
  --batch N                   images per batch (default 100)
  --out P.jsonl|P.csv         write one row per image: index, file, label, top-k classes with probabilities
  --top-k K                   classes per row in --out (default 5)
  --logits                    add every logit to each --out row
  --classes FILE              class names, one per line (default: M.classes.txt, "classes" in M.json, or the
                              ImageFolder's sub-folders)
  --resize N|HxW --center-crop M|HxW   torchvision's Resize/CenterCrop (PIL bilinear, antialiased) on read
  --mean, --std, --pad, --size, --channels   preprocessing (override the model's sidecar M.json)
  --max-pixels N              refuse image files that declare more pixels (default 67108864, before decoding)
  --json                      print one JSON object on stdout`;

/**
 * The --out writer of predict and adapt. Class names: --classes or the model's (openJob's `classes`), else
 * ImageFolder sub-folders when their count fits the model.
 */
export function predictionsWriter(
  path: string,
  options: { topK: number; logits: boolean },
  job: Pick<Job, "streams" | "model" | "classes">,
): PredictionsWriter {
  const outputs = modelClasses(job.model);
  const folder = job.streams[0].set.classes;
  const names = job.classes ??
    (folder && (outputs === null || folder.length === outputs) ? folder : undefined);
  return openPredictions(path, { ...options, classes: names });
}

/** A run observer that writes every image's row to `writer` (adapt uses it as predict does). */
export function predictionsObserver(writer: PredictionsWriter, domains: Domain[]): RunObserver {
  return {
    predicted: (e) => {
      const { name, set } = domains[e.domain];
      e.indices.forEach((i, j) => {
        writer.write({
          images: name,
          index: i,
          file: set.names?.[i],
          label: set.labels?.[i],
          logits: e.logits.subarray(j * e.classes, (j + 1) * e.classes),
        });
      });
    },
  };
}

export default async function predict(args: string[]): Promise<number> {
  const flags = parseFlags("predict", args, {
    model: { type: "string" },
    images: { type: "string", multiple: true },
    labels: { type: "string", multiple: true },
    batch: { type: "string", default: "100" },
    out: { type: "string" },
    "top-k": { type: "string", default: "5" },
    logits: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
    ...PREPROCESS_FLAGS,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const batch = parseNumber("batch", flags.batch, { integer: true, min: 1 })!;
  const k = parseNumber("top-k", flags["top-k"], { integer: true, min: 1 })!;
  if (flags.out !== undefined) predictionsFormat(flags.out); // a typo fails before any work
  const { streams, skipped, backend, model, preprocess: pre, classes } = await openJob("predict", flags);
  const method = new SourceOnly(model.module);
  let writer: PredictionsWriter | null = null;
  try {
    const observers: RunObserver[] = [];
    if (!flags.json) observers.push(progressObserver("predict", streams.reduce((n, s) => n + s.set.n, 0)));
    if (flags.out !== undefined) {
      writer = predictionsWriter(flags.out, { topK: k, logits: flags.logits }, { streams, model, classes });
      observers.push(predictionsObserver(writer, streams));
    }
    const report = await runAdaptation(backend, method, streams, { batch, preprocess: pre, observers });
    writer?.close();
    const out = {
      model: model.path,
      backend: backend.name,
      n: report.n,
      error: report.error,
      batch,
      ms_per_batch: report.ms_per_batch,
      warmup_ms: report.warmup_ms,
      streams: report.domains,
      skipped: report.skipped + skipped.length,
      skipped_inputs: [...skipped, ...report.skipped_inputs],
      peak_bytes: report.peak_bytes,
      ...(writer ? { out: writer.path, rows: writer.rows } : {}),
    };
    if (flags.json) console.log(JSON.stringify(out));
    else {
      for (const d of report.domains) {
        console.log(
          `${d.images}: ${d.n} images${d.error !== null ? `, error ${(100 * d.error).toFixed(2)}%` : ""}`,
        );
      }
      console.log(
        `total: ${out.n} images on ${out.backend}${
          out.error !== null ? `, error ${(100 * out.error).toFixed(2)}%` : ""
        }, ` +
          `${out.ms_per_batch.toFixed(1)} ms/batch`,
      );
      if (writer) console.log(`predictions: ${writer.rows} rows in ${writer.path}`);
    }
  } finally {
    writer?.close();
    backend.dispose();
  }
  return 0;
}
