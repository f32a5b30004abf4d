/**
 * TensorProto <-> typed arrays. raw_data is little-endian and, inside a protobuf buffer, starts at whatever
 * byte offset the message put it (often not a multiple of 4), so it is always copied into a fresh buffer before
 * a Float32Array/BigInt64Array is laid over it: a view would throw (misaligned) or alias the model bytes.
 */
import { DATA_LOCATION_EXTERNAL, DataType, int64ToBigInt, int64ToNumber } from "./onnx_proto.ts";
import type { TensorProto } from "./onnx_proto.ts";

export type OnnxDType =
  | "float32"
  | "float64"
  | "float16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "uint16"
  | "bool";

/** float16 tensors are widened to Float32Array on decode. */
export type TensorData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array;

export interface OnnxTensor {
  name: string;
  dtype: OnnxDType;
  dims: number[];
  data: TensorData;
}

interface DTypeInfo {
  dtype: OnnxDType;
  bytes: number;
}

const DTYPES: Record<number, DTypeInfo> = {
  [DataType.FLOAT]: { dtype: "float32", bytes: 4 },
  [DataType.DOUBLE]: { dtype: "float64", bytes: 8 },
  [DataType.FLOAT16]: { dtype: "float16", bytes: 2 },
  [DataType.INT64]: { dtype: "int64", bytes: 8 },
  [DataType.INT32]: { dtype: "int32", bytes: 4 },
  [DataType.INT16]: { dtype: "int16", bytes: 2 },
  [DataType.INT8]: { dtype: "int8", bytes: 1 },
  [DataType.UINT8]: { dtype: "uint8", bytes: 1 },
  [DataType.UINT16]: { dtype: "uint16", bytes: 2 },
  [DataType.BOOL]: { dtype: "bool", bytes: 1 },
};

const DATA_TYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(DataType).map(([k, v]) => [v, k]),
);

export const DATA_TYPE_OF: Record<OnnxDType, number> = {
  float32: DataType.FLOAT,
  float64: DataType.DOUBLE,
  float16: DataType.FLOAT16,
  int64: DataType.INT64,
  int32: DataType.INT32,
  int16: DataType.INT16,
  int8: DataType.INT8,
  uint8: DataType.UINT8,
  uint16: DataType.UINT16,
  bool: DataType.BOOL,
};

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function dtypeOf(dataType: number, what: string): OnnxDType {
  const info = DTYPES[dataType];
  if (!info) {
    throw new Error(`${what} has unsupported data type ${DATA_TYPE_NAMES[dataType] ?? dataType}`);
  }
  return info.dtype;
}

