/**
 * ONNX ModelProto wire codec: protobufjs built from the committed JSON descriptor (src/onnx/onnx_pb.json,
 * generated from tools/onnx/onnx.proto by tools/onnx/gen_onnx_json.ts). The interfaces below type the decoded
 * messages (camelCase field names, protobufjs's default); only the fields edgetrain reads are listed, the rest
 * survive a decode/encode round trip untouched.
 */
import protobuf from "protobufjs";
import descriptor from "./onnx_pb.json" with { type: "json" };

/** protobufjs decodes int64 as a Long when the `long` package is present, else as a number. */
export type Int64 = number | { low: number; high: number; unsigned: boolean; toString(): string };

export interface StringStringEntryProto {
  key: string;
  value: string;
}

/** TensorProto.DataType values. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

/** AttributeProto.AttributeType values. */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
} as const;

export const DATA_LOCATION_EXTERNAL = 1;

export interface TensorProto {
  name: string;
  dims: Int64[];
  dataType: number;
  rawData: Uint8Array;
  floatData: number[];
  int32Data: number[];
  int64Data: Int64[];
  doubleData: number[];
  uint64Data: Int64[];
  stringData: Uint8Array[];
  externalData: StringStringEntryProto[];
  dataLocation: number;
}

export interface AttributeProto {
  name: string;
  type: number;
  f: number;
  i: Int64;
  s: Uint8Array;
  t: TensorProto | null;
  floats: number[];
  ints: Int64[];
  strings: Uint8Array[];
  tensors: TensorProto[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain: string;
  attribute: AttributeProto[];
}

export interface DimensionProto {
  dimValue?: Int64;
  dimParam?: string;
}

export interface TypeProto {
  tensorType?: { elemType: number; shape?: { dim: DimensionProto[] } | null } | null;
}

export interface ValueInfoProto {
  name: string;
  type: TypeProto | null;
}

export interface GraphProto {
  name: string;
  node: NodeProto[];
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
}

export interface OperatorSetIdProto {
  domain: string;
  version: Int64;
}

export interface ModelProto {
  irVersion: Int64;
  opsetImport: OperatorSetIdProto[];
  producerName: string;
  producerVersion: string;
  graph: GraphProto | null;
}

const root = protobuf.Root.fromJSON(descriptor);
const modelType = root.lookupType("onnx.ModelProto");
const tensorType = root.lookupType("onnx.TensorProto");
const nodeType = root.lookupType("onnx.NodeProto");
const attributeType = root.lookupType("onnx.AttributeProto");

/** An int64 field as a JS number; throws when it does not fit exactly. */
export function int64ToNumber(v: Int64): number {
  if (typeof v === "number") return v;
  const n = Number(BigInt(v.toString()));
  if (!Number.isSafeInteger(n)) throw new Error(`ONNX int64 value ${v.toString()} does not fit a JS number`);
  return n;
}

export function int64ToBigInt(v: Int64): bigint {
  return typeof v === "number" ? BigInt(v) : BigInt(v.toString());
}

/** Decode a ModelProto; anything that is not one (bad wire data, no graph) throws a one-line error. */
export function decodeModelProto(bytes: Uint8Array): ModelProto {
  let model: ModelProto;
  try {
    model = modelType.decode(bytes) as unknown as ModelProto;
  } catch (e) {
    throw new Error(`Not an ONNX model: protobuf decoding failed (${(e as Error).message})`);
  }
  // Arbitrary bytes sometimes decode as a message of unknown fields; a model always has a graph and an IR version.
  if (!model.graph || int64ToNumber(model.irVersion) <= 0) {
    throw new Error(`Not an ONNX model: ${bytes.length} bytes decode without a graph or IR version`);
  }
  return model;
}

export function encodeModelProto(model: ModelProto): Uint8Array {
  const bytes = modelType.encode(model as unknown as protobuf.Message).finish();
  // A plain Uint8Array view: protobufjs returns a node Buffer under Deno, whose slice() does not copy.
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A TensorProto message from plain fields (raw_data layout), ready to place in a graph. */
export function createTensorProto(
  fields: { name: string; dims: number[]; dataType: number; rawData: Uint8Array },
): TensorProto {
  return tensorType.create(fields) as unknown as TensorProto;
}

export function createNodeProto(fields: Partial<NodeProto>): NodeProto {
  return nodeType.create(fields) as unknown as NodeProto;
}

export function createAttributeProto(fields: Partial<AttributeProto>): AttributeProto {
  return attributeType.create(fields) as unknown as AttributeProto;
}

/** A fresh, empty ModelProto message with the given top-level fields (for tests and synthetic graphs). */
export function createModelProto(fields: {
  irVersion: number;
  opsetImport: { domain: string; version: number }[];
  producerName?: string;
  graph: {
    name: string;
    node: NodeProto[];
    initializer: TensorProto[];
    input: { name: string; type: TypeProto }[];
    output: { name: string; type: TypeProto }[];
  };
}): ModelProto {
  return modelType.fromObject(fields) as unknown as ModelProto;
}
