/**
 * TF.js WebGPU as the peer in the kernel benchmark: the same operations on `@tensorflow/tfjs-backend-webgpu`
 * over Deno's navigator.gpu (the same adapter edgetrain uses), each in TF.js's own best layout (NHWC,
 * filters [kh, kw, cin, cout]); FLOP counts are identical to edgetrain's NCHW versions.
 *
 * Kernels are invoked by name through the engine (BatchMatMul, Conv2D, Conv2DBackpropInput, ...), which is
 * what tf.matMul / tf.conv2d / their gradients dispatch to, minus the autograd bookkeeping.
 */
import type { Conv2dAttrs } from "../../src/backend/kernels.ts";
import type { BenchOp } from "./kernels_bench.ts";

type Tf = typeof import("@tensorflow/tfjs-core");
type TfTensor = import("@tensorflow/tfjs-core").Tensor;

export interface TfjsPeer {
  /** Adapter description TF.js runs on. */
  readonly description: string;
  matmul(m: number, n: number, k: number): BenchOp;
  conv(a: Conv2dAttrs, which: "forward" | "grad_input" | "grad_weight"): BenchOp;
  dispose(): void;
}

/** Load TF.js and select its WebGPU backend; null (with the reason) when that is not possible. */
export async function createTfjsPeer(): Promise<{ peer: TfjsPeer } | { error: string }> {
  let tf: Tf;
  try {
    tf = await import("@tensorflow/tfjs-core");
    await import("@tensorflow/tfjs-backend-webgpu");
    if (!(await tf.setBackend("webgpu"))) return { error: 'tf.setBackend("webgpu") returned false' };
    await tf.ready();
  } catch (e) {
    return { error: `TF.js WebGPU could not start: ${(e as Error).message}` };
  }
  const backend = tf.backend() as unknown as { adapterInfo?: { description?: string; vendor?: string } };
  const info = backend.adapterInfo;
  return { peer: new Peer(tf, info?.description || (info?.vendor ? `vendor ${info.vendor}` : "unknown")) };
}

class Peer implements TfjsPeer {
  constructor(private readonly tf: Tf, readonly description: string) {}

  matmul(m: number, n: number, k: number): BenchOp {
    const tf = this.tf;
    const a = tf.randomUniform([1, m, k]), b = tf.randomUniform([1, k, n]);
    return this.#op(
      [a, b],
      () => tf.engine().runKernel("BatchMatMul", { a, b }, { transposeA: false, transposeB: false }),
    );
  }

  conv(a: Conv2dAttrs, which: "forward" | "grad_input" | "grad_weight"): BenchOp {
    const tf = this.tf;
    const depthwise = a.groups === a.cin && a.groups > 1;
    if (a.groups !== 1 && !depthwise) {
      throw new Error(`tfjs peer: groups=${a.groups} is not supported by TF.js`);
    }
    const x = tf.randomUniform([a.n, a.h, a.w, a.cin]);
    const dy = tf.randomUniform([a.n, a.outH, a.outW, a.cout]);
    const filterShape: [number, number, number, number] = depthwise
      ? [a.kh, a.kw, a.cin, a.cout / a.cin]
      : [a.kh, a.kw, a.cin, a.cout];
    const filter = tf.randomUniform(filterShape);
    // Explicit symmetric padding in NHWC order, exactly edgetrain's geometry.
    const pad = [[0, 0], [a.padH, a.padH], [a.padW, a.padW], [0, 0]];
    const strides: [number, number] = [a.strideH, a.strideW];
    const dilations: [number, number] = [a.dilationH, a.dilationW];
    const common = { strides, pad, dilations, dataFormat: "NHWC", dimRoundingMode: undefined };
    const run = (name: string, inputs: Record<string, TfTensor>, attrs: Record<string, unknown>) => () =>
      tf.engine().runKernel(name, inputs, attrs as never);
    const inputs = [x, dy, filter];
    if (which === "forward") {
      return this.#op(inputs, run(depthwise ? "DepthwiseConv2dNative" : "Conv2D", { x, filter }, common));
    }
    if (which === "grad_input") {
      const inputShape = [a.n, a.h, a.w, a.cin];
      const name = depthwise ? "DepthwiseConv2dNativeBackpropInput" : "Conv2DBackpropInput";
      return this.#op(inputs, run(name, { dy, filter }, { ...common, inputShape }));
    }
    const name = depthwise ? "DepthwiseConv2dNativeBackpropFilter" : "Conv2DBackpropFilter";
    return this.#op(inputs, run(name, { x, dy }, { ...common, filterShape }));
  }

  dispose(): void {
    this.tf.disposeVariables();
  }

  #op(inputs: TfTensor[], kernel: () => unknown): BenchOp {
    let last: TfTensor | null = null;
    return {
      run: () => {
        last?.dispose();
        last = kernel() as TfTensor;
      },
      // data() waits for every queued kernel and reads the last result back, as edgetrain's side does.
      sync: async () => {
        await last?.data();
      },
      dispose: () => {
        last?.dispose();
        last = null;
        for (const t of inputs) t.dispose();
      },
    };
  }
}
