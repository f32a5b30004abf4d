/**
 * A typed view of an ONNX model: graph inputs/outputs with shapes, nodes with their attributes (omitted ones
 * filled with the op's ONNX default), initializers decoded to typed arrays. The decoded ModelProto is kept so
 * that export.ts can re-encode the model with replaced initializers.
 */
import { dirname, isAbsolute, join, normalize } from "node:path";
import { AttributeType, decodeModelProto, int64ToBigInt, int64ToNumber } from "./onnx_proto.ts";
import type { AttributeProto, ModelProto, ValueInfoProto } from "./onnx_proto.ts";
import { decodeTensor, dtypeOf } from "./tensor_proto.ts";
import type { ExternalReader, OnnxDType, OnnxTensor } from "./tensor_proto.ts";

export type { ExternalReader, OnnxDType, OnnxTensor, TensorData } from "./tensor_proto.ts";

export type AttrValue = number | string | number[] | string[] | OnnxTensor | OnnxTensor[];

export interface OnnxNode {
  name: string;
  opType: string;
  domain: string;
  /** Input value names; "" marks an omitted optional input. */
  inputs: string[];
  outputs: string[];
  /** Attributes as given, plus ONNX defaults for the ones the node omits. */
  attrs: Record<string, AttrValue>;
}

/** A dimension: a size, a symbolic name ("batch"), or null when the model says nothing. */
export type Dim = number | string | null;

export interface OnnxValueInfo {
  name: string;
  dtype: OnnxDType | null;
  shape: Dim[] | null;
}

export interface OnnxGraph {
  name: string;
  /** Graph inputs that are fed at run time (initializers listed as inputs by old exporters are left out). */
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** In topological order, as ONNX requires. */
  nodes: OnnxNode[];
  initializers: Map<string, OnnxTensor>;
}

export interface OnnxModel {
  irVersion: number;
  /** Opset version per domain; "" is the default ONNX domain. */
  opsets: Record<string, number>;
  /** Opset of the default domain ("" or "ai.onnx"). */
  opset: number;
  producer: string;
  graph: OnnxGraph;
  proto: ModelProto;
}

const FLT_MAX = 3.4028234663852886e38;

/** ONNX defaults of optional attributes, for the ops edgetrain reads (by default-domain opset). */
function attributeDefaults(opType: string, opset: number): Record<string, AttrValue> {
  switch (opType) {
    case "Conv":
      return { auto_pad: "NOTSET", group: 1 };
    case "AveragePool":
    case "MaxPool":
      return { auto_pad: "NOTSET", ceil_mode: 0, count_include_pad: 0 };
    case "BatchNormalization":
      return opset >= 14
        ? { epsilon: 1e-5, momentum: 0.9, training_mode: 0 }
        : { epsilon: 1e-5, momentum: 0.9 };
    case "Clip":
      return opset < 11 ? { min: -FLT_MAX, max: FLT_MAX } : {};
    case "HardSigmoid":
      return { alpha: 0.2, beta: 0.5 };
    case "LeakyRelu":
      return { alpha: 0.01 };
    case "Gemm":
      return { alpha: 1, beta: 1, transA: 0, transB: 0 };
    case "Flatten":
      return { axis: 1 };
    case "ReduceMean":
    case "ReduceSum":
      return opset >= 18 || (opType === "ReduceSum" && opset >= 13)
        ? { keepdims: 1, noop_with_empty_axes: 0 }
        : { keepdims: 1 };
    case "Reshape":
      return opset >= 14 ? { allowzero: 0 } : {};
    case "Softmax":
    case "LogSoftmax":
      return { axis: opset >= 13 ? -1 : 1 };
    case "Dropout":
      return opset < 12 ? { ratio: 0.5 } : {};
    default:
      return {};
  }
}

/** Conv/pool attributes whose default depends on the number of spatial axes. */
function spatialDefaults(attrs: Record<string, AttrValue>, spatial: number): void {
  attrs.strides ??= new Array(spatial).fill(1);
  attrs.dilations ??= new Array(spatial).fill(1);
  attrs.pads ??= new Array(2 * spatial).fill(0);
}

function decodeAttribute(a: AttributeProto, what: string): AttrValue {
  switch (a.type) {
    case AttributeType.FLOAT:
      return a.f;
    case AttributeType.INT:
      // Numbers beyond 2^53 (INT64_MAX as "to the end") only ever mean "very large"; keep them approximate.
      return Number(int64ToBigInt(a.i));
    case AttributeType.STRING:
      // An unset bytes field decodes as protobufjs's default, [] (not a Uint8Array).
      return new TextDecoder().decode(Uint8Array.from(a.s ?? []));
    case AttributeType.TENSOR:
      if (!a.t) throw new Error(`${what} attribute "${a.name}" is of type TENSOR but holds no tensor`);
      return decodeTensor(a.t, { what: `${what} attribute "${a.name}"` });
    case AttributeType.FLOATS:
      return [...a.floats];
    case AttributeType.INTS:
      return a.ints.map((v) => Number(int64ToBigInt(v)));
    case AttributeType.STRINGS:
      return a.strings.map((s) => new TextDecoder().decode(s));
    case AttributeType.TENSORS:
      return a.tensors.map((t, i) => decodeTensor(t, { what: `${what} attribute "${a.name}"[${i}]` }));
    default:
      throw new Error(`${what} attribute "${a.name}" has unsupported attribute type ${a.type}`);
  }
}

