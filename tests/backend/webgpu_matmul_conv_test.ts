/**
 * WebGPU matmul and convolution kernels against the CPU reference, from seeded random inputs. Every
 * comparison is the max of |gpu - cpu| / max(1, |cpu|) with an explicit tolerance (f32 sums of up to a few
 * hundred terms in a different order stay well inside 1e-4).
 */
import { ok } from "node:assert/strict";
import type { Backend, Storage } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { Conv2dAttrs, KernelArgs, KernelName } from "../../src/backend/kernels.ts";
import type { GpuContext } from "../../src/backend/webgpu/context.ts";
import { matmulKernels } from "../../src/backend/webgpu/kernel_matmul.ts";
import { convKernels } from "../../src/backend/webgpu/kernel_conv.ts";
import { Rng } from "../../src/random.ts";
import { backendTest } from "../_backends.ts";
import { maxRelDiff } from "../_compare.ts";

const TOL = 1e-4;

type Arrays = Record<string, Float32Array>;
type Runner = (b: Backend, args: Record<string, unknown>) => void;

/**
 * Run one kernel on `b` and on the CPU with the same inputs and initial outputs; returns the max relative
 * error of each output. Outputs start as given (NaN shows up as an unwritten element).
 */
async function versusCpu(
  b: Backend,
  run: Runner,
  inputs: Arrays,
  outputs: Arrays,
  attrs: object,
): Promise<Record<string, number>> {
  const results: Arrays[] = [];
  for (const be of [new CpuBackend(), b]) {
    const storages: Record<string, Storage> = {};
    for (const [name, data] of Object.entries({ ...inputs, ...outputs })) {
      storages[name] = be.alloc(data.length, { category: "workspace" });
      be.write(storages[name], data);
    }
    run(be, { ...storages, attrs });
    const got: Arrays = {};
    for (const name of Object.keys(outputs)) got[name] = Float32Array.from(await be.read(storages[name]));
    for (const s of Object.values(storages)) be.release(s);
    results.push(got);
  }
  const errors: Record<string, number> = {};
  for (const name of Object.keys(outputs)) errors[name] = maxRelDiff(results[1][name], results[0][name]);
  return errors;
}

function kernel<K extends KernelName>(name: K): Runner {
  return (b, args) => b.run(name, args as unknown as KernelArgs<K>);
}

function assertClose(errors: Record<string, number>, what: string): void {
  for (const [name, e] of Object.entries(errors)) {
    ok(e <= TOL, `${what}: ${name} differs by ${e} (tolerance ${TOL})`);
  }
}

interface MatmulCase {
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  sharedA?: boolean;
  bias?: boolean;
  accumulate?: boolean;
}

async function checkMatmul(
  b: Backend,
  c: MatmulCase,
  run: Runner = kernel("matmul"),
  seed = 1,
): Promise<void> {
  const rng = new Rng(seed);
  const strideA = c.sharedA ? 0 : c.m * c.k;
  const inputs: Arrays = {
    a: rng.uniforms((c.batch - 1) * strideA + c.m * c.k),
    b: rng.uniforms(c.batch * c.k * c.n),
  };
  if (c.bias) inputs.bias = rng.uniforms(c.n);
  const out = c.accumulate
    ? rng.uniforms(c.batch * c.m * c.n)
    : new Float32Array(c.batch * c.m * c.n).fill(NaN);
  const attrs = {
    batch: c.batch,
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA,
    transB: c.transB,
    strideA,
    strideB: c.k * c.n,
    strideC: c.m * c.n,
    accumulate: c.accumulate ?? false,
  };
  assertClose(await versusCpu(b, run, inputs, { out }, attrs), `matmul ${JSON.stringify(c)}`);
}

const TRANSPOSES: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

backendTest("matmul() matches the CPU for every transpose on odd sizes (37x53x29)", async (b) => {
  for (const [transA, transB] of TRANSPOSES) {
    await checkMatmul(b, { batch: 2, m: 37, n: 53, k: 29, transA, transB });
    await checkMatmul(b, {
      batch: 2,
      m: 37,
      n: 53,
      k: 29,
      transA,
      transB,
      sharedA: true,
      bias: true,
      accumulate: true,
    });
  }
}, { backends: ["webgpu"] });

