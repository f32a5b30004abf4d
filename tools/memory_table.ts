/**
 * The tables of docs/memory.md (issue 5), measured with the ledger on this machine:
 *
 *   deno run -A --unstable-webgpu tools/memory_table.ts --table memory     saved bytes: mobiletl vs full, stores
 *   deno run -A --unstable-webgpu tools/memory_table.ts --table accuracy   inverted-MNIST transfer, hard-swish step
 *   deno run -A --unstable-webgpu tools/memory_table.ts --table tent       TENT with fp32/fp16/int8/int4 storage
 *
 * Options: --backend cpu|webgpu (default cpu), --json FILE (raw results), --cache DIR (keep the pretrained
 * MobileNetV3-style state between runs). Each table prints as markdown on stdout.
 */
import { parseArgs } from "node:util";
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { type ImageSet, loadImages, subset } from "../src/data/images.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import { loadPreprocessSidecar, type PreprocessOptions } from "../src/data/preprocess.ts";
import { withStore } from "../src/memory/policy.ts";
import type { ConcreteStore } from "../src/memory/policy.ts";
import { prepareTransfer, type TransferMethod } from "../src/methods/mobiletl.ts";
import { evaluate, trainSupervised } from "../src/methods/supervised.ts";
import { createMethod } from "../src/methods/registry.ts";
import { runAdaptation } from "../src/methods/run.ts";
import type { Module } from "../src/nn/module.ts";
import { buildIrbNet, type IrbNet } from "../src/nn/mobilenet.ts";
import { buildMobileNetV3 } from "../src/nn/mobilenet_v3.ts";
import { loadModel } from "../src/onnx/model.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { backward } from "../src/autograd/tape.ts";
import { crossEntropy } from "../src/ops/loss.ts";
import { Rng } from "../src/random.ts";
import { Tensor } from "../src/tensor.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    table: { type: "string", default: "memory" },
    backend: { type: "string", default: "cpu" },
    json: { type: "string" },
    cache: { type: "string" },
    model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
    labels: { type: "string", default: "500" },
    epochs: { type: "string", default: "6" },
    seeds: { type: "string", default: "3" },
  },
}).values;

const MNIST_PRE: PreprocessOptions = { pad: 2, mean: [0.1307], std: [0.3081] };
const kib = (b: number) => (b / 1024).toFixed(1);
const pct = (v: number | null) => (v === null ? "-" : (100 * v).toFixed(2));

async function backendNamed(name: string): Promise<Backend> {
  if (name === "cpu") return new CpuBackend();
  const { createWebGpuBackend } = await import("../src/backend/webgpu/mod.ts");
  return await createWebGpuBackend();
}

const backend = await backendNamed(args.backend!);
const results: Record<string, unknown> = {
  command: `deno run -A --unstable-webgpu tools/memory_table.ts ${Deno.args.join(" ")}`,
};

type Arch = "v2" | "v3";
const build = (arch: Arch, seed = 0): IrbNet =>
  arch === "v2"
    ? buildIrbNet(backend, { inChannels: 1, numClasses: 10, seed })
    : buildMobileNetV3(backend, { inChannels: 1, numClasses: 10, seed });

/** Random 28x28 digits-shaped images: memory does not depend on the pixels. */
function randomSet(n: number): ImageSet {
  const rng = new Rng(1);
  const pixels = Uint8Array.from({ length: n * 784 }, () => Math.floor(rng.next() * 256));
  return {
    n,
    channels: 1,
    height: 28,
    width: 28,
    pixels,
    labels: Int32Array.from({ length: n }, (_, i) => i % 10),
  };
}

/** One epoch of one batch: the ledger's saved bytes per trained block, total saved and total peak. */
async function measure(
  arch: Arch,
  method: TransferMethod,
  k: number,
  store: ConcreteStore | null,
  batch: number,
) {
  const net = build(arch);
  const plan = prepareTransfer(net, method, { topBlocks: k });
  const r = await withStore(store ?? plan.store, () =>
    trainSupervised(backend, net, randomSet(batch), {
      epochs: 1,
      batch,
      optimizer: { kind: "adam", lr: 1e-3 },
      preprocess: MNIST_PRE,
      progress: false,
      setMode: plan.setMode,
    }));
  net.dispose();
  const blocks = plan.blocks.map((b) => b.name);
  const irb = blocks.reduce((s, name) => s + (r.saved_bytes_by_block[name] ?? 0), 0);
  return { arch, method, k, store: store ?? plan.store, blocks, irb_saved_bytes: irb, ...r };
}