function valueInfo(v: ValueInfoProto): OnnxValueInfo {
  const tt = v.type?.tensorType;
  if (!tt) return { name: v.name, dtype: null, shape: null };
  const shape = tt.shape
    ? tt.shape.dim.map((d): Dim => {
      if (d.dimParam) return d.dimParam;
      return d.dimValue !== undefined && d.dimValue !== null ? int64ToNumber(d.dimValue) : null;
    })
    : null;
  let dtype: OnnxDType | null = null;
  try {
    dtype = dtypeOf(tt.elemType, `value "${v.name}"`);
  } catch {
    // Non-numeric graph values (strings) are only reported if an op actually consumes them.
  }
  return { name: v.name, dtype, shape };
}

function opsetsOf(proto: ModelProto): Record<string, number> {
  const opsets: Record<string, number> = {};
  for (const o of proto.opsetImport) {
    opsets[o.domain === "ai.onnx" ? "" : o.domain] = int64ToNumber(o.version);
  }
  return opsets;
}

/** NaN or infinite weights make every output NaN, silently: refuse them at load. Clip bounds may be ±inf. */
function refuseNonFinite(initializers: Map<string, OnnxTensor>, clipBounds: Set<string>): void {
  for (const [name, t] of initializers) {
    if (clipBounds.has(name) || !(t.data instanceof Float32Array || t.data instanceof Float64Array)) continue;
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i])) {
        throw new Error(
          `Initializer "${name}" has ${t.data[i]} at value ${i} (NaN or infinite weights are refused)`,
        );
      }
    }
  }
}

/**
 * Decode ONNX model bytes. External initializer data is read through `readExternal` (loadModel supplies one
 * that resolves locations against the model's directory).
 */
export function decodeModel(bytes: Uint8Array, options: { readExternal?: ExternalReader } = {}): OnnxModel {
  const proto = decodeModelProto(bytes);
  const g = proto.graph!;
  const opsets = opsetsOf(proto);
  const opset = opsets[""] ?? 1;
  const initializers = new Map<string, OnnxTensor>();
  for (const t of g.initializer) {
    initializers.set(t.name, decodeTensor(t, { readExternal: options.readExternal }));
  }
  refuseNonFinite(
    initializers,
    new Set(g.node.filter((n) => n.opType === "Clip").flatMap((n) => n.input.slice(1))),
  );
  const nodes = g.node.map((n, index): OnnxNode => {
    const name = n.name || `${n.opType}_${index}`;
    const what = `${n.opType} node "${name}"`;
    const given: Record<string, AttrValue> = {};
    for (const a of n.attribute) given[a.name] = decodeAttribute(a, what);
    const domain = n.domain === "ai.onnx" ? "" : n.domain;
    const attrs = domain === "" ? { ...attributeDefaults(n.opType, opset), ...given } : given;
    if (
      domain === "" && (n.opType === "Conv" || n.opType.endsWith("Pool")) && !n.opType.startsWith("Global")
    ) {
      const weight = n.opType === "Conv" ? initializers.get(n.input[1]) : undefined;
      if (weight && attrs.kernel_shape === undefined) attrs.kernel_shape = weight.dims.slice(2);
      const kernel = attrs.kernel_shape as number[] | undefined;
      if (kernel) spatialDefaults(attrs, kernel.length);
    }
    return { name, opType: n.opType, domain, inputs: [...n.input], outputs: [...n.output], attrs };
  });
  const graph: OnnxGraph = {
    name: g.name,
    inputs: g.input.filter((v) => !initializers.has(v.name)).map(valueInfo),
    outputs: g.output.map(valueInfo),
    nodes,
    initializers,
  };
  return {
    irVersion: int64ToNumber(proto.irVersion),
    opsets,
    opset,
    producer: [proto.producerName, proto.producerVersion].filter(Boolean).join(" "),
    graph,
    proto,
  };
}

/** Resolves external data locations against `dir`, refusing paths that leave it; reads each file once. */
export function externalReader(dir: string): ExternalReader {
  const files = new Map<string, Uint8Array>();
  return (location) => {
    const rel = normalize(location);
    if (isAbsolute(rel) || rel === ".." || rel.startsWith("../")) {
      throw new Error(`External data location "${location}" must be a path inside the model's directory`);
    }
    let file = files.get(rel);
    if (!file) {
      const path = join(dir, rel);
      try {
        file = Deno.readFileSync(path);
      } catch (e) {
        throw new Error(`Cannot read external data file "${path}": ${(e as Error).message}`);
      }
      files.set(rel, file);
    }
    return file;
  };
}

/** Read and decode an ONNX model file; errors name the file. */
export async function loadModel(path: string): Promise<OnnxModel> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new Error(`Cannot read ONNX model "${path}": ${why}`);
  }
  try {
    return decodeModel(bytes, { readExternal: externalReader(dirname(path)) });
  } catch (e) {
    const why = (e as Error).message;
    // "Not an ONNX model: ..." reads as a clause after the colon; keep acronyms ("ONNX tensor") as they are.
    const clause = /^[A-Z][a-z]/.test(why) ? why[0].toLowerCase() + why.slice(1) : why;
    throw new Error(`Cannot read ONNX model "${path}": ${clause}`);
  }
}
