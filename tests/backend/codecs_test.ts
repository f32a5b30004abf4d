import { equal, ok } from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { backendTest } from "../_backends.ts";
import { codecByName, saveMask } from "../../src/memory/codecs.ts";
import { encodedBytes } from "../../src/memory/codecs_quant.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { withStore } from "../../src/memory/policy.ts";
import { hardswish } from "../../src/ops/activation.ts";
import { backward } from "../../src/autograd/tape.ts";
import type { KernelArgs, KernelName } from "../../src/backend/kernels.ts";
import type { GpuContext } from "../../src/backend/webgpu/context.ts";
import { quantKernels } from "../../src/backend/webgpu/kernel_quant.ts";

const f16round = (Math as unknown as { f16round: (v: number) => number }).f16round;

async function roundTrip(b: Backend, data: Float32Array, shape: number[], codec: "fp16" | "int8" | "int4") {
  const t = Tensor.from(b, data, shape);
  const s = codecByName(codec).encode(t);
  t.dispose();
  const back = s.get();
  const out = Float32Array.from(await back.data());
  back.dispose();
  s.release();
  return out;
}

backendTest(
  "f16_pack() round-trips f16-representable values exactly and rounds others to nearest even",
  async (b) => {
    const rng = new Rng(11);
    // Every 7th half bit pattern that is finite (normals, subnormals, both zeros), then random f32 values.
    const halves: number[] = [];
    for (let h = 0; h < 0x10000; h += 7) if ((h & 0x7c00) !== 0x7c00) halves.push(h);
    const f16 = new Float16Array(Uint16Array.from(halves).buffer);
    const exact = Float32Array.from(f16);
    const got = await roundTrip(b, exact, [exact.length], "fp16");
    for (let i = 0; i < exact.length; i++) {
      ok(
        Object.is(got[i], exact[i]),
        `half 0x${halves[i].toString(16)}`,
      );
    }
    const odd = Float32Array.from([...rng.normals(999, 100), 1e6, -1e6, 2 ** -26, 1 + 2 ** -11]);
    const rounded = await roundTrip(b, odd, [odd.length], "fp16");
    for (let i = 0; i < odd.length; i++) {
      ok(
        Object.is(rounded[i], f16round(odd[i])),
        `${odd[i]} -> ${rounded[i]}`,
      );
    }
  },
);

for (const [codec, bits] of [["int8", 8], ["int4", 4]] as const) {
  backendTest(`quantize() ${codec} error is at most scale/2 per group`, async (b) => {
    const rng = new Rng(bits);
    // [2, 3, 9, 9]: planes of 81 elements are the groups; channels with very different ranges.
    const shape = [2, 3, 9, 9];
    const data = rng.normals(486, 1);
    for (let i = 0; i < data.length; i++) data[i] = Math.max(0, data[i] * (1 + Math.floor(i / 81) * 3));
    const got = await roundTrip(b, data, shape, codec);
    const levels = 2 ** bits - 1;
    for (let g = 0; g < 6; g++) {
      const part = data.subarray(g * 81, (g + 1) * 81);
      const scale = (Math.max(...part) - Math.min(...part)) / levels;
      for (let i = 0; i < 81; i++) {
        const err = Math.abs(got[g * 81 + i] - part[i]);
        // scale/2 from rounding, plus f32 rounding of the subtract, divide and multiply-add (~4 ulp of range).
        ok(
          err <= scale / 2 + 4e-7 * (Math.abs(part[i]) + scale * levels),
          `group ${g} element ${i}: ${err} > ${scale / 2}`,
        );
      }
    }
  });

  backendTest(
    `quantize() ${codec} agrees with the CPU reference within one code on ragged groups`,
    async (b) => {
      const rng = new Rng(40 + bits);
      // 2 x 3 x 5 x 7 = 210 elements: groups of 64, the last one of 18; words not aligned to groups.
      const data = rng.normals(210, 2);
      const shape = [2, 3, 5, 7];
      const ref = await roundTrip(new CpuBackend(), data, shape, codec);
      const got = await roundTrip(b, data, shape, codec);
      for (let g = 0; g < 4; g++) {
        const part = data.subarray(g * 64, Math.min(210, (g + 1) * 64));
        const scale = (Math.max(...part) - Math.min(...part)) / (2 ** bits - 1);
        for (let i = g * 64; i < g * 64 + part.length; i++) {
          ok(Math.abs(got[i] - ref[i]) <= scale * 1.0001, `element ${i}: ${got[i]} vs ${ref[i]}`);
        }
      }
    },
  );
}

backendTest("codecs: encoded bytes are what the ledger counts on this backend", (b) => {
  const shape = [4, 8, 6, 6];
  for (const codec of ["fp16", "int8", "int4"] as const) {
    const t = Tensor.from(b, new Rng(5).normals(1152), shape);
    const before = b.ledger.snapshot().live.saved;
    const s = codecByName(codec).encode(t);
    equal(b.ledger.snapshot().live.saved - before, encodedBytes(codec, shape), codec);
    s.release();
    t.dispose();
  }
});

