/** The CPU kernel table: one entry per kernel in kernels.ts. */
import type { CpuKernelTable } from "../cpu.ts";
import { axpy, binary, copy, fill, mask_grad, mask_pack, unary, unary_grad } from "./elementwise.ts";

// Kernels not yet written throw a clear error from CpuBackend.run until they are added here.
export const cpuKernels: Partial<CpuKernelTable> = {
  fill,
  copy,
  unary,
  unary_grad,
  mask_pack,
  mask_grad,
  binary,
  axpy,
};