backendTest(
  "matmul() vec4 path (sizes in multiples of 4) matches the CPU with shared A, bias, accumulate",
  async (b) => {
    for (const [transA, transB] of TRANSPOSES) {
      await checkMatmul(b, { batch: 3, m: 20, n: 24, k: 12, transA, transB, sharedA: true });
      await checkMatmul(b, { batch: 2, m: 40, n: 8, k: 36, transA, transB, bias: true, accumulate: true });
    }
    // Tiny and single-row/column shapes.
    await checkMatmul(b, { batch: 1, m: 1, n: 1, k: 1, transA: false, transB: false, bias: true });
    await checkMatmul(b, { batch: 1, m: 3, n: 1, k: 130, transA: true, transB: true });
  },
  { backends: ["webgpu"] },
);

/**
 * A GpuContext over the real backend with tiny limits, so splitting over bindings and grids is exercised
 * with small tensors: 4 KiB bindings (1024 floats) and 3 workgroups per dimension.
 */
function tinyLimits(b: Backend): { ctx: GpuContext; done: () => void } {
  const real = b as unknown as GpuContext;
  const temps: Storage[] = [];
  const limits = {
    maxStorageBufferBindingSize: 4096,
    minStorageBufferOffsetAlignment: real.limits.minStorageBufferOffsetAlignment,
    maxComputeWorkgroupsPerDimension: 3,
  } as GPUSupportedLimits;
  const ctx: GpuContext = {
    device: real.device,
    limits,
    dispatch: (o) => {
      // The kernels must respect the limits they were given, or the splitting goes untested.
      for (const g of o.bindings) {
        const length = g.length;
        ok(length * 4 <= limits.maxStorageBufferBindingSize, `${o.entry}: a binding of ${length} floats`);
      }
      ok(o.workgroups.every((w) => (w ?? 1) <= 3), `${o.entry}: workgroups ${o.workgroups}`);
      real.dispatch(o);
    },
    temp: (length, dtype) => {
      const s = b.alloc(length, { dtype, category: "workspace" });
      temps.push(s);
      return s;
    },
  };
  return { ctx, done: () => temps.splice(0).forEach((s) => b.release(s)) };
}

function withTinyLimits(table: Record<string, unknown>, name: string): Runner {
  return (b, args) => {
    if (b.name !== "webgpu") return b.run(name as KernelName, args as never); // the CPU reference
    const { ctx, done } = tinyLimits(b);
    (table[name] as (a: unknown, c: GpuContext) => void)(args, ctx);
    done();
  };
}

backendTest("matmul() splits batches, rows and grids that exceed binding and dispatch limits", async (b) => {
  const run = withTinyLimits(matmulKernels, "matmul");
  // Each C item is 24*20 = 480 floats: a 1024-float binding holds two, so 5 items take 3 windows.
  await checkMatmul(b, { batch: 5, m: 24, n: 20, k: 8, transA: false, transB: true, bias: true }, run);
  // One item larger than a binding: split into row blocks (A untransposed).
  await checkMatmul(
    b,
    { batch: 2, m: 50, n: 36, k: 16, transA: false, transB: false, accumulate: true },
    run,
  );
  // Scalar path with misaligned windows.
  await checkMatmul(b, { batch: 7, m: 13, n: 11, k: 5, transA: true, transB: false, sharedA: true }, run);
}, { backends: ["webgpu"] });

function conv(
  n: number,
  cin: number,
  hw: [number, number],
  cout: number,
  k: number,
  o: { stride?: number; pad?: number; dilation?: number; groups?: number } = {},
): Conv2dAttrs {
  const [h, w] = hw;
  const s = o.stride ?? 1, p = o.pad ?? 0, d = o.dilation ?? 1;
  const outH = Math.floor((h + 2 * p - d * (k - 1) - 1) / s) + 1;
  const outW = Math.floor((w + 2 * p - d * (k - 1) - 1) / s) + 1;
  return {
    n,
    cin,
    h,
    w,
    cout,
    kh: k,
    kw: k,
    strideH: s,
    strideW: s,
    padH: p,
    padW: p,
    dilationH: d,
    dilationW: d,
    groups: o.groups ?? 1,
    outH,
    outW,
  };
}

/** conv2d (with bias), conv2d_grad_input and conv2d_grad_weight on the same geometry. */
async function checkConv(b: Backend, a: Conv2dAttrs, wrap?: (name: string) => Runner): Promise<void> {
  const rng = new Rng(a.cin * 131 + a.cout * 7 + a.kh);
  const xn = a.n * a.cin * a.h * a.w, wn = a.cout * (a.cin / a.groups) * a.kh * a.kw;
  const yn = a.n * a.cout * a.outH * a.outW;
  const x = rng.uniforms(xn), w = rng.uniforms(wn), bias = rng.uniforms(a.cout), dy = rng.uniforms(yn);
  const nan = (n: number) => new Float32Array(n).fill(NaN);
  const shape = JSON.stringify(a);
  const run = (name: KernelName) => wrap ? wrap(name) : kernel(name);
  assertClose(await versusCpu(b, run("conv2d"), { x, w, bias }, { out: nan(yn) }, a), `conv2d ${shape}`);
  assertClose(
    await versusCpu(b, run("conv2d_grad_input"), { dy, w }, { out: nan(xn) }, a),
    `grad_input ${shape}`,
  );
  assertClose(
    await versusCpu(b, run("conv2d_grad_weight"), { x, dy }, { out: nan(wn) }, a),
    `grad_weight ${shape}`,
  );
}

