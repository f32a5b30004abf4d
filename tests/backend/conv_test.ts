/**
 * conv2d on every backend against the CPU reference: forward, dx, dw and db from seeded inputs.
 * Error metric: |got - ref| / max(1, |ref|) <= 1e-4 (compareWithCpu). Shapes stay small for lavapipe.
 */
import { equal, ok } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { type CompareInput, compareWithCpu } from "../_compare.ts";
import { conv2d, type Conv2dOptions, conv2dOutputShape } from "../../src/ops/conv.ts";
import { Rng } from "../../src/random.ts";

const TOLERANCE = 1e-4;

interface Case {
  name: string;
  x: number[];
  w: number[];
  bias?: boolean;
  opts: Omit<Conv2dOptions, "bias">;
  /** Which of x, w, bias train (default all). */
  train?: [boolean, boolean, boolean];
}

const CASES: Case[] = [
  { name: "3x3 padding 1, bias", x: [2, 3, 7, 7], w: [4, 3, 3, 3], bias: true, opts: { padding: 1 } },
  { name: "stride 2", x: [2, 3, 8, 7], w: [5, 3, 3, 3], opts: { stride: 2, padding: 1 } },
  { name: "dilation 2", x: [1, 2, 7, 7], w: [3, 2, 3, 3], opts: { dilation: 2, padding: 2 } },
  { name: "groups=2", x: [2, 4, 6, 6], w: [6, 2, 3, 3], bias: true, opts: { groups: 2, padding: 1 } },
  { name: "depthwise", x: [2, 8, 6, 6], w: [8, 1, 3, 3], bias: true, opts: { groups: 8, padding: 1 } },
  {
    name: "depthwise stride 2",
    x: [2, 6, 9, 9],
    w: [6, 1, 3, 3],
    opts: { groups: 6, stride: 2, padding: 1 },
  },
  {
    name: "depthwise 5x5 channel multiplier 2",
    x: [1, 3, 8, 8],
    w: [6, 1, 5, 5],
    opts: { groups: 3, padding: 2 },
  },
  { name: "1x1, bias", x: [2, 8, 5, 5], w: [12, 8, 1, 1], bias: true, opts: {} },
  { name: "1x1 groups=2 stride 2", x: [2, 4, 5, 5], w: [6, 2, 1, 1], opts: { groups: 2, stride: 2 } },
  {
    name: "asymmetric stride/padding/dilation",
    x: [1, 2, 7, 8],
    w: [3, 2, 2, 3],
    opts: { stride: [2, 1], padding: [1, 0], dilation: [1, 2] },
  },
  {
    name: "frozen weight (dx only)",
    x: [2, 3, 6, 6],
    w: [4, 3, 3, 3],
    bias: true,
    opts: { padding: 1 },
    train: [true, false, false],
  },
  {
    name: "frozen input (dw and db only)",
    x: [2, 3, 6, 6],
    w: [4, 3, 3, 3],
    bias: true,
    opts: { stride: 2 },
    train: [false, true, true],
  },
];

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

for (const c of CASES) {
  backendTest(`conv2d() forward and gradients match the CPU reference: ${c.name}`, async (b) => {
    const rng = new Rng(size(c.x) * 7 + size(c.w));
    const train = c.train ?? [true, true, true];
    const cout = conv2dOutputShape(c.x, c.w, c.opts)[1];
    const inputs: CompareInput[] = [
      { shape: c.x, data: rng.uniforms(size(c.x)), grad: train[0] },
      { shape: c.w, data: rng.uniforms(size(c.w)), grad: train[1] },
    ];
    if (c.bias) inputs.push({ shape: [cout], data: rng.uniforms(cout), grad: train[2] });
    const err = await compareWithCpu(
      b,
      (_b, t) => conv2d(t[0], t[1], { ...c.opts, bias: t[2] ?? null }),
      inputs,
    );
    ok(err.forward <= TOLERANCE, `forward error ${err.forward}`);
    // One gradient per input (empty for a frozen one): the comparison covered every backward kernel used.
    equal(err.grads.length, inputs.length);
    err.grads.forEach((e, i) => ok(e <= TOLERANCE, `gradient of input ${i} error ${e}`));
  });
}
