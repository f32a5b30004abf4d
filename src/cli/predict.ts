/**
 * `edgetrain predict --model M.onnx --images I [--labels L] [--backend webgpu|cpu|auto] [--batch N] [--json]`
 * Inference with the model as exported (eval mode, running statistics); error when labels are given.
 */
import { parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openJob, PREPROCESS_FLAGS } from "./common.ts";
import { SourceOnly } from "../methods/bn_adapt.ts";
import { runAdaptation } from "../methods/run.ts";
import { progressObserver } from "./progress.ts";

export const HELP = `edgetrain predict --model M.onnx --images I [--images I2 ...] [--labels L ...] [options]

  --backend webgpu|cpu|auto   where to run (default auto: WebGPU when an adapter exists)
  --batch N                   images per batch (default 100)
  --mean, --std, --pad, --size, --channels   preprocessing (override the model's sidecar M.json)
  --json                      print one JSON object on stdout`;

export default async function predict(args: string[]): Promise<number> {
  const flags = parseFlags("predict", args, {
    model: { type: "string" },
    images: { type: "string", multiple: true },
    labels: { type: "string", multiple: true },
    batch: { type: "string", default: "100" },
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
  const { streams, skipped, backend, model, preprocess: pre } = await openJob("predict", flags);
  const method = new SourceOnly(model.module);
  const report = await runAdaptation(backend, method, streams, {
    batch,
    preprocess: pre,
    observers: flags.json ? [] : [progressObserver("predict", streams.reduce((n, s) => n + s.set.n, 0))],
  });
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
  }
  backend.dispose();
  return 0;
}