const CONVS: [string, Conv2dAttrs][] = [
  ["3x3 pad 1 stride 1", conv(2, 5, [9, 7], 6, 3, { pad: 1 })],
  ["3x3 pad 1 stride 2", conv(2, 5, [9, 7], 6, 3, { pad: 1, stride: 2 })],
  ["3x3 with 40 output channels (8-row tiles)", conv(1, 3, [8, 8], 40, 3, { pad: 1 })],
  ["1x1", conv(2, 8, [4, 6], 12, 1)],
  ["1x1 odd sizes", conv(2, 7, [5, 5], 9, 1)],
  ["1x1 stride 2", conv(2, 6, [5, 5], 4, 1, { stride: 2 })],
  ["depthwise 3x3 stride 1", conv(2, 6, [9, 11], 6, 3, { pad: 1, groups: 6 })],
  ["depthwise 3x3 stride 2", conv(2, 6, [9, 11], 6, 3, { pad: 1, stride: 2, groups: 6 })],
  ["depthwise 3x3 channel multiplier 2", conv(2, 3, [8, 8], 6, 3, { pad: 1, groups: 3 })],
  ["groups=2", conv(2, 6, [8, 7], 10, 3, { pad: 1, groups: 2 })],
  ["groups=2 1x1", conv(2, 6, [6, 6], 10, 1, { groups: 2 })],
  ["dilation 2", conv(2, 4, [10, 9], 5, 3, { pad: 2, dilation: 2 })],
  ["5x5 stride 3 no padding", conv(2, 3, [11, 12], 4, 5, { stride: 3 })],
  [
    "3x3 stride 2 dilation 2 (phases share taps)",
    conv(2, 4, [12, 10], 12, 3, { pad: 2, stride: 2, dilation: 2 }),
  ],
  ["2x2 stride 2 and 1x1 stride 2 (phases without taps)", conv(2, 4, [8, 8], 8, 2, { stride: 2 })],
  [
    "depthwise 5x5 stride 2 dilation 2",
    conv(2, 4, [13, 16], 4, 5, { pad: 4, stride: 2, dilation: 2, groups: 4 }),
  ],
  ["depthwise stride 2 channel multiplier 3", conv(3, 2, [7, 9], 6, 3, { pad: 1, stride: 2, groups: 2 })],
  ["groups=2 with 8 output channels per group", conv(2, 4, [6, 6], 16, 3, { pad: 1, groups: 2 })],
  ["3x3 on inputs of fewer than 4 elements", conv(1, 2, [1, 1], 3, 3, { pad: 1 })],
  ["1x1 with vec4-aligned sizes", conv(3, 8, [4, 4], 16, 1)],
];

for (const [what, a] of CONVS) {
  backendTest(`conv2d() and its gradients match the CPU: ${what}`, (b) => checkConv(b, a), {
    backends: ["webgpu"],
  });
}

backendTest("conv2d() and its gradients split batches and grids that exceed device limits", async (b) => {
  const wrap = (name: string) => withTinyLimits(convKernels, name);
  // 8*8*8 = 512 floats per image: one image per 1024-float window (less the alignment slack).
  await checkConv(b, conv(5, 8, [8, 8], 8, 3, { pad: 1 }), wrap);
  await checkConv(b, conv(5, 8, [8, 8], 8, 3, { pad: 1, groups: 8 }), wrap);
  // 75 floats per image, 1125 in all: windows that start and end off vec4 boundaries, a padded copy.
  await checkConv(b, conv(15, 3, [5, 5], 4, 3, { pad: 1 }), wrap);
  await checkConv(b, conv(15, 3, [5, 5], 3, 3, { pad: 1, stride: 2, groups: 3 }), wrap);
  // 1x1 weight gradient: parallel parts summed from scratch, then (576 outputs) successive accumulation.
  await checkConv(b, conv(3, 8, [8, 8], 12, 1), wrap);
  await checkConv(b, conv(3, 24, [4, 4], 24, 1), wrap);
}, { backends: ["webgpu"] });
