/**
 * The wasm kernel table, typed total over kernels.ts: a kernel added to the contract does not compile here
 * until it has an entry. Hot kernels are SIMD C on the worker pool (pooling and strided_copy: C, parallel);
 * cold ones (the saved-activation codecs, run once per saved tensor, and ONNX Where) run the CPU reference
 * over Float32Array/Uint32Array views of the shared memory (`cpuFallback`), which computes exactly what the
 * reference computes.
 */
import type { CpuKernel } from "../cpu.ts";
import type { KernelName } from "../kernels.ts";
import { dequantize, f16_pack, f16_unpack, quantize } from "../cpu/quant.ts";
import { where } from "../cpu/layout.ts";
import { pool2d, pool2d_grad, strided_copy } from "./kernels_layout.ts";
import type { WasmKernel } from "./context.ts";
import {
  adam,
  axpy,
  binary,
  copy,
  fill,
  mask_grad,
  mask_pack,
  reduce,
  sgd,
  softmax,
  unary,
  unary_grad,
} from "./kernels_elementwise.ts";
import {
  bn_apply,
  bn_grad_input,
  bn_grad_reduce,
  bn_stats,
  conv2d,
  conv2d_grad_input,
  conv2d_grad_weight,
  matmul,
} from "./kernels_conv.ts";

function cpuFallback<K extends KernelName>(kernel: CpuKernel<K>): WasmKernel<K> {
  return (args, ctx) => kernel(args, ctx.cpu);
}

export const wasmKernels: { [K in KernelName]: WasmKernel<K> } = {
  fill,
  copy,
  unary,
  unary_grad,
  mask_pack,
  mask_grad,
  binary,
  axpy,
  reduce,
  softmax,
  adam,
  sgd,
  matmul,
  conv2d,
  conv2d_grad_input,
  conv2d_grad_weight,
  bn_stats,
  bn_apply,
  bn_grad_reduce,
  bn_grad_input,
  quantize: cpuFallback(quantize),
  dequantize: cpuFallback(dequantize),
  f16_pack: cpuFallback(f16_pack),
  f16_unpack: cpuFallback(f16_unpack),
  strided_copy,
  where: cpuFallback(where),
  pool2d,
  pool2d_grad,
};

/** Kernels that run the CPU reference (docs/wasm.md lists them). */
export const CPU_FALLBACK_KERNELS: KernelName[] = [
  "quantize",
  "dequantize",
  "f16_pack",
  "f16_unpack",
  "where",
];