backendTest("mask_pack() round-trips through mask_grad exactly at 1 bit per element", async (b) => {
  const n = 1000;
  const data = new Rng(9).normals(n, 4);
  data[3] = 0; // at the open bound: excluded
  data[4] = 6;
  const x = Tensor.from(b, data, [n]);
  const before = b.ledger.snapshot().live.saved;
  const m = saveMask(x, 0, 6);
  equal(b.ledger.snapshot().live.saved - before, 4 * Math.ceil(n / 32));
  const ones = Tensor.full(b, [n], 1);
  const out = Tensor.empty(b, [n]);
  b.run("mask_grad", { mask: m.storage, dy: ones.storage, out: out.storage, attrs: { n, scale: 1 } });
  const got = await out.data();
  for (let i = 0; i < n; i++) equal(got[i], data[i] > 0 && data[i] < 6 ? 1 : 0, `element ${i} (${data[i]})`);
  m.release();
  for (const t of [x, ones, out]) t.dispose();
});

/**
 * Run a codec kernel through a GpuContext whose storage bindings are limited to 4 KiB (1024 floats), so the
 * chunking over the binding limit is exercised with small tensors; every binding is checked to fit.
 */
function tinyBindings(b: Backend): <K extends KernelName>(kernel: K, args: KernelArgs<K>) => void {
  const real = b as unknown as GpuContext;
  const limits = {
    ...real.limits,
    maxStorageBufferBindingSize: 4096,
    minStorageBufferOffsetAlignment: real.limits.minStorageBufferOffsetAlignment,
  } as GPUSupportedLimits;
  const ctx: GpuContext = {
    device: real.device,
    limits,
    dispatch: (o) => {
      for (const g of o.bindings) ok(g.length * 4 <= 4096, `${o.entry}: a binding of ${g.length} elements`);
      real.dispatch(o);
    },
    temp: (length, dtype) => real.temp(length, dtype),
  };
  return (kernel, args) =>
    (quantKernels as Record<string, (a: unknown, c: GpuContext) => void>)[kernel](args, ctx);
}

backendTest("quantize() and f16_pack() split tensors over the storage binding limit", async (b) => {
  const cpu = new CpuBackend();
  const run = tinyBindings(b);
  const n = 3000;
  const data = new Rng(21).normals(n, 3);
  for (const bits of [8, 4] as const) {
    const attrs = { n, bits, groupSize: 64 };
    const words = Math.ceil(n / (32 / bits));
    const outs: Float32Array[] = [];
    for (const [be, go] of [[cpu, cpu.run.bind(cpu)], [b, run]] as const) {
      const x = be.alloc(n, { category: "activations" });
      be.write(x, data);
      const packed = be.alloc(words, { dtype: "u32", category: "saved" });
      const params = be.alloc(2 * Math.ceil(n / 64), { category: "saved" });
      const out = be.alloc(n, { category: "activations" });
      go("quantize", { x, params, out: packed, attrs });
      go("dequantize", { packed, params, out, attrs });
      outs.push(Float32Array.from(await be.read(out)));
      for (const s of [x, packed, params, out]) be.release(s);
    }
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(outs[0][i] - outs[1][i]));
    // Codes may differ by one at a rounding tie; one code is at most (range of a group) / levels.
    ok(worst <= (8 * 3 / (2 ** bits - 1)) * 1.0001, `int${bits}: max difference ${worst}`);
  }
  const x = b.alloc(n, { category: "activations" });
  b.write(x, data);
  const packed = b.alloc(n / 2, { dtype: "u32", category: "saved" });
  const out = b.alloc(n, { category: "activations" });
  run("f16_pack", { x, out: packed, attrs: { n } });
  run("f16_unpack", { packed, out, attrs: { n } });
  const got = await b.read(out);
  for (let i = 0; i < n; i++) ok(Object.is(got[i], f16round(data[i])), `element ${i}`);
  for (const s of [x, packed, out]) b.release(s);
}, { backends: ["webgpu"] });

backendTest(
  "hardswish() under the mask store backpropagates MobileTL's step from 1 bit per element",
  async (b) => {
    const data = new Rng(4).normals(100, 3);
    const x = Tensor.from(b, data, [100], { requiresGrad: true, category: "weights" });
    const dy = new Rng(5).normals(100);
    const before = b.ledger.snapshot().live.saved;
    await withStore("mask", () => {
      const y = hardswish(x);
      equal(b.ledger.snapshot().live.saved - before, 16, "100 bits in 4 words");
      backward(y, Tensor.from(b, dy, [100]));
      y.dispose();
    });
    const g = await x.grad!.data();
    for (let i = 0; i < 100; i++) equal(g[i], data[i] > 0 ? dy[i] : 0, `element ${i} (x = ${data[i]})`);
    x.dispose();
  },
);
