/** The CPU kernel table: one entry per kernel in kernels.ts. */
import type { CpuKernelTable } from "../cpu.ts";
import { axpy, binary, copy, fill, mask_grad, mask_pack, unary, unary_grad } from "./elementwise.ts";
import { reduce } from "./reduce.ts";
import { bn_apply, bn_grad_input, bn_grad_reduce, bn_stats } from "./norm.ts";
import { softmax } from "./softmax.ts";
import { adam, sgd } from "./optim.ts";
import { matmul } from "./matmul.ts";
import { conv2d, conv2d_grad_input, conv2d_grad_weight } from "./conv.ts";
import { dequantize, f16_pack, f16_unpack, quantize } from "./quant.ts";
import { strided_copy, where } from "./layout.ts";
import { pool2d, pool2d_grad } from "./pool.ts";

// Total: every kernel in kernels.ts has its reference here (a missing one is a type error).
export const cpuKernels: CpuKernelTable = {
  fill,
  copy,
  unary,
  unary_grad,
  mask_pack,
  mask_grad,
  binary,
  axpy,
  reduce,
  bn_stats,
  bn_apply,
  bn_grad_reduce,
  bn_grad_input,
  softmax,
  adam,
  sgd,
  matmul,
  conv2d,
  conv2d_grad_input,
  conv2d_grad_weight,
  quantize,
  dequantize,
  f16_pack,
  f16_unpack,
  strided_copy,
  where,
  pool2d,
  pool2d_grad,
};
