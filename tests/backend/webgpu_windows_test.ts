/**
 * The chunked paths of every non-GEMM kernel: a backend that poses as a device with 4 KiB storage bindings,
 * 256-byte offset alignment and 3 workgroups per grid dimension makes 5000-element tensors need several
 * windows with misaligned starts and split grids, so the CPU reference stays fast. (webgpu_infra_test.ts covers a genuine > 128 MiB tensor.)
 */
import { createWebGpuBackend } from "../../src/backend/webgpu/mod.ts";
import { webgpuBackend } from "../_backends.ts";
import { activationInputs, agree, ELEMENTWISE, REDUCTION, rng, uniforms } from "./_webgpu_agree.ts";

Deno.test({
  name: "kernels on WebGPU match the CPU when storages exceed the binding limit (chunked windows)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (!(await webgpuBackend())) return console.warn("skipped: no WebGPU adapter");
    // 1024-float bindings and real GPUs' 256-byte offset alignment: every kernel below needs several windows,
    // with misaligned starts, on inputs small enough for a fast CPU reference. Grids of at most 3 x 3
    // workgroups make every kernel split or loop its grid too.
    const b = await createWebGpuBackend({
      limits: {
        maxStorageBufferBindingSize: 4096,
        minStorageBufferOffsetAlignment: 256,
        maxComputeWorkgroupsPerDimension: 3,
      },
    });
    const n = 5000;
    const x = activationInputs(n, false), dy = uniforms(n);
    await agree(b, "fill", { out: { length: n + 3 } }, { n, value: 0.25 }, 0);
    await agree(b, "copy", { x: { data: uniforms(4000) }, out: { length: n } }, {
      n: 3000,
      srcOffset: 77,
      dstOffset: 1001,
    }, 0);
    const act = { n, op: "hardswish" };
    await agree(b, "unary", { x: { data: x }, out: { length: n } }, act, ELEMENTWISE);
    await agree(b, "unary_grad", { x: { data: x }, dy: { data: dy }, out: { length: n } }, act, ELEMENTWISE);
    await agree(
      b,
      "axpy",
      { x: { data: x }, out: { data: dy } },
      { n, alpha: 3, accumulate: true },
      ELEMENTWISE,
    );
    const packed = await agree(b, "mask_pack", { x: { data: x }, out: { length: 157, dtype: "u32" } }, {
      n,
      lo: 0,
      hi: 6,
    }, 0);
    await agree(b, "mask_grad", {
      mask: { data: packed.out, dtype: "u32" },
      dy: { data: dy },
      out: { length: n },
    }, {
      n,
      scale: 2,
    }, 0);
    const binaryCases = [
      { shape: [50, 100], a: [100, 1], b: [0, 1], nb: 100 }, // rows of the output per window
      { shape: [3, 2000], a: [1, 3], b: [1, 0], nb: 3 }, // one outer index spans too much: recurse
      { shape: [4, 5, 300], a: [1500, 300, 1], b: [0, 1, 0], nb: 5 },
    ];
    for (const c of binaryCases) {
      const total = c.shape.reduce((p, d) => p * d, 1);
      await agree(
        b,
        "binary",
        { a: { data: uniforms(total) }, b: { data: uniforms(c.nb) }, out: { length: total } },
        {
          op: "mul",
          shape: c.shape,
          aStrides: c.a,
          bStrides: c.b,
        },
        ELEMENTWISE,
        ` [${c.shape}]`,
      );
    }
    const reduceCases = [
      [1, 5000, 1, "sum"],
      [3, 2000, 1, "mean"],
      [2, 500, 5, "max"],
      [2500, 2, 1, "sum"],
      [2, 3, 700, "mean"], // two rows of the size axis overflow a window: accumulate over runs
      [1, 4, 1500, "max"], // one row overflows a window: blocks of the inner axis
    ] as const;
    for (const [outer, size, inner, op] of reduceCases) {
      await agree(
        b,
        "reduce",
        { x: { data: uniforms(outer * size * inner) }, out: { length: outer * inner } },
        {
          op,
          outer,
          size,
          inner,
        },
        REDUCTION,
        ` [${outer}, ${size}, ${inner}]`,
      );
    }
    const [bn, bc, bhw] = [10, 3, 100];
    const size = bn * bc * bhw;
    const bx = Float32Array.from(rng.normals(size), (v) => 3 + v);
    const dims = { n: bn, c: bc, hw: bhw };
    const stats = await agree(
      b,
      "bn_stats",
      { x: { data: bx }, mean: { length: bc }, variance: { length: bc } },
      dims,
      REDUCTION,
    );
    const sums = await agree(
      b,
      "bn_grad_reduce",
      {
        dy: { data: dy.subarray(0, size) },
        xhat: { data: bx },
        sumDy: { length: bc },
        sumDyXhat: { length: bc },
      },
      dims,
      REDUCTION,
    );
    const gamma = { data: uniforms(bc, 0.5, 1.5) };
    await agree(
      b,
      "bn_apply",
      {
        x: { data: bx },
        mean: { data: stats.mean },
        variance: { data: stats.variance },
        gamma,
        beta: { data: uniforms(bc) },
        out: { length: size },
        xhat: { length: size },
      },
      { ...dims, eps: 1e-5 },
      ELEMENTWISE,
    );
    await agree(
      b,
      "bn_grad_input",
      {
        dy: { data: dy.subarray(0, size) },
        xhat: { data: bx },
        gamma,
        variance: { data: stats.variance },
        sumDy: { data: sums.sumDy },
        sumDyXhat: { data: sums.sumDyXhat },
        out: { length: size },
      },
      { ...dims, eps: 1e-5, training: true },
      ELEMENTWISE,
    );
    for (const [rows, cols] of [[50, 100], [500, 10]]) {
      await agree(
        b,
        "softmax",
        { x: { data: uniforms(rows * cols, -5, 5) }, out: { length: rows * cols } },
        {
          rows,
          cols,
          log: false,
        },
        ELEMENTWISE,
        ` [${rows}, ${cols}]`,
      );
    }
    const adam = {
      n,
      lr: 0.01,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      weightDecay: 0,
      decoupled: false,
      step: 3,
    };
    await agree(
      b,
      "adam",
      {
        param: { data: x },
        grad: { data: dy },
        m: { data: uniforms(n, -0.1, 0.1) },
        v: { data: uniforms(n, 0, 0.01) },
      },
      adam,
      ELEMENTWISE,
    );
    const sgd = { n, lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: true, firstStep: false };
    await agree(
      b,
      "sgd",
      { param: { data: x }, grad: { data: dy }, momentumBuf: { data: uniforms(n) } },
      sgd,
      ELEMENTWISE,
    );
    b.dispose();
  },
});
