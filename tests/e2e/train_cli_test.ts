import { deepEqual, equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { encodeIdxImages, encodeIdxLabels } from "../../src/data/idx.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { decodeModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { initOrt, OrtRunner } from "../../src/onnx/ort.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

// ort-web's one-time wasm start-up leaves a MessagePort open: do it before any test runs.
await initOrt();

const ROOT = new URL("../../", import.meta.url).pathname;
const DIR = await Deno.makeTempDir({ prefix: "edgetrain_train_" });

/** 8x8 one-channel images of 4 classes (a bright quadrant per class, plus noise). */
function images(n: number, seed: number): { pixels: Uint8Array; labels: Int32Array } {
  const rng = new Rng(seed);
  const pixels = new Uint8Array(n * 64), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 4;
    labels[i] = c;
    for (let p = 0; p < 64; p++) {
      const [y, x] = [p >> 3, p & 7];
      const on = (y < 4) === (c < 2) && (x < 4) === (c % 2 === 0);
      pixels[i * 64 + p] = Math.min(255, Math.max(0, (on ? 200 : 30) + 40 * rng.normal()));
    }
  }
  return { pixels, labels };
}

async function writeSet(name: string, n: number, seed: number): Promise<void> {
  const { pixels, labels } = images(n, seed);
  await Deno.writeFile(
    `${DIR}/${name}-images`,
    encodeIdxImages({ n, channels: 1, height: 8, width: 8, pixels }),
  );
  await Deno.writeFile(`${DIR}/${name}-labels`, encodeIdxLabels(labels));
}

const MODEL = `${DIR}/tiny.onnx`;
{
  const b = new CpuBackend();
  const net = buildIrbNet(b, {
    inChannels: 1,
    numClasses: 4,
    stemChannels: 8,
    stemStride: 1,
    blocks: [[6, 8, 2, 1]],
    lastChannels: 16,
  });
  await Deno.writeFile(MODEL, await moduleToOnnx(net, { inputShape: [1, 8, 8] }));
  await Deno.writeTextFile(`${DIR}/tiny.json`, JSON.stringify({ mean: [0.3], std: [0.3] }));
  await writeSet("train", 48, 1);
  await writeSet("val", 32, 2);
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}main.ts`, "train", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const DATA = [
  "--model",
  MODEL,
  "--images",
  `${DIR}/train-images`,
  "--labels",
  `${DIR}/train-labels`,
  "--val-images",
  `${DIR}/val-images`,
  "--val-labels",
  `${DIR}/val-labels`,
  "--backend",
  "cpu",
  "--batch",
  "16",
  "--epochs",
  "2",
  "--json",
];

Deno.test("edgetrain train --json reports errors, timing and the ledger's saved bytes per block", async () => {
  const runs: Record<string, Record<string, unknown>> = {};
  for (const method of ["full", "mobiletl"]) {
    const r = await cli([...DATA, "--method", method, "--top-blocks", "2", "--lr", "0.01"]);
    equal(r.code, 0, r.stderr);
    runs[method] = JSON.parse(r.stdout);
  }
  const m = runs.mobiletl;
  for (const k of ["train_error", "val_error", "peak_bytes", "peak_saved_bytes", "ms_per_batch"]) {
    equal(typeof m[k], "number", k);
  }
  equal(m.method, "mobiletl");
  equal(m.batch, 16);
  equal(m.epochs, 2);
  equal(m.store, "mask");
  equal(runs.full.store, "fp32");
  deepEqual(m.trained_blocks, ["features.1", "features.2"]);
  deepEqual(Object.keys(m.saved_bytes_by_block as object).sort(), ["features.1", "features.2", "features.3"]);
  const block = (run: Record<string, unknown>, k: string) =>
    (run.saved_bytes_by_block as Record<string, number>)[k];
  for (const k of ["features.1", "features.2"]) {
    ok(block(m, k) < 0.6 * block(runs.full, k), `${k}: mobiletl saves less`);
  }
  ok((m.peak_saved_bytes as number) < (runs.full.peak_saved_bytes as number));
});

Deno.test("edgetrain train --out writes a model that onnxruntime-web runs like edgetrain does", async () => {
  const out = `${DIR}/adapted.onnx`;
  const r = await cli([...DATA, "--method", "mobiletl", "--top-blocks", "1", "--lr", "0.05", "--out", out]);
  equal(r.code, 0, r.stderr);
  equal(JSON.parse(r.stdout).out, out);
  const x = new Rng(9).normals(2 * 64);
  const logits = async (path: string) => {
    const runner = await OrtRunner.load(path);
    try {
      return (await runner.run(x, [2, 1, 8, 8])).data;
    } finally {
      await runner.release();
    }
  };
  const [before, after] = [await logits(MODEL), await logits(out)];
  ok(before.some((v, i) => Math.abs(v - after[i]) > 1e-4), "training changed the exported model");
  const b = new CpuBackend();
  const module = importOnnx(b, decodeModel(await Deno.readFile(out)));
  const input = Tensor.from(b, x, [2, 1, 8, 8]);
  const ours = await noGrad(() => module.call(input)).data();
  for (let i = 0; i < ours.length; i++) {
    ok(Math.abs(ours[i] - after[i]) < 1e-4, `logit ${i}: ${ours[i]} vs ${after[i]}`);
  }
});

Deno.test("edgetrain train rejects bad flags with one line on stderr", async () => {
  const missing = await cli(DATA);
  equal(missing.code, 2);
  ok(missing.stderr.includes("--method is required"), missing.stderr);
  const store = await cli([...DATA, "--method", "full", "--store", "int3"]);
  equal(store.code, 2);
  ok(store.stderr.includes(`--store "int3" is not one of`), store.stderr);
  const blocks = await cli([...DATA, "--method", "mobiletl", "--top-blocks", "3"]);
  equal(blocks.code, 1);
  ok(blocks.stderr.includes("--top-blocks 3 must be an integer from 0 to 2"), blocks.stderr);
  equal(blocks.stderr.trim().split("\n").length, 1);
});
