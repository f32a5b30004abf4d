import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { decodeModel, loadModel } from "../../src/onnx/model.ts";
import type { OnnxModel, TensorData } from "../../src/onnx/model.ts";
import { decodeTensor } from "../../src/onnx/tensor_proto.ts";
import {
  AttributeType,
  createAttributeProto,
  createModelProto,
  createNodeProto,
  createTensorProto,
  DataType,
  decodeModelProto,
  encodeModelProto,
} from "../../src/onnx/onnx_proto.ts";
import type { TensorProto } from "../../src/onnx/onnx_proto.ts";

const DIR = new URL("../../fixtures/models/", import.meta.url).pathname;

interface ManifestEntry {
  opset: number;
  ir_version: number;
  nodes: number;
  ops: Record<string, number>;
  inputs: { name: string; shape: (number | string)[] }[];
  outputs: { name: string; shape: (number | string)[] }[];
  initializers: Record<
    string,
    { dims: number[]; data_type: number; sum: number; abs_sum: number; first: number | null }
  >;
}

/** What python's onnx package read from each fixture (written by tools/fixtures/export_models.py). */
const manifest: Record<string, ManifestEntry> = JSON.parse(await Deno.readTextFile(`${DIR}manifest.json`));

function sums(data: ArrayLike<number | bigint>): { sum: number; absSum: number } {
  let sum = 0, absSum = 0;
  for (let i = 0; i < data.length; i++) {
    const v = Number(data[i]);
    sum += v;
    absSum += Math.abs(v);
  }
  return { sum, absSum };
}

function values(data: TensorData): (number | bigint)[] {
  return Array.from(data as ArrayLike<number | bigint>);
}

function opCounts(model: OnnxModel): Record<string, number> {
  const ops: Record<string, number> = {};
  for (const n of model.graph.nodes) ops[n.opType] = (ops[n.opType] ?? 0) + 1;
  return ops;
}

for (const [file, want] of Object.entries(manifest)) {
  Deno.test(`loadModel() decodes ${file} like python's onnx package`, async () => {
    const model = await loadModel(`${DIR}${file}`);
    equal(model.opset, want.opset);
    equal(model.irVersion, want.ir_version);
    equal(model.graph.nodes.length, want.nodes);
    deepEqual(opCounts(model), want.ops);
    deepEqual(model.graph.inputs.map((v) => ({ name: v.name, shape: v.shape })), want.inputs);
    deepEqual(model.graph.outputs.map((v) => ({ name: v.name, shape: v.shape })), want.outputs);
    equal(model.graph.initializers.size, Object.keys(want.initializers).length);
    for (const [name, w] of Object.entries(want.initializers)) {
      const t = model.graph.initializers.get(name);
      ok(t, `initializer ${name} is missing`);
      deepEqual(t.dims, w.dims, name);
      equal(t.dtype, w.data_type === DataType.INT64 ? "int64" : "float32", name);
      const s = sums(t.data);
      // float64 sums over the same float32 values; only the summation order differs.
      ok(Math.abs(s.sum - w.sum) <= 1e-9 * Math.max(1, w.abs_sum), `${name}: sum ${s.sum} vs ${w.sum}`);
      ok(
        Math.abs(s.absSum - w.abs_sum) <= 1e-9 * Math.max(1, w.abs_sum),
        `${name}: |sum| ${s.absSum} vs ${w.abs_sum}`,
      );
      if (w.first !== null) equal(Number(t.data[0]), w.first, name);
    }
  });
}

