/**
 * WebGPU optimizer steps (kernels/optim.wgsl): adam, sgd, in place. Per-step scalars (bias corrections) are
 * computed here in f64, as the CPU reference does, and passed as f32 uniforms.
 */
import type { GpuKernelTable } from "./context.ts";
import { bindWindow } from "./kernel_grid.ts";
import { elementChunks, strideGroups, WG } from "./kernel_chunks.ts";

export const optimKernels: Pick<GpuKernelTable, "adam" | "sgd"> = {
  adam: ({ param, grad, m, v, attrs }, ctx) => {
    const { n, lr, beta1, beta2, eps, weightDecay, decoupled, step } = attrs;
    if (!(step >= 1)) throw new Error(`adam(): step must be >= 1, got ${step}`);
    const stepSize = lr / (1 - Math.pow(beta1, step));
    const sqrtBc2 = Math.sqrt(1 - Math.pow(beta2, step));
    for (const [start, len] of elementChunks(ctx, n, [param, grad, m, v])) {
      const [wp, wg, wm, wv] = [param, grad, m, v].map((s) => bindWindow(ctx, s, start, start + len));
      ctx.dispatch({
        shader: "optim",
        entry: "adam",
        constants: { WG },
        bindings: [wp.binding, wg.binding, wm.binding, wv.binding],
        uniforms: {
          n: len,
          p_off: wp.rem,
          g_off: wg.rem,
          m_off: wm.rem,
          v_off: wv.rem,
          decoupled: decoupled ? 1 : 0,
          weight_decay: weightDecay,
          decay: 1 - lr * weightDecay,
          beta1,
          one_minus_beta1: 1 - beta1,
          beta2,
          one_minus_beta2: 1 - beta2,
          step_size: stepSize,
          sqrt_bc2: sqrtBc2,
          eps,
        },
        workgroups: [strideGroups(ctx, len)],
      });
    }
  },

  sgd: ({ param, grad, momentumBuf, attrs }, ctx) => {
    const { n, lr, momentum, dampening, weightDecay, nesterov, firstStep } = attrs;
    // momentum 0: PyTorch keeps no buffer; it is neither bound nor chunked (it may be a placeholder).
    const withBuf = momentum !== 0;
    const big = withBuf ? [param, grad, momentumBuf] : [param, grad];
    for (const [start, len] of elementChunks(ctx, n, big)) {
      const [wp, wg, wb] = big.map((s) => bindWindow(ctx, s, start, start + len));
      ctx.dispatch({
        shader: "optim",
        entry: withBuf ? "sgd_momentum" : "sgd_plain",
        constants: { WG },
        bindings: [wp.binding, wg.binding, (wb ?? wp).binding],
        uniforms: {
          n: len,
          p_off: wp.rem,
          g_off: wg.rem,
          b_off: wb?.rem ?? 0,
          first_step: firstStep ? 1 : 0,
          nesterov: nesterov ? 1 : 0,
          lr,
          momentum,
          one_minus_dampening: 1 - dampening,
          weight_decay: weightDecay,
        },
        workgroups: [strideGroups(ctx, len)],
      });
    }
  },
};
