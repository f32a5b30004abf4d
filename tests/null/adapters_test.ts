import { ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { type AdapterKind, AdapterSet } from "../../src/nn/adapters.ts";
import type { Module } from "../../src/nn/module.ts";
import { exportModule } from "../../src/onnx/export.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { loadModel } from "../../src/onnx/model.ts";
import { initOrt, OrtRunner } from "../../src/onnx/ort.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

const DIR = new URL("../../fixtures/models/", import.meta.url).pathname;
await initOrt();

const b = new CpuBackend();

/** Eval-mode logits of `model` on x. */
async function logits(model: Module, x: Float32Array, dims: number[]): Promise<Float32Array> {
  model.eval();
  const t = Tensor.from(b, x, dims);
  const y = noGrad(() => model.call(t));
  const out = Float32Array.from(await y.data());
  t.dispose();
  y.dispose();
  return out;
}

const maxDiff = (a: ArrayLike<number>, c: ArrayLike<number>) =>
  Array.from(a).reduce((d, v, i) => Math.max(d, Math.abs(v - c[i])), 0);

const MODELS: [string, number[]][] = [
  ["mnist_irb.onnx", [4, 1, 32, 32]],
  ["mobilenet_v2_preserve.onnx", [2, 3, 32, 32]],
];

for (const [file, dims] of MODELS) {
  for (const kind of ["lora", "conv1x1"] as AdapterKind[]) {
    Deno.test(`AdapterSet ${kind} on ${file}: the source model until trained; exported folded, the adapted model's logits in onnxruntime`, async () => {
      const onnx = await loadModel(`${DIR}${file}`);
      const model = importOnnx(b, onnx);
      const x = new Rng(1).normals(dims.reduce((a, v) => a * v, 1));
      const source = await logits(model, x, dims);
      const adapters = AdapterSet.create(kind, model);
      ok(adapters.convs.length > 0);
      ok(maxDiff(await logits(model, x, dims), source) < 1e-5, "zero-initialised adapters change nothing");
      // Adapters as training might leave them: every parameter moved.
      const rng = new Rng(2);
      for (const p of adapters.params) p.backend.write(p.storage, rng.normals(p.size, 0.05));
      const adapted = await logits(model, x, dims);
      ok(maxDiff(adapted, source) > 1e-3, "the adapters change the answers");
      const undo = await adapters.fold();
      const folded = await logits(model, x, dims);
      const bytes = await exportModule(onnx, model);
      undo();
      const runner = await OrtRunner.create(bytes);
      const ort = await runner.run(x, dims);
      await runner.release();
      const scale = Math.max(...adapted.map(Math.abs));
      ok(maxDiff(folded, adapted) < 1e-4 * scale, `folded in edgetrain: ${maxDiff(folded, adapted)}`);
      ok(maxDiff(ort.data, adapted) < 1e-4 * scale, `onnxruntime: ${maxDiff(ort.data, adapted)}`);
      ok(maxDiff(await logits(model, x, dims), adapted) < 1e-6, "undo puts the adapters back");
      adapters.dispose();
      ok(maxDiff(await logits(model, x, dims), source) < 1e-5, "dispose() takes them out");
      model.dispose();
    });
  }
}
