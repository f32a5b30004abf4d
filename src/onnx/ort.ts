/**
 * onnxruntime-web (wasm execution provider) as an inference path and as the parity oracle in tests.
 *
 * Under Deno, `onnxruntime-web` resolves to its Node build (dist/ort.node.min.mjs), which reads
 * ort-wasm-simd-threaded.wasm from its own npm package directory: no network and no wasmPaths are needed, but the
 * process needs read permission on that directory (Deno's npm cache, or the embedded one in a compiled binary).
 * One wasm thread: worker threads would outlive a test and buy little at the batch sizes edgetrain runs.
 */
import * as ort from "onnxruntime-web";
import { dirname } from "node:path";
import {
  createModelProto,
  createNodeProto,
  DATA_LOCATION_EXTERNAL,
  DataType,
  decodeModelProto,
  encodeModelProto,
} from "./onnx_proto.ts";

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.logLevel = "error";

export interface OrtOutput {
  data: Float32Array;
  dims: number[];
}

/** Bytes of the external data files a model references, as ort-web's `externalData` option wants them. */
async function externalDataOf(bytes: Uint8Array, dir: string): Promise<{ path: string; data: Uint8Array }[]> {
  const graph = decodeModelProto(bytes).graph!;
  const locations = new Set<string>();
  for (const t of graph.initializer) {
    if (t.dataLocation !== DATA_LOCATION_EXTERNAL) continue;
    const loc = t.externalData.find((e) => e.key === "location")?.value;
    if (loc) locations.add(loc);
  }
  return await Promise.all(
    [...locations].map(async (path) => ({ path, data: await Deno.readFile(`${dir}/${path}`) })),
  );
}

let ready: Promise<void> | undefined;

/**
 * Start ort-web's wasm runtime once per process (by loading a one-node model). The runtime's start-up probe
 * for thread support opens a MessageChannel it never closes; test files await this at module level so that
 * the port is not charged to the first test that happens to run a model.
 */
export function initOrt(): Promise<void> {
  ready ??= (async () => {
    const type = { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimValue: 1 }] } } };
    const identity = encodeModelProto(createModelProto({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 17 }],
      graph: {
        name: "init",
        node: [createNodeProto({ opType: "Identity", input: ["x"], output: ["y"] })],
        initializer: [],
        input: [{ name: "x", type }],
        output: [{ name: "y", type }],
      },
    }));
    const session = await ort.InferenceSession.create(identity, { executionProviders: ["wasm"] });
    await session.release();
  })();
  return ready;
}

export class OrtRunner {
  private constructor(private readonly session: ort.InferenceSession) {}

  /** A session for ONNX model bytes; `externalData` supplies files referenced by external initializers. */
  static async create(
    model: Uint8Array,
    options: { externalData?: { path: string; data: Uint8Array }[] } = {},
  ): Promise<OrtRunner> {
    try {
      await initOrt();
      const session = await ort.InferenceSession.create(model, {
        executionProviders: ["wasm"],
        logSeverityLevel: 3,
        externalData: options.externalData,
      });
      return new OrtRunner(session);
    } catch (e) {
      throw new Error(`onnxruntime-web could not load the model: ${(e as Error).message}`);
    }
  }

  /** A session for a model file, with its external data files read from the model's directory. */
  static async load(path: string): Promise<OrtRunner> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
      throw new Error(`Cannot read ONNX model "${path}": ${why}`);
    }
    return await OrtRunner.create(bytes, { externalData: await externalDataOf(bytes, dirname(path)) });
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Run the model's single float input on `data` (e.g. an NCHW batch) and return its first output. */
  async run(data: Float32Array, dims: readonly number[]): Promise<OrtOutput> {
    if (this.inputNames.length !== 1) {
      throw new Error(`OrtRunner.run(): the model has ${this.inputNames.length} inputs; use runFeeds()`);
    }
    const outputs = await this.runFeeds({ [this.inputNames[0]]: { data, dims } });
    return outputs[this.outputNames[0]];
  }

  /** Run with named float inputs; returns every output as float32. */
  async runFeeds(
    feeds: Record<string, { data: Float32Array; dims: readonly number[] }>,
  ): Promise<Record<string, OrtOutput>> {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      const n = dims.reduce((a, b) => a * b, 1);
      if (n !== data.length) {
        throw new Error(
          `OrtRunner.run(): input "${name}" has ${data.length} values but dims [${
            dims.join(", ")
          }] need ${n}`,
        );
      }
      inputs[name] = new ort.Tensor("float32", data, dims);
    }
    let results: ort.InferenceSession.OnnxValueMapType;
    try {
      results = await this.session.run(inputs);
    } catch (e) {
      throw new Error(`onnxruntime-web failed to run the model: ${(e as Error).message}`);
    }
    const out: Record<string, OrtOutput> = {};
    for (const name of this.outputNames) {
      const t = results[name] as ort.Tensor;
      const values = t.data;
      const data = values instanceof Float32Array
        ? values.slice()
        : Float32Array.from(values as ArrayLike<number>, Number);
      out[name] = { data, dims: [...t.dims] };
      t.dispose();
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** One-shot: load `model`, run one batch, release. */
export async function ortForward(
  model: Uint8Array,
  input: { data: Float32Array; dims: readonly number[] },
): Promise<OrtOutput> {
  const runner = await OrtRunner.create(model);
  try {
    return await runner.run(input.data, input.dims);
  } finally {
    await runner.release();
  }
}