async function memoryTable(): Promise<void> {
  const batch = 32, k = 3;
  const rows = [];
  console.log(`### Saved activations of the top ${k} IRBs, batch ${batch}, 1x32x32 input (ledger peak)\n`);
  console.log(
    "| model | method | store | per block (KiB) | trained IRBs (KiB) | reduction | all saved (KiB) | peak (KiB) |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const arch of ["v2", "v3"] as const) {
    const full = await measure(arch, "full", k, null, batch);
    for (
      const r of [
        full,
        await measure(arch, "mobiletl", k, null, batch),
        await measure(arch, "bias", k, null, batch),
      ]
    ) {
      rows.push(r);
      const per = r.blocks.map((b) => kib(r.saved_bytes_by_block[b])).join(" / ");
      const red = 1 - r.irb_saved_bytes / full.irb_saved_bytes;
      console.log(
        `| ${
          arch === "v2" ? "V2-style (ReLU6)" : "V3-style (h-swish, SE)"
        } | ${r.method} | ${r.store} | ${per} | ` +
          `${kib(r.irb_saved_bytes)} | ${r === full ? "-" : `${(100 * red).toFixed(1)}%`} | ` +
          `${kib(r.peak_saved_bytes)} | ${kib(r.peak_bytes)} |`,
      );
    }
  }
  console.log(
    `\n### Saved activations of the top ${k} IRBs under each --store (method full, batch ${batch})\n`,
  );
  console.log("| model | store | trained IRBs (KiB) | vs fp32 | all saved (KiB) |");
  console.log("|---|---|---|---|---|");
  for (const arch of ["v2", "v3"] as const) {
    let base = 0;
    for (const store of ["fp32", "fp16", "int8", "int4", "mask"] as const) {
      const r = await measure(arch, "full", k, store, batch);
      rows.push(r);
      if (store === "fp32") base = r.irb_saved_bytes;
      console.log(
        `| ${arch} | ${store} | ${kib(r.irb_saved_bytes)} | ${
          (100 * r.irb_saved_bytes / base).toFixed(1)
        }% | ` +
          `${kib(r.peak_saved_bytes)} |`,
      );
    }
  }
  results.memory = rows;
}

const invert = (s: ImageSet): ImageSet => ({ ...s, pixels: s.pixels.map((p) => 255 - p) });
const first = (s: ImageSet, n: number) => subset(s, Array.from({ length: Math.min(n, s.n) }, (_, i) => i));

/** The pretrained MobileNetV3-style state (trained here on clean MNIST, cached with --cache). */
async function pretrainedV3(
  train: ImageSet,
  test: ImageSet,
): Promise<{ state: Record<string, Float32Array>; error: number }> {
  const file = args.cache ? `${args.cache}/mnist_v3_state.json` : null;
  if (file) {
    try {
      const cached = JSON.parse(await Deno.readTextFile(file));
      const state: Record<string, Float32Array> = {};
      for (const [k, v] of Object.entries(cached.state)) state[k] = Float32Array.from(v as number[]);
      return { state, error: cached.error };
    } catch { /* not cached yet */ }
  }
  const net = build("v3");
  await trainSupervised(backend, net, train, {
    epochs: 2,
    batch: 64,
    optimizer: { kind: "adam", lr: 0.004 },
    preprocess: MNIST_PRE,
    cosine: true,
    label: "pretrain V3-style on MNIST",
  });
  const error = await evaluate(backend, net, test, { batch: 100, preprocess: MNIST_PRE });
  const state = await net.state();
  net.dispose();
  if (file) {
    await Deno.mkdir(args.cache!, { recursive: true });
    const plain = Object.fromEntries(Object.entries(state).map(([k, v]) => [k, Array.from(v)]));
    await Deno.writeTextFile(file, JSON.stringify({ error, state: plain }));
  }
  return { state, error };
}

interface Source {
  name: string;
  load: () => Promise<Module>;
  pre: PreprocessOptions;
}