Deno.test("decodeModel() keeps explicit attributes: BN epsilon/momentum, Clip bounds as Constant inputs", async () => {
  const model = await loadModel(`${DIR}mobilenet_v3_small_preserve.onnx`);
  const bn = model.graph.nodes.find((n) => n.opType === "BatchNormalization")!;
  equal(bn.attrs.epsilon, Math.fround(1e-3)); // torchvision's MobileNetV3 uses eps=0.001
  equal(bn.attrs.momentum, Math.fround(0.9)); // ONNX momentum = 1 - PyTorch's 0.1
  equal(bn.attrs.training_mode, 0);
  const hs = model.graph.nodes.find((n) => n.opType === "HardSigmoid")!;
  equal(hs.attrs.alpha, Math.fround(1 / 6));
  equal(hs.attrs.beta, 0.5); // omitted by torch: the ONNX default
  const conv = model.graph.nodes.find((n) => n.opType === "Conv")!;
  deepEqual(conv.attrs.kernel_shape, [3, 3]);
  deepEqual(conv.attrs.strides, [2, 2]);
  const v2 = await loadModel(`${DIR}mobilenet_v2_eval.onnx`);
  const clip = v2.graph.nodes.find((n) => n.opType === "Clip")!;
  const constants = new Map(
    v2.graph.nodes.filter((n) => n.opType === "Constant").map((n) => [n.outputs[0], n]),
  );
  const lo = constants.get(clip.inputs[1])!.attrs.value as { data: Float32Array; dims: number[] };
  const hi = constants.get(clip.inputs[2])!.attrs.value as { data: Float32Array; dims: number[] };
  deepEqual([lo.dims, lo.data[0], hi.data[0]], [[], 0, 6]);
});

function tensor(name: string, dims: number[], dataType: number, rawData: Uint8Array): TensorProto {
  return createTensorProto({ name, dims, dataType, rawData });
}

function syntheticModel(nodes: ReturnType<typeof createNodeProto>[], initializer: TensorProto[]): Uint8Array {
  const type = {
    tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: "N" }, { dimValue: 4 }] } },
  };
  return encodeModelProto(createModelProto({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    graph: {
      name: "g",
      node: nodes,
      initializer,
      input: [{ name: "x", type }],
      output: [{ name: "y", type }],
    },
  }));
}

Deno.test("decodeModel() fills omitted attributes with ONNX defaults", () => {
  const w = tensor("w", [4, 2, 3, 3], DataType.FLOAT, new Uint8Array(4 * 2 * 9 * 4));
  const bytes = syntheticModel([
    createNodeProto({ name: "conv", opType: "Conv", input: ["x", "w"], output: ["c"] }),
    createNodeProto({
      name: "bn",
      opType: "BatchNormalization",
      input: ["c", "s", "b", "m", "v"],
      output: ["n"],
    }),
    createNodeProto({ name: "hs", opType: "HardSigmoid", input: ["n"], output: ["h"] }),
    createNodeProto({ name: "fl", opType: "Flatten", input: ["h"], output: ["f"] }),
    createNodeProto({
      name: "gemm",
      opType: "Gemm",
      input: ["f", "w2"],
      output: ["y"],
      attribute: [createAttributeProto({ name: "transB", type: AttributeType.INT, i: 1 })],
    }),
  ], [w]);
  const nodes = new Map(decodeModel(bytes).graph.nodes.map((n) => [n.name, n.attrs]));
  deepEqual(nodes.get("conv"), {
    auto_pad: "NOTSET",
    group: 1,
    kernel_shape: [3, 3],
    strides: [1, 1],
    dilations: [1, 1],
    pads: [0, 0, 0, 0],
  });
  deepEqual(nodes.get("bn"), { epsilon: 1e-5, momentum: 0.9, training_mode: 0 });
  deepEqual(nodes.get("hs"), { alpha: 0.2, beta: 0.5 });
  deepEqual(nodes.get("fl"), { axis: 1 });
  deepEqual(nodes.get("gemm"), { alpha: 1, beta: 1, transA: 0, transB: 1 });
});

Deno.test("decodeTensor() copies misaligned little-endian raw_data (float32 and int64)", () => {
  const floats = new Float32Array([1.5, -2.25, 3e-8, 65504]);
  for (const offset of [1, 2, 3]) {
    const buf = new Uint8Array(offset + 16);
    buf.set(new Uint8Array(floats.buffer), offset); // host is little-endian, like raw_data
    const t = decodeTensor(tensor("f", [2, 2], DataType.FLOAT, buf.subarray(offset)));
    deepEqual([t.dtype, t.dims, values(t.data)], ["float32", [2, 2], Array.from(floats)]);
    buf.fill(0); // the decoded tensor owns its bytes
    deepEqual(values(t.data), Array.from(floats));
  }
  const ints = new BigInt64Array([-1n, 2n ** 40n, 7n]);
  const buf = new Uint8Array(25);
  buf.set(new Uint8Array(ints.buffer), 1);
  const t = decodeTensor(tensor("shape", [3], DataType.INT64, buf.subarray(1)));
  deepEqual([t.dtype, values(t.data)], ["int64", [-1n, 2n ** 40n, 7n]]);
});

