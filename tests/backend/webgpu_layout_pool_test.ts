/**
 * strided_copy, where, pool2d and pool2d_grad on WebGPU against the CPU reference on seeded inputs, whole
 * and with storages over a tiny binding limit (chunked windows, split grids).
 */
import { createWebGpuBackend } from "../../src/backend/webgpu/mod.ts";
import type { Backend } from "../../src/backend/backend.ts";
import type { Pool2dAttrs } from "../../src/backend/kernels.ts";
import { webgpuBackend } from "../_backends.ts";
import { agree, ELEMENTWISE, gpuTest, uniforms } from "./_webgpu_agree.ts";

/** Copies that transpose, slice backwards, broadcast, and write into a region of a larger output. */
async function copies(b: Backend, scale: number): Promise<void> {
  const [n, c, h, w] = [2 * scale, 3, 5, 7];
  const x = uniforms(n * c * h * w);
  const cases = [
    // NCHW -> NHWC
    { shape: [n, h, w, c], x: { offset: 0, strides: [c * h * w, w, 1, h * w] }, outLen: x.length, out: null },
    // x[:, ::-1, 1:4, ::2]
    {
      shape: [n, c, 3, 4],
      x: { offset: (c - 1) * h * w + w, strides: [c * h * w, -h * w, w, 2] },
      outLen: n * c * 12,
      out: null,
    },
    // expand a [c] vector over [n, c, h]
    { shape: [n, c, h], x: { offset: 0, strides: [0, 1, 0] }, outLen: n * c * h, out: null },
    // concat: x as channels [2, 2 + c) of an [n, c + 4, h, w] output
    {
      shape: [n, c, h, w],
      x: { offset: 0, strides: [c * h * w, h * w, w, 1] },
      outLen: n * (c + 4) * h * w,
      out: { offset: 2 * h * w, strides: [(c + 4) * h * w, h * w, w, 1] },
    },
  ];
  for (const k of cases) {
    const dense = k.shape.map((_, i) => k.shape.slice(i + 1).reduce((p, d) => p * d, 1));
    await agree(
      b,
      "strided_copy",
      { x: { data: x }, out: { length: k.outLen } },
      {
        shape: k.shape,
        x: k.x,
        out: k.out ?? { offset: 0, strides: dense },
      },
      0,
      ` [${k.shape}]`,
    );
  }
  const cond = uniforms(n * h).map((v) => (v > 0 ? 1 : 0));
  await agree(
    b,
    "where",
    {
      cond: { data: cond },
      a: { data: uniforms(n * c * h) },
      b: { data: uniforms(c) },
      out: { length: n * c * h },
    },
    { shape: [n, c, h], condStrides: [h, 0, 1], aStrides: [c * h, h, 1], bStrides: [0, 1, 0] },
    0,
  );
}

const POOLS: Partial<Pool2dAttrs>[] = [
  { op: "max", kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1 }, // resnet stem
  { op: "max", kh: 3, kw: 3, strideH: 2, strideW: 2, padBottom: 1, padRight: 1 }, // ceil_mode (squeezenet)
  { op: "max", kh: 2, kw: 3, strideH: 1, strideW: 2, dilationH: 2, dilationW: 1 },
  { op: "avg", kh: 2, kw: 2, strideH: 2, strideW: 2 }, // densenet transition
  { op: "avg", kh: 3, kw: 3, strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 2, padRight: 2 },
  {
    op: "avg",
    kh: 3,
    kw: 3,
    strideH: 2,
    strideW: 2,
    padTop: 1,
    padLeft: 1,
    padBottom: 2,
    padRight: 2,
    countIncludePad: true,
  },
];

function poolAttrs(p: Partial<Pool2dAttrs>, n: number, c: number, h: number, w: number): Pool2dAttrs {
  const a = {
    op: "max" as const,
    n,
    c,
    h,
    w,
    kh: 1,
    kw: 1,
    strideH: 1,
    strideW: 1,
    padTop: 0,
    padLeft: 0,
    padBottom: 0,
    padRight: 0,
    dilationH: 1,
    dilationW: 1,
    countIncludePad: false,
    ...p,
    outH: 0,
    outW: 0,
  };
  a.outH = Math.floor((h + a.padTop + a.padBottom - a.dilationH * (a.kh - 1) - 1) / a.strideH) + 1;
  a.outW = Math.floor((w + a.padLeft + a.padRight - a.dilationW * (a.kw - 1) - 1) / a.strideW) + 1;
  return a;
}

async function pools(b: Backend, scale: number): Promise<void> {
  const [n, c, h, w] = [2, 3 * scale, 11, 9];
  // Ties (rounded values) exercise the first-maximum rule.
  const x = uniforms(n * c * h * w).map((v) => Math.round(v * 8) / 8);
  for (const p of POOLS) {
    const a = poolAttrs(p, n, c, h, w);
    const outN = n * c * a.outH * a.outW;
    const label = ` ${JSON.stringify(p)}`;
    const fwd = {
      x: { data: x },
      out: { length: outN },
      ...(a.op === "max" ? { argmax: { length: outN, dtype: "u32" as const } } : {}),
    };
    const got = await agree(b, "pool2d", fwd, a, ELEMENTWISE, label);
    const grad = {
      dy: { data: uniforms(outN) },
      ...(a.op === "max" ? { argmax: { data: got.argmax, dtype: "u32" as const } } : {}),
      out: { length: n * c * h * w },
    };
    await agree(b, "pool2d_grad", grad, a, ELEMENTWISE, label);
  }
}

gpuTest(
  "strided_copy() and where() on WebGPU match the CPU (transpose, reversed slice, expand, concat)",
  async (b) => {
    await copies(b, 1);
  },
);

gpuTest(
  "pool2d() and pool2d_grad() on WebGPU match the CPU (pads, ceil mode, dilation, count_include_pad)",
  async (b) => {
    await pools(b, 1);
  },
);

Deno.test({
  name:
    "strided_copy(), where() and pool2d() on WebGPU match the CPU over the binding limit (chunked windows)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (!(await webgpuBackend())) return console.warn("skipped: no WebGPU adapter");
    const b = await createWebGpuBackend({
      limits: {
        maxStorageBufferBindingSize: 4096,
        minStorageBufferOffsetAlignment: 256,
        maxComputeWorkgroupsPerDimension: 3,
      },
    });
    await copies(b, 6);
    await pools(b, 16);
    b.dispose();
  },
});
