/**
 * Load figure of `edgetrain serve` with adaptation on: C concurrent clients on loopback each POST corrupted
 * MNIST digits as PNG (one at a time, the next as soon as the answer arrives) until N requests are answered
 * or the time limit passes. Prints sustained predictions/s, client-side p50/p99 latency, and the service's
 * own step latency.
 *
 *   deno run -A --unstable-webgpu --unstable-net tests/bench/serve_load.ts [--backend cpu|webgpu] [--batch 16]
 *     [--clients 32] [--requests 2000] [--seconds 30] [--method tent] [--model M.onnx] [--json]
 *
 * Without --model a small IRB net (tests/e2e/_serve_helpers.ts) is built; --model fixtures/models/mnist_irb.onnx
 * measures the default model. Bounded in count and time; not part of `deno task test`.
 */
import { parseArgs } from "node:util";
import { corrupt } from "../../src/data/corruptions.ts";
import { subset } from "../../src/data/images.ts";
import { mnistSplit } from "../../src/data/mnist.ts";
import { pngOf, startServe, writeSmallModel } from "../e2e/_serve_helpers.ts";

export interface LoadOptions {
  backend: string;
  batch: number;
  clients: number;
  requests: number;
  seconds: number;
  method: string;
  model?: string;
  flushMs: number;
}

export interface LoadResult {
  backend: string;
  method: string;
  model: string;
  batch: number;
  clients: number;
  requests: number;
  errors: number;
  seconds: number;
  predictions_per_s: number;
  p50_ms: number;
  p99_ms: number;
  steps: number;
  mean_batch: number;
  step_ms_mean: number;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

export async function serveLoad(o: LoadOptions): Promise<LoadResult> {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-serve-load-" });
  try {
    const model = o.model ?? await writeSmallModel(dir);
    const { test } = await mnistSplit();
    const set = corrupt(subset(test, Array.from({ length: 256 }, (_, i) => i)), "gaussian_noise", {
      severity: 3,
    });
    const pngs = Array.from({ length: set.n }, (_, i) => pngOf(set, i));
    const served = await startServe([
      "--model",
      model,
      "--method",
      o.method,
      "--state",
      `${dir}/state`,
      "--backend",
      o.backend,
      "--batch",
      String(o.batch),
      "--flush-ms",
      String(o.flushMs),
    ]);
    const latencies: number[] = [];
    let sent = 0, errors = 0;
    const t0 = performance.now();
    const deadline = t0 + o.seconds * 1000;
    const client = async () => {
      while (sent < o.requests && performance.now() < deadline) {
        const i = sent++;
        const s = performance.now();
        const res = await fetch(`${served.url}/v1/predict`, {
          method: "POST",
          headers: { "content-type": "image/png" },
          body: pngs[i % pngs.length],
        });
        await res.arrayBuffer();
        if (res.ok) latencies.push(performance.now() - s);
        else errors++;
      }
    };
    await Promise.all(Array.from({ length: o.clients }, client));
    const seconds = (performance.now() - t0) / 1000;
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    served.child.kill("SIGTERM");
    await served.status;
    latencies.sort((a, b) => a - b);
    const steps = metric(metrics, "edgetrain_adaptation_steps_total");
    return {
      backend: o.backend,
      method: o.method,
      model: o.model ?? "small IRB net (tests/e2e/_serve_helpers.ts)",
      batch: o.batch,
      clients: o.clients,
      requests: latencies.length,
      errors,
      seconds,
      predictions_per_s: latencies.length / seconds,
      p50_ms: quantile(latencies, 0.5),
      p99_ms: quantile(latencies, 0.99),
      steps,
      mean_batch: metric(metrics, "edgetrain_predictions_total") / steps,
      step_ms_mean: 1000 * metric(metrics, "edgetrain_step_seconds_sum") /
        metric(metrics, "edgetrain_step_seconds_count"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const a = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "cpu" },
      batch: { type: "string", default: "16" },
      clients: { type: "string", default: "32" },
      requests: { type: "string", default: "2000" },
      seconds: { type: "string", default: "30" },
      method: { type: "string", default: "tent" },
      model: { type: "string" },
      "flush-ms": { type: "string", default: "50" },
      json: { type: "boolean", default: false },
    },
  }).values;
  const r = await serveLoad({
    backend: a.backend!,
    batch: Number(a.batch),
    clients: Number(a.clients),
    requests: Number(a.requests),
    seconds: Number(a.seconds),
    method: a.method!,
    model: a.model,
    flushMs: Number(a["flush-ms"]),
  });
  if (a.json) console.log(JSON.stringify(r));
  else {
    console.log(
      `serve load (${r.method} on ${r.backend}, batch ${r.batch}, ${r.clients} clients, ${r.model}): ` +
        `${r.requests} predictions in ${r.seconds.toFixed(1)} s = ${r.predictions_per_s.toFixed(1)}/s, ` +
        `p50 ${r.p50_ms.toFixed(1)} ms, p99 ${r.p99_ms.toFixed(1)} ms, ${r.steps} steps of ${
          r.mean_batch.toFixed(1)
        } ` +
        `inputs (${r.step_ms_mean.toFixed(1)} ms each), ${r.errors} errors`,
    );
  }
}
