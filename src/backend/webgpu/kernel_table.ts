/** The WebGPU kernel table: one entry per kernel in kernels.ts, gathered from the per-family files. */
import type { GpuKernelTable } from "./context.ts";
import { convKernels } from "./kernel_conv.ts";
import { elementwiseKernels } from "./kernel_elementwise.ts";
import { matmulKernels } from "./kernel_matmul.ts";
import { normKernels } from "./kernel_norm.ts";
import { optimKernels } from "./kernel_optim.ts";
import { quantKernels } from "./kernel_quant.ts";
import { reduceKernels } from "./kernel_reduce.ts";
import { softmaxKernels } from "./kernel_softmax.ts";
import { layoutKernels } from "./kernel_layout.ts";
import { poolKernels } from "./kernel_pool.ts";

// Total: a kernel added to kernels.ts without its WebGPU version is a type error here.
export const webgpuKernels: GpuKernelTable = {
  ...elementwiseKernels,
  ...reduceKernels,
  ...normKernels,
  ...softmaxKernels,
  ...optimKernels,
  ...matmulKernels,
  ...convKernels,
  ...quantKernels,
  ...layoutKernels,
  ...poolKernels,
};
