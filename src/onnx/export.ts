/**
 * Encode an ONNX model with some initializers replaced (adapted BN statistics and affine, retrained weights).
 * Everything else in the decoded ModelProto is written back as it was read. The result is self-contained:
 * initializers that were stored in external files are inlined.
 */
import { createTensorProto, DATA_LOCATION_EXTERNAL, encodeModelProto } from "./onnx_proto.ts";
import type { GraphProto, ModelProto, NodeProto, TensorProto } from "./onnx_proto.ts";
import { DATA_TYPE_OF, sizeOfDims, tensorBytes } from "./tensor_proto.ts";
import type { OnnxModel, OnnxTensor } from "./model.ts";

export interface EncodeOptions {
  /**
   * New values by initializer name. A Float32Array keeps the initializer's dims and must be float32; an
   * OnnxTensor may change dims and dtype. A name that an Identity node aliases to an initializer (torch's
   * export dedupes equal weights that way) gets its own initializer and the Identity node is dropped, so
   * that parameters adapted separately stay separate.
   */
  initializers?: Record<string, Float32Array | OnnxTensor>;
  /** Replaces ModelProto.producer_name, e.g. "edgetrain". */
  producerName?: string;
  /** A new class count: the last dim of the first graph output becomes it (a replaced classifier). */
  classes?: number;
}

/** A shallow copy of a protobufjs message that keeps its prototype (field defaults, encode support). */
function cloneMessage<T extends object>(m: T): T {
  return Object.assign(Object.create(Object.getPrototypeOf(m)), m);
}

function toTensorProto(name: string, t: OnnxTensor): TensorProto {
  return createTensorProto({
    name,
    dims: [...t.dims],
    dataType: DATA_TYPE_OF[t.dtype],
    rawData: tensorBytes(t),
  });
}

function replacement(
  model: OnnxModel,
  name: string,
  value: Float32Array | OnnxTensor,
  dims: number[],
): OnnxTensor {
  if (!(value instanceof Float32Array)) return { ...value, name };
  const old = model.graph.initializers.get(name);
  if (old && old.dtype !== "float32") {
    throw new Error(`encodeModel(): initializer "${name}" is ${old.dtype}; pass an OnnxTensor to replace it`);
  }
  const n = sizeOfDims(dims);
  if (value.length !== n) {
    throw new Error(
      `encodeModel(): initializer "${name}" has dims [${
        dims.join(", ")
      }] (${n} values) but the new value has ${value.length}`,
    );
  }
  return { name, dtype: "float32", dims, data: value };
}

/** The initializer an Identity chain ending in `name` starts from, with the Identity node producing `name`. */
function identityAlias(
  graph: GraphProto,
  model: OnnxModel,
  name: string,
): { node: NodeProto; source: OnnxTensor } | null {
  const producer = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) producer.set(o, n);
  const node = producer.get(name);
  if (!node || node.opType !== "Identity") return null;
  let current = node.input[0];
  for (let hops = 0; hops < graph.node.length; hops++) {
    const source = model.graph.initializers.get(current);
    if (source) return { node, source };
    const next = producer.get(current);
    if (!next || next.opType !== "Identity") return null;
    current = next.input[0];
  }
  return null;
}

/** Encode `model` (as decoded by decodeModel) with the given initializers replaced. */
export function encodeModel(model: OnnxModel, options: EncodeOptions = {}): Uint8Array {
  const proto: ModelProto = cloneMessage(model.proto);
  const graph: GraphProto = cloneMessage(model.proto.graph!);
  proto.graph = graph;
  if (options.producerName !== undefined) proto.producerName = options.producerName;
  const replaced = new Map(Object.entries(options.initializers ?? {}));

  const dropped = new Set<NodeProto>();
  const added: TensorProto[] = [];
  for (const [name, value] of replaced) {
    if (model.graph.initializers.has(name)) continue;
    const alias = identityAlias(model.proto.graph!, model, name);
    if (!alias) throw new Error(`encodeModel(): the model has no initializer named "${name}"`);
    dropped.add(alias.node);
    added.push(toTensorProto(name, replacement(model, name, value, alias.source.dims)));
  }

  graph.initializer = model.proto.graph!.initializer.map((t) => {
    const value = replaced.get(t.name);
    const decoded = model.graph.initializers.get(t.name)!;
    if (value !== undefined) return toTensorProto(t.name, replacement(model, t.name, value, decoded.dims));
    // An output file stands alone: external data is inlined rather than pointing at the source's files.
    if (t.dataLocation === DATA_LOCATION_EXTERNAL) return toTensorProto(t.name, decoded);
    return t;
  }).concat(added);
  graph.node = model.proto.graph!.node.filter((n) => !dropped.has(n));
  if (options.classes !== undefined) graph.output = withClasses(graph.output, options.classes);
  return encodeModelProto(proto);
}

/** The graph outputs with the first one's last dim set to `classes` (when it was a number). */
function withClasses(outputs: GraphProto["output"], classes: number): GraphProto["output"] {
  return outputs.map((o, i) => {
    const dims = o.type?.tensorType?.shape?.dim;
    if (i > 0 || !dims?.length || dims.at(-1)!.dimParam) return o;
    const out = cloneMessage(o);
    const type = cloneMessage(o.type!);
    const tt = cloneMessage(o.type!.tensorType!);
    const shape = cloneMessage(tt.shape!);
    shape.dim = [...dims.slice(0, -1), { ...dims.at(-1)!, dimValue: classes }];
    tt.shape = shape;
    type.tensorType = tt;
    out.type = type;
    return out;
  });
}

/** What exportModule needs from an imported model (src/onnx/import.ts's OnnxModule). */
export interface InitializerSource {
  initializerValues(): Promise<Record<string, Float32Array>>;
  /** Current dims by initializer name, when some may differ from the file's (a replaced classifier). */
  initializerDims?(): Record<string, number[]>;
}

/** The initializer a name refers to, directly or through Identity nodes. */
function originalValue(model: OnnxModel, name: string): OnnxTensor | undefined {
  const producer = new Map(model.graph.nodes.map((n) => [n.outputs[0], n]));
  for (let hops = 0; hops <= model.graph.nodes.length; hops++) {
    const t = model.graph.initializers.get(name);
    if (t) return t;
    const n = producer.get(name);
    if (!n || n.opType !== "Identity") return undefined;
    name = n.inputs[0];
  }
  return undefined;
}

/**
 * Encode `model` with the current parameters and buffers of the module imported from it (adapted BN
 * statistics and affine, retrained weights). Only values that changed are rewritten, so an alias of a
 * deduplicated initializer is untied only when its layer moved away from the original.
 */
export async function exportModule(
  model: OnnxModel,
  module: InitializerSource,
  options: { producerName?: string; classes?: number } = {},
): Promise<Uint8Array> {
  const changed: Record<string, Float32Array | OnnxTensor> = {};
  const dims = module.initializerDims?.() ?? {};
  for (const [name, value] of Object.entries(await module.initializerValues())) {
    const original = originalValue(model, name);
    const d = dims[name];
    if (d && original && d.join() !== original.dims.join()) {
      changed[name] = { name, dtype: "float32", dims: d, data: value };
      continue;
    }
    const same = original?.dtype === "float32" && original.data.length === value.length &&
      (original.data as Float32Array).every((v, i) => Object.is(v, value[i]));
    if (!same) changed[name] = value;
  }
  return encodeModel(model, {
    initializers: changed,
    producerName: options.producerName,
    classes: options.classes,
  });
}
