/**
 * Write an edgetrain nn model as a standalone ONNX model (opset 13, BN kept as BatchNormalization nodes, the
 * form torch exports with training=PRESERVE). Used for the default model that edgetrain trains itself, and
 * for models built from src/nn. Initializer names are the modules' dotted state names, so the file reads
 * back with the same keys.
 */
import type { Module } from "../nn/module.ts";
import { Sequential } from "../nn/module.ts";
import { BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Identity, Linear } from "../nn/layers.ts";
import { InvertedResidual, IrbNet } from "../nn/mobilenet.ts";
import {
  AttributeType,
  createAttributeProto,
  createModelProto,
  createNodeProto,
  createTensorProto,
  DataType,
  encodeModelProto,
  type NodeProto,
  type TensorProto,
} from "./onnx_proto.ts";

type Attr = number | number[];

class GraphWriter {
  nodes: NodeProto[] = [];
  initializers: TensorProto[] = [];
  #count = 0;

  constructor(private readonly state: Record<string, Float32Array>) {}

  fresh(hint: string): string {
    return `${hint}_${this.#count++}`;
  }

  param(name: string, dims: number[]): string {
    const data = this.state[name];
    if (!data) throw new Error(`ONNX export: the model state has no "${name}"`);
    this.constant(name, dims, data);
    return name;
  }

  constant(name: string, dims: number[], data: Float32Array): string {
    const raw = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    this.initializers.push(createTensorProto({ name, dims, dataType: DataType.FLOAT, rawData: raw }));
    return name;
  }

  node(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, name?: string): string {
    const out = this.fresh(opType.toLowerCase());
    const attribute = Object.entries(attrs).map(([k, v]) =>
      Array.isArray(v)
        ? createAttributeProto({ name: k, type: AttributeType.INTS, ints: v })
        : Number.isInteger(v) && k !== "epsilon" && k !== "momentum" && k !== "alpha" && k !== "beta"
        ? createAttributeProto({ name: k, type: AttributeType.INT, i: v })
        : createAttributeProto({ name: k, type: AttributeType.FLOAT, f: v })
    );
    this.nodes.push(createNodeProto({ name: name ?? out, opType, input: inputs, output: [out], attribute }));
    return out;
  }
}

function emit(w: GraphWriter, m: Module, prefix: string, x: string): string {
  const p = (s: string) => (prefix ? `${prefix}.${s}` : s);
  if (m instanceof IrbNet) {
    let h = emit(w, m.features, p("features"), x);
    h = w.node("GlobalAveragePool", [h]);
    h = w.node("Flatten", [h], { axis: 1 });
    return emit(w, m.classifier, p("classifier"), h);
  }
  if (m instanceof Sequential) {
    return m.layers.reduce((h, layer, i) => emit(w, layer, p(String(i)), h), x);
  }
  if (m instanceof InvertedResidual) {
    const y = emit(w, m.conv, p("conv"), x);
    return m.useResidual ? w.node("Add", [x, y]) : y;
  }
  if (m instanceof Conv2d) {
    const [cout, cinG, kh, kw] = m.weight.shape;
    const inputs = [x, w.param(p("weight"), [cout, cinG, kh, kw])];
    if (m.bias) inputs.push(w.param(p("bias"), [cout]));
    return w.node("Conv", inputs, {
      kernel_shape: [kh, kw],
      strides: m.stride,
      pads: [m.padding[0], m.padding[1], m.padding[0], m.padding[1]],
      dilations: m.dilation,
      group: m.groups,
    }, prefix);
  }
  if (m instanceof BatchNorm2d) {
    const c = m.runningMean.size;
    const ones = () => new Float32Array(c).fill(1);
    const gamma = m.affine ? w.param(p("weight"), [c]) : w.constant(w.fresh(p("weight")), [c], ones());
    const beta = m.affine
      ? w.param(p("bias"), [c])
      : w.constant(w.fresh(p("bias")), [c], new Float32Array(c));
    const inputs = [x, gamma, beta, w.param(p("running_mean"), [c]), w.param(p("running_var"), [c])];
    // ONNX momentum weighs the running value (1 - PyTorch's momentum).
    return w.node("BatchNormalization", inputs, { epsilon: m.eps, momentum: 1 - m.momentum }, prefix);
  }
  if (m instanceof Linear) {
    const [out, inF] = m.weight.shape;
    const inputs = [x, w.param(p("weight"), [out, inF])];
    if (m.bias) inputs.push(w.param(p("bias"), [out]));
    return w.node("Gemm", inputs, { transB: 1 }, prefix);
  }
  if (m instanceof GlobalAvgPool) return w.node("GlobalAveragePool", [x]);
  if (m instanceof Flatten) return w.node("Flatten", [x], { axis: m.axis });
  if (m instanceof Identity) return x;
  const kind = (m as { kind?: string }).kind;
  switch (kind) {
    case "ReLU":
      return w.node("Relu", [x]);
    case "ReLU6":
      return w.node("Clip", [x, "clip_min_0", "clip_max_6"]);
    case "Hardswish":
      return w.node("HardSwish", [x]);
    case "Hardsigmoid":
      return w.node("HardSigmoid", [x], { alpha: 1 / 6, beta: 0.5 });
    case "Sigmoid":
      return w.node("Sigmoid", [x]);
  }
  throw new Error(`ONNX export: no ONNX form for module "${prefix}" (${m.constructor.name})`);
}

export interface ExportOptions {
  /** [C, H, W] of one input; the batch dimension is symbolic ("batch"). */
  inputShape: [number, number, number];
  producerName?: string;
  /** Model documentation, e.g. the command that trained it. */
  docString?: string;
}

/** Encode `model` (its current parameters and running statistics) as ONNX bytes. */
export async function moduleToOnnx(model: Module, options: ExportOptions): Promise<Uint8Array> {
  const w = new GraphWriter(await model.state());
  w.constant("clip_min_0", [], Float32Array.of(0));
  w.constant("clip_max_6", [], Float32Array.of(6));
  const out = emit(w, model, "", "input");
  const used = new Set(w.nodes.flatMap((n) => n.input));
  const initializers = w.initializers.filter((t) => used.has(t.name));
  const tensorType = (dims: (number | string)[]) => ({
    tensorType: {
      elemType: DataType.FLOAT,
      shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
    },
  });
  const last = w.nodes[w.nodes.length - 1];
  last.output = ["logits"];
  for (const n of w.nodes) n.input = n.input.map((i) => (i === out ? "logits" : i));
  const proto = createModelProto({
    irVersion: 7,
    opsetImport: [{ domain: "", version: 13 }],
    producerName: options.producerName ?? "edgetrain",
    graph: {
      name: "edgetrain",
      node: w.nodes,
      initializer: initializers,
      input: [{ name: "input", type: tensorType(["batch", ...options.inputShape]) }],
      output: [{ name: "logits", type: tensorType(["batch", "classes"]) }],
    },
  });
  if (options.docString) (proto as unknown as { docString: string }).docString = options.docString;
  return encodeModelProto(proto);
}