/** Train `method` on the top k blocks of a fresh copy of the source; val error at the end. */
async function transfer(
  src: Source,
  method: TransferMethod,
  k: number,
  store: ConcreteStore | null,
  train: ImageSet,
  val: ImageSet,
  seed: number,
) {
  const model = await src.load();
  const plan = prepareTransfer(model, method, { topBlocks: k });
  const epochs = Number(args.epochs);
  const r = await withStore(store ?? plan.store, () =>
    trainSupervised(backend, model, train, {
      epochs,
      batch: 32,
      optimizer: { kind: "adam", lr: 3e-3 },
      preprocess: src.pre,
      cosine: true,
      seed,
      label: `${src.name} ${method} ${store ?? plan.store} seed ${seed}`,
      setMode: plan.setMode,
    }));
  const val_error = await evaluate(backend, model, val, { batch: 100, preprocess: src.pre });
  model.dispose();
  return {
    model: src.name,
    method,
    k,
    store: store ?? plan.store,
    epochs,
    val_error,
    train_error: r.train_error,
    peak_saved_bytes: r.peak_saved_bytes,
  };
}

/** Cosine similarity of the trained parameters' gradients with hard-swish's step vs its exact derivative. */
async function gradientAgreement(src: Source, k: number, set: ImageSet): Promise<number> {
  const grads: Float32Array[] = [];
  for (const store of ["fp32", "mask"] as const) {
    const model = await src.load();
    const plan = prepareTransfer(model, "mobiletl", { topBlocks: k });
    const { preprocessBatch } = await import("../src/data/preprocess.ts");
    const x = Tensor.from(backend, preprocessBatch(set, Array.from({ length: 64 }, (_, i) => i), src.pre), [
      64,
      1,
      32,
      32,
    ]);
    await withStore(store, () => {
      const loss = crossEntropy(model.call(x), Array.from(set.labels!.subarray(0, 64)));
      backward(loss);
      loss.dispose();
    });
    const parts = await Promise.all(plan.params.map(async (p) => Float32Array.from(await p.grad!.data())));
    grads.push(Float32Array.from(parts.flatMap((g) => Array.from(g))));
    x.dispose();
    model.dispose();
  }
  let dot = 0, a = 0, b = 0;
  for (let i = 0; i < grads[0].length; i++) {
    dot += grads[0][i] * grads[1][i];
    a += grads[0][i] ** 2;
    b += grads[1][i] ** 2;
  }
  return dot / Math.sqrt(a * b);
}

async function accuracyTable(): Promise<void> {
  const { train, test } = await mnistSplit();
  const labels = Number(args.labels);
  const shiftTrain = invert(first(train, labels)), shiftVal = invert(first(test, 1000));
  const k = 3;
  const onnx = await loadModel(args.model!);
  const v2: Source = {
    name: "V2-style (mnist_irb.onnx)",
    load: () => Promise.resolve(importOnnx(backend, onnx)),
    pre: (await loadPreprocessSidecar(args.model!)) ?? MNIST_PRE,
  };
  const pre = await pretrainedV3(train, first(test, 2000));
  const v3: Source = {
    name: "V3-style (pretrained here)",
    load: () => {
      const net = build("v3");
      net.loadState(pre.state);
      return Promise.resolve(net.eval());
    },
    pre: MNIST_PRE,
  };
  const rows = [];
  console.log(
    `### Inverted MNIST, ${labels} labels, top ${k} blocks, ${args.epochs} epochs, shuffle seeds 0..${
      Number(args.seeds) - 1
    } (val: 1000 inverted test digits)\n`,
  );
  console.log("| model | method | store | val error %: mean (seeds) | train error % | peak saved (KiB) |");
  console.log("|---|---|---|---|---|---|");
  for (const src of [v2, v3]) {
    const m = await src.load();
    const e = await evaluate(backend, m, shiftVal, { batch: 100, preprocess: src.pre });
    m.dispose();
    console.log(`| ${src.name} | source (no training) | - | ${pct(e)} | - | - |`);
    rows.push({ model: src.name, method: "source", val_error: e });
    const runs: [TransferMethod, ConcreteStore | null][] = [["full", null], ["mobiletl", null], [
      "bias",
      null,
    ]];
    if (src === v3) runs.push(["mobiletl", "fp32"]); // exact hard-swish derivative, same BN rules
    for (const [method, store] of runs) {
      const seeds: Awaited<ReturnType<typeof transfer>>[] = [];
      for (let seed = 0; seed < Number(args.seeds); seed++) {
        seeds.push(await transfer(src, method, k, store, shiftTrain, shiftVal, seed));
      }
      const mean = (f: (r: (typeof seeds)[number]) => number) =>
        seeds.reduce((a, r) => a + f(r), 0) / seeds.length;
      const r = {
        ...seeds[0],
        val_error: mean((r) => r.val_error),
        train_error: mean((r) => r.train_error),
        seeds,
      };
      rows.push(r);
      console.log(
        `| ${src.name} | ${method} | ${r.store} | ${pct(r.val_error)} (${
          seeds.map((x) => pct(x.val_error)).join(", ")
        }) | ` +
          `${pct(r.train_error)} | ${kib(r.peak_saved_bytes)} |`,
      );
    }
  }
  const cos = await gradientAgreement(v3, k, shiftTrain);
  console.log(`\nV3-style clean MNIST test error after pretraining: ${pct(pre.error)}%.`);
  console.log(
    `Cosine similarity of mobiletl's parameter gradients, hard-swish step vs exact (one batch of 64): ${
      cos.toFixed(4)
    }`,
  );
  results.accuracy = { rows, v3_pretrain_error: pre.error, gradient_cosine: cos };
}

