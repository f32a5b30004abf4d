import { deepEqual, equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { f16ToF32Bits, f32Bits, f32BitsToF16 } from "../../src/backend/cpu/quant.ts";
import { codecByName, saveFloat, saveMask, setSavePolicy, STEP_MASKS } from "../../src/memory/codecs.ts";
import { encodedBytes, groupSizeFor, MIN_GROUP } from "../../src/memory/codecs_quant.ts";
import { storePolicy, withStore } from "../../src/memory/policy.ts";
import { resolveStore } from "../../src/methods/registry.ts";
import { hardsigmoid, hardswish, relu6 } from "../../src/ops/activation.ts";
import { backward } from "../../src/autograd/tape.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";

// V8's Math.f16round (round to nearest even) is an independent oracle for the bit-level conversion.
const f16round = (Math as unknown as { f16round: (v: number) => number }).f16round;
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsToF32 = (b: number) => (u32[0] = b, f32[0]);

Deno.test("f32BitsToF16() rounds to nearest even like Math.f16round on edge and random values", () => {
  const rng = new Rng(3);
  const values = [
    0,
    -0,
    1,
    -1,
    65504,
    65519.99,
    65520,
    -65520,
    1e-8,
    2 ** -24,
    2 ** -25,
    2 ** -25 * 1.0000001,
    3 * 2 ** -26,
    2 ** -14,
    2 ** -14 - 2 ** -25,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    0.1,
    1e30,
    -1e-30,
    Infinity,
    -Infinity,
    ...Array.from(rng.normals(2000, 30)),
    ...Array.from(rng.normals(500, 1e-5)),
  ].map(Math.fround);
  for (const v of values) {
    const got = bitsToF32(f16ToF32Bits(f32BitsToF16(f32Bits(v))));
    ok(Object.is(got, f16round(v)), `${v}: got ${got}, Math.f16round ${f16round(v)}`);
  }
  ok(Number.isNaN(bitsToF32(f16ToF32Bits(f32BitsToF16(f32Bits(NaN))))), "NaN stays NaN");
});

Deno.test("f16ToF32Bits() round-trips every finite half exactly", () => {
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff)) continue; // NaN payloads: checked above
    equal(f32BitsToF16(f16ToF32Bits(h)), h, `half 0x${h.toString(16)}`);
  }
});

Deno.test("quantize() packs int4 codes 8 per word, low bits first, with per-group affine params", () => {
  const b = new CpuBackend();
  // One group of 9 values from 0 to 15 (scale 1, offset 0): codes equal the values.
  const xs = [0, 1, 2, 3, 4, 5, 6, 7, 15];
  const x = b.alloc(9, { category: "activations" });
  b.write(x, xs);
  const out = b.alloc(2, { dtype: "u32", category: "saved" });
  const params = b.alloc(2, { category: "saved" });
  b.run("quantize", { x, params, out, attrs: { n: 9, bits: 4, groupSize: 9 } });
  deepEqual(Array.from(b.u(out)), [0x76543210, 0xf]);
  deepEqual(Array.from(b.f(params)), [1, 0]);
  b.dispose();
});

Deno.test("quantize() keeps constant groups exact (scale 0) and maps the extremes to the end codes", () => {
  const b = new CpuBackend();
  const x = b.alloc(8, { category: "activations" });
  b.write(x, [2.5, 2.5, 2.5, 2.5, -1, 0.2, 3, 0.9]);
  const out = b.alloc(2, { dtype: "u32", category: "saved" });
  const params = b.alloc(4, { category: "saved" });
  const deq = b.alloc(8, { category: "activations" });
  const attrs = { n: 8, bits: 8 as const, groupSize: 4 };
  b.run("quantize", { x, params, out, attrs });
  b.run("dequantize", { packed: out, params, out: deq, attrs });
  deepEqual(Array.from(b.f(deq)).slice(0, 4), [2.5, 2.5, 2.5, 2.5]);
  equal(b.u(out)[1] & 0xff, 0, "the group minimum gets code 0");
  equal((b.u(out)[1] >>> 16) & 0xff, 255, "the group maximum gets code 255");
  equal(b.f(deq)[6], 3, "the maximum decodes exactly: lo + 255 * (hi - lo) / 255");
  b.dispose();
});

Deno.test("groupSizeFor() uses (sample, channel) planes of at least MIN_GROUP elements, else MIN_GROUP", () => {
  equal(groupSizeFor([2, 3, 8, 8]), 64);
  equal(groupSizeFor([2, 3, 16, 16]), 256);
  equal(groupSizeFor([2, 3, 4, 4]), MIN_GROUP);
  equal(groupSizeFor([32, 10]), MIN_GROUP);
});

