/**
 * Streaming adaptation on corrupted MNIST as a camera delivers it, for docs/streaming.md:
 *
 *   deno run -A tools/stream_table.ts [--methods rotta,tent,bn,eata,sar] [--chunks 1,8,64]
 *     [--orders iid,sorted] [--corruptions all|a,b] [--n 2000] [--backend cpu|wasm] [--json FILE] [--md FILE]
 *
 * For every (method, chunk, order): the online error per corruption (severity 5, seed 0, the 2,000 test
 * digits of mnistSplit() — never seen in training — corrupted in memory), each corruption its own stream
 * from the source model (reset each domain), replayed in the order (iid: a seeded shuffle; sorted: one
 * class after another) and in chunks of that many frames. The unadapted model (`source`) is the baseline of
 * every row. Tuning flags (--momentum, --warmup, --every, --memory, --stats-from, --fill-first) pass to the
 * methods.
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWasmBackend } from "../src/backend/wasm/mod.ts";
import type { Backend } from "../src/backend/backend.ts";
import { corrupt, CORRUPTIONS } from "../src/data/corruptions.ts";
import { subset } from "../src/data/images.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import { type StreamOrder, streamOrder } from "../src/data/order.ts";
import { loadPreprocessSidecar } from "../src/data/preprocess.ts";
import { type BankSettings, withBank } from "../src/methods/bank/mod.ts";
import { createMethod } from "../src/methods/registry.ts";
import { type Domain, runAdaptation } from "../src/methods/run.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { loadModel } from "../src/onnx/model.ts";
import { streamMarkdown } from "./stream_markdown.ts";

export interface StreamRun {
  method: string;
  chunk: number;
  order: string;
  /** Online error (%) per corruption. */
  errors: Record<string, number>;
  mean: number;
  steps: number;
  resets: number;
  ms_per_frame: number;
}

export interface RunSettings {
  model: string;
  domains: Domain[];
  backend: () => Promise<Backend>;
  stream?: Record<string, unknown>;
  protocol?: "continual" | "reset-each-domain";
  /** An adapter bank around the method (src/methods/bank/). */
  bank?: BankSettings;
}

/** One (method, chunk) over the domains as given. */
export async function runStream(
  method: string,
  chunk: number,
  order: string,
  s: RunSettings,
): Promise<StreamRun> {
  const backend = await s.backend();
  const onnx = await loadModel(s.model);
  const preprocess = await loadPreprocessSidecar(s.model);
  const model = importOnnx(backend, onnx);
  const m = await createMethod(method, model, withBank({ stream: s.stream }, s.bank));
  const r = await runAdaptation(backend, m, s.domains, {
    batch: chunk,
    preprocess,
    protocol: s.protocol ?? "reset-each-domain",
  });
  m.dispose();
  model.dispose();
  const errors = Object.fromEntries(r.domains.map((d) => [d.images, 100 * d.error!]));
  const frames = r.n;
  return {
    method,
    chunk,
    order,
    errors,
    mean: 100 * r.error!,
    steps: r.adaptation_steps,
    resets: r.resets,
    ms_per_frame: (r.ms_per_batch * Math.ceil(frames / chunk)) / frames,
  };
}

/** The corrupted test digits, one domain per corruption, in `order`. */
export async function corruptedDomains(
  corruptions: readonly string[],
  n: number,
  order: StreamOrder,
  seed = 0,
): Promise<Domain[]> {
  const { test } = await mnistSplit();
  const base = subset(test, Array.from({ length: Math.min(n, test.n) }, (_, i) => i));
  return corruptions.map((c) => {
    const set = corrupt(base, c, { severity: 5, seed: 0 });
    return { name: c, set: subset(set, streamOrder(set.n, set.labels, order, seed)) };
  });
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
      methods: { type: "string", default: "source,bn,tent,eata,sar,rotta" },
      chunks: { type: "string", default: "1,8,64" },
      orders: { type: "string", default: "iid,sorted" },
      corruptions: { type: "string", default: "all" },
      n: { type: "string", default: "2000" },
      momentum: { type: "string" },
      every: { type: "string" },
      memory: { type: "string" },
      "stats-from": { type: "string" },
      "fill-first": { type: "string" },
      warmup: { type: "boolean", default: false },
      protocol: { type: "string", default: "reset-each-domain" },
      backend: { type: "string", default: "cpu" },
      json: { type: "string" },
      md: { type: "string" },
    },
  });
  // One wasm backend on one thread for the whole table (two tables can then run side by side).
  const wasm = a.backend === "wasm" ? await createWasmBackend({ threads: 1 }) : null;
  const corruptions = a.corruptions === "all" ? CORRUPTIONS : a.corruptions!.split(",");
  const stream: Record<string, unknown> = {};
  if (a.momentum) stream.momentum = Number(a.momentum);
  if (a.every) stream.every = Number(a.every);
  if (a.memory) stream.capacity = Number(a.memory);
  if (a["stats-from"]) stream.statsFrom = a["stats-from"];
  if (a["fill-first"]) stream.fillFirst = a["fill-first"] === "true";
  if (a.warmup) stream.warmup = true;
  const runs: StreamRun[] = [];
  for (const order of a.orders!.split(",")) {
    const domains = await corruptedDomains(corruptions, Number(a.n), { kind: order as "iid" | "sorted" });
    for (const method of a.methods!.split(",")) {
      for (const chunk of a.chunks!.split(",").map(Number)) {
        const r = await runStream(method, chunk, order, {
          model: a.model!,
          domains,
          backend: () => Promise.resolve(wasm ?? new CpuBackend()),
          stream,
          protocol: a.protocol as "continual" | "reset-each-domain",
        });
        runs.push(r);
        const per = corruptions.map((c) => r.errors[c].toFixed(1)).join(" ");
        console.log(
          `${order.padEnd(6)} ${method.padEnd(6)} chunk ${String(chunk).padStart(2)}: mean ${
            r.mean.toFixed(2)
          } | ${per} | steps ${r.steps} resets ${r.resets} ${r.ms_per_frame.toFixed(1)} ms/frame`,
        );
      }
    }
  }
  if (a.json) await Deno.writeTextFile(a.json, JSON.stringify(runs, null, 1));
  if (a.md) await Deno.writeTextFile(a.md, streamMarkdown(runs));
  wasm?.dispose();
}
