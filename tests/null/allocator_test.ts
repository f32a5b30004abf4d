import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { ARENA_ALIGN, ArenaPolicy, SLAB_BYTES, SMALL_BLOCK } from "../../src/memory/allocator_arena.ts";
import { PoolPolicy, REUSE_SLACK, sizeClass } from "../../src/memory/allocator_pool.ts";
import { SimulatedAllocator } from "../../src/memory/allocator.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";

const KiB = 1024;

Deno.test("ArenaPolicy.place() takes the best-fitting hole, coalesces freed neighbours and counts what it touched", () => {
  const a = new ArenaPolicy();
  const x = a.place(100 * KiB), y = a.place(40 * KiB), z = a.place(100 * KiB), w = a.place(16 * KiB);
  deepEqual([x.offset, y.offset, z.offset, w.offset], [0, 100 * KiB, 140 * KiB, 240 * KiB]);
  a.free(y);
  a.free(x); // merges with y's hole: one 140 KiB hole at 0
  const v = a.place(120 * KiB);
  equal(v.offset, 0, "the merged hole holds a block that neither part could");
  equal(a.stats().residentBytes, 256 * KiB, "nothing new was touched");
  a.free(w); // the top block: the top comes down, the touched bytes stay
  equal(a.stats().residentBytes, 256 * KiB);
  const u = a.place(20 * KiB); // the 20 KiB hole after v (at 120 KiB) fits exactly
  equal(u.offset, 120 * KiB);
  equal(a.stats().liveBytes, (120 + 100 + 20) * KiB, "v, z and u");
});

Deno.test("ArenaPolicy keeps small blocks apart from large ones, aligns to 8 and refuses a double free", () => {
  const a = new ArenaPolicy();
  const big = a.place(64 * KiB), small = a.place(12), big2 = a.place(64 * KiB);
  ok(small.bytes < SMALL_BLOCK && small.slab !== big.slab, "small blocks live in their own slab");
  equal(big2.offset, 64 * KiB, "the small block did not split the large slab");
  equal(small.bytes % ARENA_ALIGN, 0);
  equal(small.bytes, 16);
  a.free(small);
  throws(() => a.free(small), /freed twice|not allocated/);
  equal(a.place(0).bytes, 0, "an empty request takes nothing");
});

Deno.test("ArenaPolicy opens a slab of its own for a request above the slab size", () => {
  const a = new ArenaPolicy(4 * 2 ** 20);
  const x = a.place(3 * 2 ** 20), y = a.place(3 * 2 ** 20), z = a.place(9 * 2 ** 20 + 1);
  deepEqual([x.slab, y.slab, z.slab], [0, 1, 2]);
  deepEqual(a.slabCapacities, [4 * 2 ** 20, 4 * 2 ** 20, 10 * 2 ** 20]);
  equal(SLAB_BYTES, 2 ** 30);
});

Deno.test("PoolPolicy reuses the smallest free buffer up to REUSE_SLACK times the class, else creates one", () => {
  const p = new PoolPolicy(2 ** 32);
  const a = p.acquire(40 * KiB), b = p.acquire(200 * KiB);
  deepEqual([a, b].map((x) => x.reused), [false, false]);
  p.release(a.size);
  p.release(b.size);
  const c = p.acquire(30 * KiB);
  deepEqual(c, { size: a.size, reused: true }, "the 40 KiB buffer serves 30 KiB (smallest that fits)");
  const d = p.acquire(10 * KiB);
  ok(b.size > REUSE_SLACK * sizeClass(10 * KiB));
  equal(d.reused, false, "the 200 KiB buffer is too large for 10 KiB");
  equal(p.stats().peakBytes, a.size + b.size + d.size);
  equal(p.trim(), b.size);
});

Deno.test("SimulatedAllocator replays a CPU backend's allocations to the byte", () => {
  const cpu = new CpuBackend();
  const sim = new SimulatedAllocator("cpu");
  const live: { id: number; s: ReturnType<CpuBackend["alloc"]> }[] = [];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 400; i++) {
    if (live.length && rand() < 0.45) {
      const [{ id, s }] = live.splice(Math.floor(rand() * live.length), 1);
      cpu.release(s);
      sim.free(id);
    } else {
      const n = Math.floor(rand() ** 3 * 200_000);
      const s = cpu.alloc(n, { category: "activations" });
      sim.alloc(i, s.bytes);
      live.push({ id: i, s });
    }
  }
  equal(sim.peak().peak_bytes, cpu.memoryStats().residentBytes);
});

Deno.test("CpuBackend.alloc() zero-fills a reused block and keeps storages apart", async () => {
  const b = new CpuBackend();
  const s = b.alloc(1000, { category: "activations" });
  b.write(s, new Float32Array(1000).fill(3));
  const keep = b.alloc(10, { category: "activations" });
  b.write(keep, new Float32Array(10).fill(5));
  b.release(s);
  const t = b.alloc(1000, { category: "activations" });
  deepEqual([...await b.read(t)].every((v) => v === 0), true);
  deepEqual([...await b.read(keep)], new Array(10).fill(5));
  const f64 = new CpuBackend({ precision: "f64" });
  const u = f64.alloc(3, { category: "weights" });
  f64.write(u, [0.1, 0.2, 0.3]);
  deepEqual([...await f64.read(u)], [0.1, 0.2, 0.3]);
});
