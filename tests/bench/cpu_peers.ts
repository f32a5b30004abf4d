/**
 * The CPU peers of the wasm backend's benchmark: PyTorch's CPU build (Debian python3-torch, a subprocess
 * running tests/bench/torch_peer.py) and onnxruntime-web's wasm backend, each started once so the bench can
 * interleave their runs with edgetrain's.
 */
import * as ort from "onnxruntime-web";
import { decodeModel } from "../../src/onnx/model.ts";
import { encodeModel } from "../../src/onnx/export.ts";

/** Wall and process CPU milliseconds of a series of runs (CPU time sums every thread's). */
export interface Times {
  ms: number[];
  cpu: number[];
}

export class TorchPeer {
  #proc: Deno.ChildProcess;
  #lines: AsyncIterator<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  private constructor(proc: Deno.ChildProcess) {
    this.#proc = proc;
    this.#lines = lines(proc.stdout);
    this.#writer = proc.stdin.getWriter();
  }

  /** The peer, or the reason there is none (no python3, no torch). EDGETRAIN_PYTHON picks the interpreter. */
  static async start(): Promise<{ peer: TorchPeer; info: Record<string, unknown> } | { error: string }> {
    const python = Deno.env.get("EDGETRAIN_PYTHON") ?? "/usr/bin/python3";
    const script = new URL("./torch_peer.py", import.meta.url).pathname;
    let proc: Deno.ChildProcess;
    try {
      proc = new Deno.Command(python, {
        args: [script],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        env: { OMP_NUM_THREADS: "2" },
      }).spawn();
    } catch (e) {
      return { error: `${python} could not start: ${(e as Error).message}` };
    }
    const peer = new TorchPeer(proc);
    try {
      const info = await peer.request({ op: "info" });
      return { peer, info };
    } catch (e) {
      const err = await new Response(proc.stderr).text().catch(() => "");
      peer.close();
      const last = err.trim().split("\n").pop() ?? "";
      return { error: `PyTorch peer unavailable (${(e as Error).message}${last ? `: ${last}` : ""})` };
    }
  }

  async request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
    const next = await this.#lines.next();
    if (next.done) throw new Error("the python process exited");
    const rep = JSON.parse(next.value);
    if (rep.error) throw new Error(`torch_peer.py ${req.op}: ${rep.error}`);
    return rep;
  }

  /** Wall and process CPU milliseconds of each of `reps` runs of `op`. */
  async times(op: string, reps: number, extra: Record<string, unknown> = {}): Promise<Times> {
    const r = await this.request({ op, reps, ...extra });
    return { ms: r.ms as number[], cpu: r.cpu_ms as number[] };
  }

  close(): void {
    try {
      this.#writer.close().catch(() => {});
      this.#proc.kill();
    } catch {
      // already gone
    }
    this.#proc.stderr.cancel().catch(() => {});
    this.#proc.status.catch(() => {});
  }
}

async function* linesOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}

function lines(stream: ReadableStream<Uint8Array>): AsyncIterator<string> {
  return linesOf(stream)[Symbol.asyncIterator]();
}

/**
 * fixtures/models/mobilenet_v2_eval.onnx (torchvision mobilenet_v2, 10 classes, BN folded) with its input
 * declared at `size` x `size`: the model is fully convolutional, the export only fixed 32x32 in the graph.
 */
export async function mobilenetAt(size: number): Promise<Uint8Array> {
  const model = decodeModel(
    await Deno.readFile(new URL("../../fixtures/models/mobilenet_v2_eval.onnx", import.meta.url)),
  );
  const dims = model.proto.graph!.input[0].type!.tensorType!.shape!.dim;
  dims[2].dimValue = size;
  dims[3].dimValue = size;
  return encodeModel(model);
}

export interface OrtPeer {
  run(): Promise<void>;
  threads: number;
}

/**
 * onnxruntime-web's wasm execution provider on `bytes` with input [batch, 3, size, size]. One thread: its
 * threaded build runs its pthreads on node:worker_threads under Deno, which measured 2-3x slower than one
 * thread here (mobilenet_v2 at 224, batch 8: 880-2480 ms against about 400 ms).
 */
export async function startOrt(bytes: Uint8Array, batch: number, size: number): Promise<OrtPeer> {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  const x = new ort.Tensor("float32", new Float32Array(batch * 3 * size * size).fill(0.1), [
    batch,
    3,
    size,
    size,
  ]);
  return {
    threads: 1,
    run: async () => {
      const out = await session.run({ [session.inputNames[0]]: x });
      for (const t of Object.values(out)) t.dispose();
    },
  };
}