Deno.test("decodeModelProto() finds misaligned raw_data in a real export and decodeModel() reads it", async () => {
  const bytes = await Deno.readFile(`${DIR}small_cnn_preserve.onnx`);
  const proto = decodeModelProto(bytes);
  const misaligned = proto.graph!.initializer.filter((t) => t.rawData.byteOffset % 4 !== 0);
  ok(misaligned.length > 0, "expected at least one raw_data field at an offset that is not a multiple of 4");
  const model = decodeModel(bytes);
  for (const t of misaligned) {
    const want = manifest["small_cnn_preserve.onnx"].initializers[t.name];
    ok(
      Math.abs(sums(model.graph.initializers.get(t.name)!.data).sum - want.sum) <=
        1e-9 * Math.max(1, want.abs_sum),
    );
  }
});

Deno.test("decodeTensor() reads float_data, int64_data and int32_data fields", () => {
  const f = createTensorProto({ name: "f", dims: [3], dataType: DataType.FLOAT, rawData: new Uint8Array() });
  f.floatData = [1, -0.5, 2];
  deepEqual(values(decodeTensor(f).data), [1, -0.5, 2]);
  const i = createTensorProto({ name: "i", dims: [2], dataType: DataType.INT64, rawData: new Uint8Array() });
  i.int64Data = [-1, 5];
  deepEqual(values(decodeTensor(i).data), [-1n, 5n]);
  const h = createTensorProto({
    name: "h",
    dims: [2],
    dataType: DataType.FLOAT16,
    rawData: new Uint8Array(),
  });
  h.int32Data = [0x3c00, 0xc000]; // float16 bit patterns of 1 and -2
  deepEqual(values(decodeTensor(h).data), [1, -2]);
  const bad = createTensorProto({
    name: "bad",
    dims: [4],
    dataType: DataType.FLOAT,
    rawData: new Uint8Array(12),
  });
  throws(() => decodeTensor(bad), /ONNX tensor "bad": dims \[4\] need 16 bytes but raw_data has 12/);
});

Deno.test("loadModel() reads initializers from an external data file next to the model", async () => {
  const external = await loadModel(`${DIR}small_cnn_external.onnx`);
  const inline = await loadModel(`${DIR}small_cnn_eval.onnx`);
  equal(external.graph.initializers.size, inline.graph.initializers.size);
  for (const [name, t] of inline.graph.initializers) {
    deepEqual(external.graph.initializers.get(name), t, name);
  }
  const bytes = await Deno.readFile(`${DIR}small_cnn_external.onnx`);
  throws(
    () => decodeModel(bytes),
    /is stored in external file "small_cnn_external\.onnx\.data"; load the model from a path/,
  );
  throws(
    () => decodeModel(bytes, { readExternal: () => new Uint8Array(10) }),
    /external data range \[\d+, \d+\) lies outside "small_cnn_external\.onnx\.data" \(10 bytes\)/,
  );
});

Deno.test("loadModel() rejects a file that is not an ONNX model with one clear line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/notes.onnx`, "these are not the weights you are looking for\n");
    await rejects(loadModel(`${dir}/notes.onnx`), (e: Error) => {
      ok(/^Cannot read ONNX model ".*notes\.onnx": not an ONNX model/.test(e.message), e.message);
      ok(!e.message.includes("\n"), e.message);
      return true;
    });
    await Deno.writeFile(`${dir}/empty.onnx`, new Uint8Array());
    await rejects(
      loadModel(`${dir}/empty.onnx`),
      /^Error: Cannot read ONNX model ".*empty\.onnx": not an ONNX model/,
    );
    await rejects(
      loadModel(`${dir}/missing.onnx`),
      /Cannot read ONNX model ".*missing\.onnx": file not found/,
    );
    await rejects(
      loadModel(`${DIR}small_cnn.ref.json`),
      /Cannot read ONNX model ".*small_cnn\.ref\.json": not an ONNX model/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