Deno.test("codecs: the ledger counts each codec's real bytes and encodedBytes() predicts them", () => {
  const b = new CpuBackend();
  const shape = [2, 3, 5, 7]; // 210 elements, planes of 35 < MIN_GROUP: 4 groups of 64
  for (const name of ["fp16", "int8", "int4"] as const) {
    const t = Tensor.from(b, new Rng(1).normals(210), shape);
    const before = b.ledger.snapshot().live.saved;
    const s = codecByName(name).encode(t);
    const counted = b.ledger.snapshot().live.saved - before;
    const expected = { fp16: 4 * 105, int8: 4 * 53 + 8 * 4, int4: 4 * 27 + 8 * 4 }[name];
    equal(counted, expected, `${name} saved bytes`);
    equal(s.bytes, expected);
    equal(encodedBytes(name, shape), expected);
    t.dispose();
    s.release();
    equal(b.ledger.snapshot().live.saved, before, `${name} release frees everything`);
  }
  b.dispose();
});

Deno.test("saveMask() costs 1 bit per element, rounded up to whole u32 words", () => {
  const b = new CpuBackend();
  for (const n of [1, 31, 32, 33, 1000, 4096]) {
    const x = Tensor.from(b, new Rng(n).normals(n), [n]);
    const before = b.ledger.snapshot().live.saved;
    const m = saveMask(x, 0, 6);
    equal(b.ledger.snapshot().live.saved - before, 4 * Math.ceil(n / 32), `n=${n}`);
    ok(m.bytes * 8 - n < 32, `n=${n}: fewer than 32 padding bits`);
    m.release();
    x.dispose();
  }
  b.dispose();
});

Deno.test("storePolicy() maps each --store to codecs and step masks; auto follows the method", () => {
  equal(storePolicy("int4").codecFor("conv2d", "input"), "int4");
  equal(storePolicy("int8").stepMask!("hardswish"), null);
  deepEqual(storePolicy("mask").stepMask!("hardswish"), STEP_MASKS.hardswish);
  equal(storePolicy("mask").codecFor("batchNorm2d", "xhat"), "fp32");
  equal(resolveStore("auto", "mobiletl"), "mask");
  equal(resolveStore("auto", "full"), "fp32");
});

Deno.test("hardswish() under the mask store keeps 1 bit per element and backpropagates the step at 0", async () => {
  const b = new CpuBackend();
  const xs = [-4, -3, -1.5, -0.1, 0, 0.1, 2.9, 3, 5];
  const x = Tensor.from(b, xs, [9], { requiresGrad: true, category: "weights" });
  await withStore("mask", () => {
    const y = hardswish(x);
    equal(b.ledger.snapshot().live.saved, 4, "one u32 word for 9 elements");
    backward(y, Tensor.from(b, xs.map(() => 2), [9]));
    y.dispose();
  });
  // step derivative: 1 for x > 0, else 0 (times the upstream 2).
  deepEqual(Array.from(await x.grad!.data()), [0, 0, 0, 0, 0, 2, 2, 2, 2]);
  x.dispose();
  b.dispose();
});

Deno.test("hardsigmoid() under the mask store gives exactly the default derivative", async () => {
  const b = new CpuBackend();
  const xs = [-4, -3, -2.999, -1, 0, 2.5, 3, 3.5];
  const grads: number[][] = [];
  for (const store of ["fp32", "mask"] as const) {
    const x = Tensor.from(b, xs, [8], { requiresGrad: true, category: "weights" });
    await withStore(store, () => {
      const y = hardsigmoid(x);
      backward(y, Tensor.from(b, [1, 2, 3, 4, 5, 6, 7, 8], [8]));
      y.dispose();
    });
    grads.push(Array.from(await x.grad!.data()));
    x.dispose();
  }
  deepEqual(grads[1], grads[0]);
  b.dispose();
});

Deno.test("saveFloat() follows the active policy and relu6 keeps its exact mask under int4", () => {
  const b = new CpuBackend();
  const prev = setSavePolicy(storePolicy("int4"));
  try {
    const x = Tensor.from(b, new Rng(2).normals(128), [2, 64]);
    const s = saveFloat(x, "linear", "input");
    equal(s.bytes, encodedBytes("int4", [2, 64]));
    s.release();
    const w = Tensor.from(b, new Rng(2).normals(64), [64], { requiresGrad: true, category: "weights" });
    const y = relu6(w);
    equal(b.ledger.snapshot().live.saved, 8, "64 elements: two mask words");
    y.dispose();
    x.dispose();
    w.dispose();
  } finally {
    setSavePolicy(prev);
  }
  b.dispose();
});
