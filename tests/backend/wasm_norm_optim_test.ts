/**
 * The wasm backend's reductions, softmax, batch normalisation, optimizer and codec kernels against the CPU
 * reference (_wasm.ts agreeSpecial(): same seeded inputs, outputs start as a sentinel). Sizes leave SIMD
 * tails and cross the 32K-element chunk where work is split over the pool; statistics run on large means
 * (the two-pass variance) and long planes (sums through doubles).
 */
import { REDUCTION, uniforms } from "./_webgpu_agree.ts";
import { agreeSpecial, wasmTest } from "./_wasm.ts";

wasmTest("reduce() on wasm matches the CPU for rows, columns, long axes and NaN in max", async (b) => {
  const shapes = [
    [1, 100_000, 1],
    [37, 300, 1],
    [200, 3, 1],
    [5, 7, 300],
    [3, 1000, 5],
    [2, 5000, 2],
    [
      20000,
      64,
      1,
    ],
    [1, 3, 1],
    [4, 1, 513],
  ];
  for (const [outer, size, inner] of shapes) {
    const x = uniforms(outer * size * inner, -2, 3);
    for (const op of ["sum", "mean", "max"] as const) {
      await agreeSpecial(
        b,
        "reduce",
        { x: { data: x }, out: { length: outer * inner } },
        { op, outer, size, inner },
        REDUCTION,
        ` ${op} [${outer},${size},${inner}]`,
      );
    }
  }
  const x = uniforms(600);
  x[17] = NaN;
  x[400] = NaN;
  for (const inner of [1, 6]) {
    await agreeSpecial(
      b,
      "reduce",
      { x: { data: x }, out: { length: 6 } },
      {
        op: "max",
        outer: inner === 1 ? 6 : 1,
        size: 100,
        inner,
      },
      0,
      ` max NaN inner=${inner}`,
    );
  }
});

wasmTest("softmax() on wasm matches the CPU for short and long rows, log and not", async (b) => {
  for (const [rows, cols] of [[64, 10], [3, 1000], [1000, 3], [1, 1], [7, 4097]]) {
    const x = uniforms(rows * cols, -30, 30);
    for (const log of [false, true]) {
      await agreeSpecial(
        b,
        "softmax",
        { x: { data: x }, out: { length: rows * cols } },
        { rows, cols, log },
        REDUCTION,
        ` ${rows}x${cols} log=${log}`,
      );
    }
  }
});

wasmTest("bn_stats(), bn_apply(), bn_grad_reduce() and bn_grad_input() on wasm match the CPU", async (b) => {
  for (const [n, c, hw] of [[64, 96, 16], [2, 3, 50_176], [1, 5, 7], [8, 1, 1], [3, 17, 1]]) {
    const size = n * c * hw;
    const x = uniforms(size, 100, 101); // a large mean: the two-pass variance must hold
    const stats = await agreeSpecial(
      b,
      "bn_stats",
      { x: { data: x }, mean: { length: c }, variance: { length: c } },
      {
        n,
        c,
        hw,
      },
      REDUCTION,
      ` [${n},${c},${hw}]`,
    );
    const gamma = uniforms(c, 0.5, 2), beta = uniforms(c);
    const applied = await agreeSpecial(
      b,
      "bn_apply",
      {
        x: { data: x },
        mean: { data: stats.mean },
        variance: { data: stats.variance },
        gamma: { data: gamma },
        beta: { data: beta },
        out: { length: size },
        xhat: { length: size },
      },
      { n, c, hw, eps: 1e-5 },
      REDUCTION,
      ` [${n},${c},${hw}]`,
    );
    const dy = uniforms(size);
    const sums = await agreeSpecial(
      b,
      "bn_grad_reduce",
      {
        dy: { data: dy },
        xhat: { data: applied.xhat },
        sumDy: { length: c },
        sumDyXhat: { length: c },
      },
      { n, c, hw },
      REDUCTION,
      ` [${n},${c},${hw}]`,
    );
    for (const training of [true, false]) {
      await agreeSpecial(
        b,
        "bn_grad_input",
        {
          dy: { data: dy },
          xhat: { data: applied.xhat },
          gamma: { data: gamma },
          variance: { data: stats.variance },
          sumDy: { data: sums.sumDy },
          sumDyXhat: { data: sums.sumDyXhat },
          out: { length: size },
        },
        { n, c, hw, eps: 1e-5, training },
        REDUCTION,
        ` [${n},${c},${hw}] training=${training}`,
      );
    }
  }
});

wasmTest("adam() and sgd() on wasm match the CPU in every mode", async (b) => {
  for (const n of [3, 1001, 70_001]) {
    for (const decoupled of [false, true]) {
      await agreeSpecial(
        b,
        "adam",
        {
          param: { data: uniforms(n) },
          grad: { data: uniforms(n) },
          m: { data: uniforms(n, -0.1, 0.1) },
          v: { data: uniforms(n, 0, 0.1) },
        },
        { n, lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled, step: 3 },
        REDUCTION,
      );
    }
    for (
      const [momentum, nesterov, firstStep] of [[0, false, false], [0.9, false, true], [
        0.9,
        true,
        false,
      ]] as const
    ) {
      await agreeSpecial(
        b,
        "sgd",
        {
          param: { data: uniforms(n) },
          grad: { data: uniforms(n) },
          momentumBuf: { data: uniforms(n) },
        },
        { n, lr: 0.1, momentum, dampening: 0.1, weightDecay: 1e-3, nesterov, firstStep },
        REDUCTION,
      );
    }
  }
});

wasmTest(
  "the codec kernels on wasm (CPU reference over shared memory) match the CPU bit for bit",
  async (b) => {
    const n = 1001;
    const x = uniforms(n, -4, 4);
    const packed = await agreeSpecial(
      b,
      "f16_pack",
      { x: { data: x }, out: { length: 501, dtype: "u32" } },
      { n },
      0,
    );
    await agreeSpecial(
      b,
      "f16_unpack",
      { packed: { data: packed.out, dtype: "u32" }, out: { length: n } },
      { n },
      0,
    );
    for (const bits of [4, 8] as const) {
      const groupSize = 64;
      const groups = Math.ceil(n / groupSize);
      const q = await agreeSpecial(
        b,
        "quantize",
        {
          x: { data: x },
          params: { length: 2 * groups },
          out: { length: Math.ceil(n / (32 / bits)), dtype: "u32" },
        },
        { n, bits, groupSize },
        0,
      );
      await agreeSpecial(
        b,
        "dequantize",
        {
          packed: { data: q.out, dtype: "u32" },
          params: { data: q.params },
          out: { length: n },
        },
        { n, bits, groupSize },
        0,
      );
    }
  },
);