export function sizeOfDims(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Typed array over a copy of little-endian bytes. */
function fromLittleEndian(bytes: Uint8Array, dtype: OnnxDType, width: number): TensorData {
  // Not bytes.slice(): protobufjs hands out node Buffers under Deno, whose slice() is a view into a shared pool.
  const copy = new Uint8Array(bytes);
  if (!LITTLE_ENDIAN && width > 1) {
    for (let i = 0; i < copy.length; i += width) copy.subarray(i, i + width).reverse();
  }
  const buf = copy.buffer;
  switch (dtype) {
    case "float32":
      return new Float32Array(buf);
    case "float64":
      return new Float64Array(buf);
    case "int64":
      return new BigInt64Array(buf);
    case "int32":
      return new Int32Array(buf);
    case "int16":
      return new Int16Array(buf);
    case "int8":
      return new Int8Array(buf);
    case "uint16":
      return new Uint16Array(buf);
    case "float16":
      return Float32Array.from(new Uint16Array(buf), halfToFloat);
    case "uint8":
    case "bool":
      return copy;
  }
}

function fromTypedFields(t: TensorProto, dtype: OnnxDType): TensorData {
  switch (dtype) {
    case "float32":
      return Float32Array.from(t.floatData);
    case "float64":
      return Float64Array.from(t.doubleData);
    case "int64":
      return BigInt64Array.from(t.int64Data, int64ToBigInt);
    case "int32":
      return Int32Array.from(t.int32Data);
    case "int16":
      return Int16Array.from(t.int32Data);
    case "int8":
      return Int8Array.from(t.int32Data);
    case "uint16":
      return Uint16Array.from(t.int32Data);
    case "uint8":
    case "bool":
      return Uint8Array.from(t.int32Data);
    case "float16": // int32_data holds the IEEE half bit patterns
      return Float32Array.from(t.int32Data, halfToFloat);
  }
}

/** Reads an external data file named by `location` (relative to the model's directory). */
export type ExternalReader = (location: string) => Uint8Array;

function externalBytes(t: TensorProto, what: string, readExternal?: ExternalReader): Uint8Array {
  const entries = new Map(t.externalData.map((e) => [e.key, e.value]));
  const location = entries.get("location");
  if (!location) throw new Error(`${what} is stored externally but names no location`);
  if (!readExternal) {
    throw new Error(
      `${what} is stored in external file "${location}"; load the model from a path to read it`,
    );
  }
  const file = readExternal(location);
  const offset = Number(entries.get("offset") ?? 0);
  const length = entries.has("length") ? Number(entries.get("length")) : file.length - offset;
  if (!(offset >= 0 && length >= 0 && offset + length <= file.length)) {
    throw new Error(
      `${what}: external data range [${offset}, ${
        offset + length
      }) lies outside "${location}" (${file.length} bytes)`,
    );
  }
  return file.subarray(offset, offset + length);
}

/** Decode a TensorProto (raw_data, typed fields or external data) into an OnnxTensor that owns its data. */
export function decodeTensor(
  t: TensorProto,
  options: { readExternal?: ExternalReader; what?: string } = {},
): OnnxTensor {
  const what = options.what ?? `ONNX tensor "${t.name}"`;
  const dtype = dtypeOf(t.dataType, what);
  const dims = t.dims.map(int64ToNumber);
  const n = sizeOfDims(dims);
  const width = DTYPES[t.dataType].bytes;
  let data: TensorData;
  if (t.dataLocation === DATA_LOCATION_EXTERNAL) {
    const bytes = externalBytes(t, what, options.readExternal);
    if (bytes.length !== n * width) {
      throw new Error(
        `${what}: dims [${dims.join(", ")}] need ${n * width} bytes but external data has ${bytes.length}`,
      );
    }
    data = fromLittleEndian(bytes, dtype, width);
  } else if (t.rawData && t.rawData.length > 0) {
    if (t.rawData.length !== n * width) {
      throw new Error(
        `${what}: dims [${dims.join(", ")}] need ${n * width} bytes but raw_data has ${t.rawData.length}`,
      );
    }
    data = fromLittleEndian(t.rawData, dtype, width);
  } else {
    data = fromTypedFields(t, dtype);
  }
  if (data.length !== n) {
    throw new Error(`${what}: dims [${dims.join(", ")}] hold ${n} values but the tensor has ${data.length}`);
  }
  return { name: t.name, dtype, dims, data };
}

/** Little-endian bytes of a tensor's data (float16 is narrowed back from its Float32Array). */
export function tensorBytes(tensor: OnnxTensor): Uint8Array {
  const { data, dtype } = tensor;
  let src: ArrayBufferView = data;
  if (dtype === "float16") src = Uint16Array.from(data as Float32Array, floatToHalf);
  const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength).slice();
  const width = (src as Uint16Array).BYTES_PER_ELEMENT;
  if (!LITTLE_ENDIAN && width > 1) {
    for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
  }
  return bytes;
}

function floatToHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  const mant = x & 0x7fffff;
  if (((x >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = (mant | 0x800000) >> (1 - exp);
    return sign | ((m + 0x1000) >> 13);
  }
  return (sign | (exp << 10) | (mant >> 13)) + ((mant >> 12) & 1);
}
