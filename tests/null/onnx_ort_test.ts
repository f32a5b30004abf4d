import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { initOrt, OrtRunner } from "../../src/onnx/ort.ts";
import type { OrtOutput } from "../../src/onnx/ort.ts";
import { decodeModel, loadModel } from "../../src/onnx/model.ts";
import { encodeModel } from "../../src/onnx/export.ts";

const DIR = new URL("../../fixtures/models/", import.meta.url).pathname;

// ort-web's one-time wasm start-up leaves a MessagePort open: do it before any test runs.
await initOrt();

/** torch's eval-mode logits vs onnxruntime-web: float32 kernels in a different order, well within this. */
const PARITY_TOL = 1e-4;

interface Reference {
  input_shape: number[];
  output_shape: number[];
  input: number[];
  output: number[];
}

async function reference(
  model: string,
): Promise<{ x: Float32Array; dims: number[]; y: Float32Array; yDims: number[] }> {
  const ref: Reference = JSON.parse(await Deno.readTextFile(`${DIR}${model}.ref.json`));
  return {
    x: Float32Array.from(ref.input),
    dims: ref.input_shape,
    y: Float32Array.from(ref.output),
    yDims: ref.output_shape,
  };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

async function runBytes(bytes: Uint8Array, x: Float32Array, dims: number[]): Promise<OrtOutput> {
  const runner = await OrtRunner.create(bytes);
  try {
    return await runner.run(x, dims);
  } finally {
    await runner.release();
  }
}

const FIXTURES: [string, string][] = [
  ["small_cnn_eval.onnx", "small_cnn"],
  ["small_cnn_preserve.onnx", "small_cnn"],
  ["small_cnn_external.onnx", "small_cnn"],
  ["mobilenet_v2_eval.onnx", "mobilenet_v2"],
  ["mobilenet_v2_preserve.onnx", "mobilenet_v2"],
  ["mobilenet_v3_small_eval.onnx", "mobilenet_v3_small"],
  ["mobilenet_v3_small_preserve.onnx", "mobilenet_v3_small"],
];

for (const [file, model] of FIXTURES) {
  Deno.test(`OrtRunner.run() matches torch's logits on ${file}`, async () => {
    const ref = await reference(model);
    const runner = await OrtRunner.load(`${DIR}${file}`);
    try {
      deepEqual([runner.inputNames, runner.outputNames], [["input"], ["logits"]]);
      const out = await runner.run(ref.x, ref.dims);
      deepEqual(out.dims, ref.yDims);
      const d = maxAbsDiff(out.data, ref.y);
      ok(d <= PARITY_TOL, `max |ort - torch| = ${d}`);
      // The batch axis is dynamic: one image alone gives that image's row.
      const one = await runner.run(ref.x.subarray(0, ref.x.length / ref.dims[0]), [1, ...ref.dims.slice(1)]);
      ok(maxAbsDiff(one.data, ref.y.subarray(0, ref.yDims[1])) <= PARITY_TOL);
    } finally {
      await runner.release();
    }
  });
}

Deno.test("encodeModel() with nothing replaced gives a model ort-web runs identically", async () => {
  for (
    const [file, model] of [["small_cnn_external.onnx", "small_cnn"], [
      "mobilenet_v3_small_eval.onnx",
      "mobilenet_v3_small",
    ]]
  ) {
    const ref = await reference(model);
    const decoded = await loadModel(`${DIR}${file}`);
    const bytes = encodeModel(decoded);
    // External data is inlined, so the re-encoded model stands alone.
    deepEqual(decodeModel(bytes).graph.initializers, decoded.graph.initializers);
    const runner = await OrtRunner.load(`${DIR}${file}`);
    const original = await runner.run(ref.x, ref.dims);
    await runner.release();
    const again = await runBytes(bytes, ref.x, ref.dims);
    deepEqual(again, original);
  }
});

Deno.test("encodeModel() replacing the Gemm bias shifts every logit by exactly the change", async () => {
  const ref = await reference("small_cnn");
  const model = await loadModel(`${DIR}small_cnn_eval.onnx`);
  const bias = model.graph.initializers.get("fc.bias")!.data as Float32Array;
  const delta = Float32Array.from({ length: 10 }, (_, i) => (i - 4.5) / 8); // multiples of 1/16: exact in f32
  const bytes = encodeModel(model, { initializers: { "fc.bias": bias.map((b, i) => b + delta[i]) } });
  const before = await runBytes(encodeModel(model), ref.x, ref.dims);
  const after = await runBytes(bytes, ref.x, ref.dims);
  const shifted = before.data.map((v, i) => v + delta[i % 10]);
  ok(maxAbsDiff(after.data, shifted) <= 1e-6, `max diff ${maxAbsDiff(after.data, shifted)}`);
});

Deno.test("encodeModel() replacing BN affine in a PRESERVE model changes the logits as BN predicts", async () => {
  // Last block: BN (features.7) -> ReLU -> global average pool -> fc. With gamma = 0 the BN outputs beta
  // everywhere, so every image's logits become fc.weight @ relu(beta) + fc.bias.
  const ref = await reference("small_cnn");
  const model = await loadModel(`${DIR}small_cnn_preserve.onnx`);
  const beta = Float32Array.from({ length: 16 }, (_, i) => (i % 5) - 2);
  const bytes = encodeModel(model, {
    initializers: { "features.7.weight": new Float32Array(16), "features.7.bias": beta },
    producerName: "edgetrain",
  });
  equal(decodeModel(bytes).producer, `edgetrain ${model.proto.producerVersion}`);
  const w = model.graph.initializers.get("fc.weight")!.data as Float32Array;
  const b = model.graph.initializers.get("fc.bias")!.data as Float32Array;
  const expected = Array.from({ length: 10 }, (_, o) => {
    let s = b[o];
    for (let c = 0; c < 16; c++) s += w[o * 16 + c] * Math.max(beta[c], 0);
    return s;
  });
  const out = await runBytes(bytes, ref.x, ref.dims);
  for (let n = 0; n < 4; n++) {
    const d = maxAbsDiff(out.data.subarray(n * 10, n * 10 + 10), expected);
    ok(d <= 1e-5, `image ${n}: max diff ${d}`);
  }
});

Deno.test("encodeModel() unties an Identity-aliased initializer when one alias is replaced", async () => {
  const ref = await reference("mobilenet_v3_small");
  const model = await loadModel(`${DIR}mobilenet_v3_small_eval.onnx`);
  const alias = model.graph.nodes.find((n) => n.opType === "Identity")!;
  const source = model.graph.initializers.get(alias.inputs[0])!;
  const identities = (m: typeof model) => m.graph.nodes.filter((n) => n.opType === "Identity").length;

  const same = encodeModel(model, {
    initializers: { [alias.outputs[0]]: (source.data as Float32Array).slice() },
  });
  const untied = decodeModel(same);
  equal(identities(untied), identities(model) - 1);
  deepEqual(untied.graph.initializers.get(alias.outputs[0])!.dims, source.dims);
  const base = await runBytes(encodeModel(model), ref.x, ref.dims);
  ok(maxAbsDiff((await runBytes(same, ref.x, ref.dims)).data, base.data) === 0);

  const moved = encodeModel(model, {
    initializers: { [alias.outputs[0]]: (source.data as Float32Array).map((v) => v + 3) },
  });
  deepEqual(decodeModel(moved).graph.initializers.get(source.name), source); // the other alias keeps its value
  notDeepEqual((await runBytes(moved, ref.x, ref.dims)).data, base.data);
});

Deno.test("encodeModel() rejects an unknown initializer and a wrongly sized replacement", async () => {
  const model = await loadModel(`${DIR}small_cnn_eval.onnx`);
  let err = "";
  try {
    encodeModel(model, { initializers: { "fc.bais": new Float32Array(10) } });
  } catch (e) {
    err = (e as Error).message;
  }
  equal(err, `encodeModel(): the model has no initializer named "fc.bais"`);
  try {
    encodeModel(model, { initializers: { "fc.bias": new Float32Array(9) } });
  } catch (e) {
    err = (e as Error).message;
  }
  equal(err, `encodeModel(): initializer "fc.bias" has dims [10] (10 values) but the new value has 9`);
});

Deno.test("OrtRunner.create() rejects bytes that are not a model with one clear line", async () => {
  await rejects(OrtRunner.create(new TextEncoder().encode("not a model")), (e: Error) => {
    ok(e.message.startsWith("onnxruntime-web could not load the model: "), e.message);
    return true;
  });
  await rejects(
    OrtRunner.load(`${DIR}missing.onnx`),
    /Cannot read ONNX model ".*missing\.onnx": file not found/,
  );
});