async function tentTable(): Promise<void> {
  const dir = "fixtures/streams/mnist_c";
  const names = ["gaussian_noise", "defocus_blur", "fog", "contrast"];
  const domains = await Promise.all(names.map(async (name) => ({
    name,
    set: await loadImages(`${dir}/${name}-s5-images-idx3-ubyte.gz`, {
      labels: `${dir}/${name}-s5-labels-idx1-ubyte.gz`,
    }),
  })));
  const onnx = await loadModel(args.model!);
  const pre = (await loadPreprocessSidecar(args.model!)) ?? MNIST_PRE;
  const rows = [];
  console.log(
    `### TENT (Adam 1e-3, batch 64, reset per domain) on ${names.join(", ")} (severity 5, 500 each)\n`,
  );
  console.log("| store | error % | vs fp32 (points) | peak saved (KiB) | vs fp32 | peak (KiB) | ms/batch |");
  console.log("|---|---|---|---|---|---|---|");
  let base: { error: number; saved: number } | null = null;
  for (const store of ["fp32", "fp16", "int8", "int4"] as const) {
    const model = importOnnx(backend, onnx);
    const tent = await createMethod("tent", model);
    const r = await withStore(
      store,
      () =>
        runAdaptation(backend, tent, domains, {
          batch: 64,
          preprocess: pre,
          protocol: "reset-each-domain",
        }),
    );
    tent.dispose();
    model.dispose();
    base ??= { error: r.error!, saved: r.peak_saved_bytes };
    rows.push({
      store,
      error: r.error,
      domains: r.domains,
      peak_saved_bytes: r.peak_saved_bytes,
      peak_bytes: r.peak_bytes,
      ms_per_batch: r.ms_per_batch,
    });
    console.log(
      `| ${store} | ${pct(r.error)} | ${(100 * (r.error! - base.error)).toFixed(2)} | ${
        kib(r.peak_saved_bytes)
      } | ` +
        `${(100 * r.peak_saved_bytes / base.saved).toFixed(1)}% | ${kib(r.peak_bytes)} | ${
          r.ms_per_batch.toFixed(0)
        } |`,
    );
  }
  results.tent = rows;
}

const tables: Record<string, () => Promise<void>> = {
  memory: memoryTable,
  accuracy: accuracyTable,
  tent: tentTable,
};
for (const t of args.table === "all" ? Object.keys(tables) : [args.table!]) {
  if (!tables[t]) throw new Error(`--table "${t}" is not one of ${Object.keys(tables).join(", ")}, all`);
  await tables[t]();
  console.log();
}
if (args.json) await Deno.writeTextFile(args.json, JSON.stringify(results, null, 2) + "\n");
backend.dispose();
