import { deepEqual, equal, notEqual, ok, throws } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { decodeModel, loadModel } from "../../src/onnx/model.ts";
import type { OnnxModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import type { OnnxModule } from "../../src/onnx/import.ts";
import { exportModule } from "../../src/onnx/export.ts";
import { initOrt, OrtRunner } from "../../src/onnx/ort.ts";
import {
  AttributeType,
  createAttributeProto,
  createModelProto,
  createNodeProto,
  createTensorProto,
  DataType,
  encodeModelProto,
} from "../../src/onnx/onnx_proto.ts";
import type { AttributeProto, NodeProto, TensorProto } from "../../src/onnx/onnx_proto.ts";

const DIR = new URL("../../fixtures/models/", import.meta.url).pathname;

// ort-web's one-time wasm start-up leaves a MessagePort open: do it before any test runs.
await initOrt();

/** edgetrain vs onnxruntime-web, both float32 with different summation orders. */
const PARITY_TOL = 1e-4;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

async function ort(bytes: Uint8Array, x: Float32Array, dims: number[]): Promise<Float32Array> {
  const runner = await OrtRunner.create(bytes);
  try {
    return (await runner.run(x, dims)).data;
  } finally {
    await runner.release();
  }
}

async function forward(m: OnnxModule, x: Float32Array, dims: number[]): Promise<Float32Array> {
  const b = (m.parameters()[0] ?? m.namedState()[0][1]).backend;
  const input = Tensor.from(b, x, dims);
  const y = noGrad(() => m.call(input));
  const out = Float32Array.from(await y.data());
  y.dispose();
  input.dispose();
  return out;
}

async function fixture(file: string) {
  const model = await loadModel(`${DIR}${file}`);
  const ref = JSON.parse(
    await Deno.readTextFile(`${DIR}${file.replace(/_(eval|preserve)\.onnx$/, "")}.ref.json`),
  );
  const x = Float32Array.from(ref.input as number[]);
  return { model, bytes: await Deno.readFile(`${DIR}${file}`), x, dims: ref.input_shape as number[] };
}

const FIXTURES = [
  "small_cnn_eval.onnx",
  "small_cnn_preserve.onnx",
  "mobilenet_v2_eval.onnx",
  "mobilenet_v2_preserve.onnx",
  "mobilenet_v3_small_eval.onnx",
  "mobilenet_v3_small_preserve.onnx",
];

for (const file of FIXTURES) {
  backendTest(`importOnnx() forward matches onnxruntime-web on ${file}`, async (b) => {
    const { model, bytes, x, dims } = await fixture(file);
    const expected = await ort(bytes, x, dims);
    const live = b.ledger.snapshot().live.activations;
    const m = importOnnx(b, model);
    const ours = await forward(m, x, dims);
    const d = maxAbsDiff(ours, expected);
    ok(d <= PARITY_TOL, `max |edgetrain - ort| = ${d}`);
    // Every intermediate of the forward was freed on the way.
    equal(b.ledger.snapshot().live.activations, live);
    m.dispose();
  });
}

backendTest(
  "exportModule() writes BN statistics adapted in train mode that onnxruntime-web reproduces",
  async (b) => {
    const { model, bytes, x, dims } = await fixture("small_cnn_preserve.onnx");
    const m = importOnnx(b, model);
    // BN-adapt: train-mode forwards on a shifted batch move the running statistics (momentum 1 - 0.9).
    const shifted = Tensor.from(b, x.map((v, i) => v * 1.5 + (i % 7) * 0.1), dims);
    m.train();
    noGrad(() => m.call(shifted)).dispose();
    noGrad(() => m.call(shifted)).dispose();
    m.eval();
    shifted.dispose();
    const ours = await forward(m, x, dims);
    const adapted = await exportModule(model, m, { producerName: "edgetrain" });
    const theirs = await ort(adapted, x, dims);
    ok(maxAbsDiff(ours, theirs) <= PARITY_TOL, `max |edgetrain - ort| = ${maxAbsDiff(ours, theirs)}`);
    const before = await ort(bytes, x, dims);
    ok(maxAbsDiff(theirs, before) > 1e-3, "adapting BN statistics did not change the exported model");
    m.dispose();
  },
  { backends: ["cpu"] },
);

backendTest(
  "importOnnx() unties Identity-aliased initializers and exportModule() keeps them apart",
  async (b) => {
    const { model, x, dims } = await fixture("mobilenet_v3_small_eval.onnx");
    const alias = model.graph.nodes.find((n) => n.opType === "Identity")!;
    const m = importOnnx(b, model);
    const state = new Map(m.namedState().map(([, t]) => [t.name, t]));
    const source = state.get(alias.inputs[0])!, copy = state.get(alias.outputs[0])!;
    ok(source && copy, `expected layers loaded from both "${alias.inputs[0]}" and "${alias.outputs[0]}"`);
    notEqual(source, copy);
    deepEqual(await copy.toArray(), await source.toArray());
    b.write(copy.storage, (await copy.data()).map((v) => v + 0.5));
    notEqual((await source.toArray())[0], (await copy.toArray())[0]);
    const ours = await forward(m, x, dims);
    const exported = await exportModule(model, m);
    equal(decodeModel(exported).graph.nodes.filter((n) => n.opType === "Identity").length, 4);
    const theirs = await ort(exported, x, dims);
    ok(maxAbsDiff(ours, theirs) <= PARITY_TOL, `max |edgetrain - ort| = ${maxAbsDiff(ours, theirs)}`);
    m.dispose();
  },
  { backends: ["cpu"] },
);

function f32(name: string, dims: number[], values: ArrayLike<number>): TensorProto {
  const data = Float32Array.from(values);
  return createTensorProto({ name, dims, dataType: DataType.FLOAT, rawData: new Uint8Array(data.buffer) });
}

function i64(name: string, values: number[]): TensorProto {
  const data = BigInt64Array.from(values, BigInt);
  return createTensorProto({
    name,
    dims: [values.length],
    dataType: DataType.INT64,
    rawData: new Uint8Array(data.buffer),
  });
}

type Attr = { f: number } | { i: number } | { ints: number[] } | { t: TensorProto };

function node(
  opType: string,
  input: string[],
  output: string[],
  attrs: Record<string, Attr> = {},
): NodeProto {
  const attribute: AttributeProto[] = Object.entries(attrs).map(([name, a]) => {
    if ("f" in a) return createAttributeProto({ name, type: AttributeType.FLOAT, f: a.f });
    if ("i" in a) return createAttributeProto({ name, type: AttributeType.INT, i: a.i });
    if ("ints" in a) return createAttributeProto({ name, type: AttributeType.INTS, ints: a.ints });
    return createAttributeProto({ name, type: AttributeType.TENSOR, t: a.t });
  });
  return createNodeProto({ name: `${opType}_${output[0]}`, opType, input, output, attribute });
}

function graph(
  nodes: NodeProto[],
  initializer: TensorProto[],
  inDims: (number | string)[],
  outDims: (number | string)[],
) {
  const type = (dims: (number | string)[]) => ({
    tensorType: {
      elemType: DataType.FLOAT,
      shape: { dim: dims.map((d) => (typeof d === "string" ? { dimParam: d } : { dimValue: d })) },
    },
  });
  return encodeModelProto(createModelProto({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    graph: {
      name: "synthetic",
      node: nodes,
      initializer,
      input: [{ name: "x", type: type(inDims) }],
      output: [{ name: "y", type: type(outDims) }],
    },
  }));
}

/** Ops the fixtures do not contain, each with non-default attributes and constant operands. */
function opsModel(rng: Rng): Uint8Array {
  return graph(
    [
      node("Constant", [], ["c0"], { value: { t: f32("", [1, 4, 1, 1], [0.5, -1, 2, 1.5]) } }),
      node("Mul", ["x", "c0"], ["a"]),
      node("Add", ["a", "bias"], ["b"]),
      node("Sigmoid", ["b"], ["s"]),
      node("Sub", ["s", "quarter"], ["d"]),
      node("Div", ["d", "half"], ["e"]),
      node("HardSigmoid", ["e"], ["h"], { alpha: { f: 0.3 }, beta: { f: 0.4 } }),
      node("Constant", [], ["hi"], { value: { t: f32("", [], [0.8]) } }),
      node("Clip", ["h", "", "hi"], ["cl"]),
      node("ReduceMean", ["cl"], ["r"], { axes: { ints: [2, 3] }, keepdims: { i: 0 } }),
      node("MatMul", ["r", "w1"], ["mm"]),
      node("Dropout", ["mm"], ["dr"]),
      node("Identity", ["dr"], ["id"]),
      node("Reshape", ["id", "shape"], ["rs"]),
      node("Relu", ["rs"], ["re"]),
      node("Flatten", ["re"], ["fl"], { axis: { i: 1 } }),
      node("Gemm", ["fl", "w2", "c2"], ["g"], { alpha: { f: 0.5 }, beta: { f: 2 } }),
      node("HardSwish", ["g"], ["y"]),
    ],
    [
      f32("bias", [4, 1, 1], rng.normals(4)),
      f32("quarter", [], [0.25]),
      f32("half", [1], [0.5]),
      f32("w1", [4, 6], rng.normals(24)),
      i64("shape", [0, 2, -1]),
      f32("w2", [6, 3], rng.normals(18, 2)),
      f32("c2", [3], rng.normals(3)),
    ],
    ["N", 4, 5, 5],
    ["N", 3],
  );
}

backendTest(
  "importOnnx() runs Constant, Mul/Add/Sub/Div, Sigmoid, HardSigmoid, Clip, ReduceMean, MatMul, Dropout, Reshape, Gemm like onnxruntime-web",
  async (b) => {
    const rng = new Rng(11);
    const bytes = opsModel(rng);
    const x = rng.normals(3 * 4 * 5 * 5, 2);
    const expected = await ort(bytes, x, [3, 4, 5, 5]);
    const m = importOnnx(b, decodeModel(bytes));
    const ours = await forward(m, x, [3, 4, 5, 5]);
    ok(maxAbsDiff(ours, expected) <= PARITY_TOL, `max |edgetrain - ort| = ${maxAbsDiff(ours, expected)}`);
    ok(expected.some((v) => Math.abs(v) > 0.1), "the synthetic model's outputs are all near 0");
    m.dispose();
  },
);

function importError(b: Backend, model: OnnxModel): string {
  let message = "";
  throws(() => importOnnx(b, model), (e: Error) => (message = e.message, true));
  return message;
}

backendTest("importOnnx() lists every unsupported op with its node name in one error", async (b) => {
  const bytes = graph(
    [
      node("Conv", ["x", "w"], ["c"], { pads: { ints: [1, 1, 1, 1] } }),
      createNodeProto({ name: "topk1", opType: "TopK", input: ["c", "k"], output: ["t", "ti"] }),
      node("Relu", ["t"], ["r"]),
      // Fed by the failed TopK, still listed: every missing op shows in one round.
      createNodeProto({ name: "mod1", opType: "Mod", input: ["r", "r"], output: ["m"] }),
      createNodeProto({ name: "nms", opType: "Foo", domain: "com.example", input: ["m"], output: ["y"] }),
    ],
    [f32("w", [2, 2, 3, 3], new Float32Array(36)), f32("k", [1], new Float32Array([1]))],
    ["N", 2, 4, 4],
    ["N", 2, 2, 2],
  );
  const live = b.ledger.liveBytes;
  equal(
    importError(b, decodeModel(bytes)),
    `importOnnx(): 3 nodes cannot run: unsupported ONNX op "TopK" in node "topk1"; ` +
      `unsupported ONNX op "Mod" in node "mod1"; unsupported op "com.example.Foo" in node "nms"`,
  );
  equal(b.ledger.liveBytes, live, "the Conv layer built before the failing node was not freed");
  const { model } = await fixture("small_cnn_eval.onnx");
  const m = importOnnx(b, model);
  const wrong = Tensor.zeros(b, [1, 3, 28, 28]);
  throws(
    () => m.call(wrong),
    /^Error: ONNX model input \[1, 3, 28, 28\] does not fit "input" \[batch, 1, 28, 28\]$/,
  );
  wrong.dispose();
  m.dispose();
}, { backends: ["cpu"] });

backendTest(
  "importOnnx() names layers like PyTorch's state_dict and starts frozen in eval mode",
  async (b) => {
    const { model } = await fixture("mobilenet_v2_preserve.onnx");
    const m = importOnnx(b, model);
    const names = m.namedState().map(([k]) => k);
    deepEqual(names.toSorted(), [...model.graph.initializers.keys()].toSorted());
    equal(m.trainableParameters().length, 0);
    equal(m.training, false);
    m.dispose();
  },
  { backends: ["cpu"] },
);
