import { deepEqual, equal, notDeepEqual, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { parseOrder, streamOrder } from "../../src/data/order.ts";
import { MemoryBank } from "../../src/methods/memory_bank.ts";
import { createMethod } from "../../src/methods/registry.ts";
import type { StreamingMethod } from "../../src/methods/streaming.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

const b = new CpuBackend();

function smallNet(): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
}

const frames = (seed: number, n: number) => new Rng(seed).normals(n * 16 * 16);

/** Predictions of `method` over `x` fed in chunks of `chunk` frames. */
async function answers(method: StreamingMethod, x: Float32Array, chunk: number): Promise<number[]> {
  const n = x.length / 256, out: number[] = [];
  for (let s = 0; s < n; s += chunk) {
    const k = Math.min(chunk, n - s);
    const t = Tensor.from(b, x.subarray(s * 256, (s + k) * 256), [k, 1, 16, 16]);
    const r = await method.step(t);
    t.dispose();
    out.push(...Array.from(r.logits));
  }
  return out;
}

Deno.test("MemoryBank keeps at most its capacity, balanced over pseudo-labels once full, in the ledger's bank category", () => {
  const bank = new MemoryBank({ capacity: 8 });
  const x = Tensor.from(b, new Float32Array(12 * 4), [12, 1, 2, 2]);
  // 12 frames all answered as class 0 fill the bank (fill-first), then only replace each other.
  bank.add(x, new Int32Array(12), new Float64Array(12).fill(0.1), 4);
  equal(bank.size, 8);
  equal(b.ledger.snapshot().live.bank, 8 * 4 * 4);
  // Class 1 is under its quota (8 / 4 = 2): its frames take the place of the majority class's.
  bank.add(x, new Int32Array(3).fill(1), new Float64Array(3).fill(0.1), 4);
  const labels = Array.from(bank.labels());
  equal(labels.length, 8);
  equal(labels.filter((l) => l === 1).length, 2, "class 1 fills its quota, no more");
  const batch = bank.batch()!;
  deepEqual(batch.shape, [8, 1, 2, 2]);
  batch.dispose();
  ok(Array.from(bank.ages()).every((a) => a >= 0));
  bank.dispose();
  x.dispose();
  equal(b.ledger.snapshot().live.bank, 0);
});

Deno.test("MemoryBank with strict quotas (RoTTA's CSTU) stays a fraction full when one class is answered", () => {
  const bank = new MemoryBank({ capacity: 8, fillFirst: false });
  const x = Tensor.from(b, new Float32Array(12 * 4), [12, 1, 2, 2]);
  bank.add(x, new Int32Array(12), new Float64Array(12).fill(0.1), 4);
  equal(bank.size, 2, "class 0 keeps its quota of 8 / 4 frames");
  bank.dispose();
  x.dispose();
});

Deno.test("StreamingMethod answers a frame the same alone or among others: never normalised by its own chunk", async () => {
  for (const name of ["tent", "rotta", "bn"]) {
    const m = await createMethod(name, smallNet(), { stream: { capacity: 16 } }) as StreamingMethod;
    const x = frames(1, 8);
    const alone = await answers(m, x.slice(0, 256), 1);
    m.reset();
    const together = await answers(m, x, 8);
    deepEqual(together.slice(0, 10).map((v) => v.toFixed(5)), alone.map((v) => v.toFixed(5)), name);
    m.dispose();
  }
});

Deno.test("StreamingMethod gives the same answers at chunk 1 and chunk 8: learning waits for every K frames", async () => {
  const x = frames(2, 64);
  for (const name of ["tent", "rotta", "eata", "sar"]) {
    const run = async (chunk: number) => {
      const m = await createMethod(name, smallNet(), {
        lr: 0.05,
        stream: { capacity: 16, every: 16, collapseGuard: false },
      }) as StreamingMethod;
      const out = await answers(m, x, chunk);
      m.dispose();
      return out.map((v) => v.toFixed(4));
    };
    const one = await run(1), eight = await run(8);
    deepEqual(eight, one, `${name}: chunk 1 and chunk 8 answer alike`);
  }
});

Deno.test("StreamingMethod: the first frames are answered as the source model does, later ones by the adapted model", async () => {
  const x = frames(3, 48);
  const source = await createMethod("source", smallNet());
  const t = Tensor.from(b, x, [48, 1, 16, 16]);
  const ref = Array.from((await source.step(t)).logits);
  t.dispose();
  const m = await createMethod("tent", smallNet(), { lr: 0.05, stream: { capacity: 16 } }) as StreamingMethod;
  const got = await answers(m, x, 8);
  deepEqual(got.slice(0, 160).map((v) => v.toFixed(4)), ref.slice(0, 160).map((v) => v.toFixed(4)));
  notDeepEqual(got.slice(320).map((v) => v.toFixed(4)), ref.slice(320).map((v) => v.toFixed(4)));
  m.dispose();
});

Deno.test("streamOrder() replays iid, sorted and dirichlet orders of the same frames, seeded", () => {
  const labels = Int32Array.from({ length: 200 }, (_, i) => i % 5);
  const iid = streamOrder(200, labels, parseOrder("iid"), 1);
  deepEqual([...iid].sort((a, c) => a - c), Array.from({ length: 200 }, (_, i) => i));
  deepEqual(streamOrder(200, labels, parseOrder("iid"), 1), iid, "seeded");
  const sorted = Array.from(streamOrder(200, labels, parseOrder("sorted"), 1), (i) => labels[i]);
  deepEqual(sorted, [...sorted].sort((a, c) => a - c), "sorted by class");
  const runs = (o: Int32Array) =>
    Array.from(o, (i) => labels[i]).filter((l, i, a) => i > 0 && l !== a[i - 1]).length;
  const d = streamOrder(200, labels, parseOrder("dirichlet:0.1"), 1);
  ok(runs(d) < runs(iid), `dirichlet:0.1 has fewer class changes (${runs(d)}) than iid (${runs(iid)})`);
});
