/**
 * The wasm backend's memory: the size-class pool reaches a steady state and returns to its baseline, kernel
 * scratch is counted in the ledger and released after each run, running out of memory is the typed
 * OutOfMemoryError (and leaves the backend usable), attributes that would reach past a storage are refused
 * before any memory is touched, and a disposed backend says so.
 */
import { equal, ok, throws } from "node:assert/strict";
import { BackendError, OutOfMemoryError } from "../../src/backend/backend.ts";
import type { WasmBackend } from "../../src/backend/wasm/mod.ts";
import { conv2dAttrs } from "../../src/ops/conv.ts";
import { wasmTest, withWasm } from "./_wasm.ts";

wasmTest(
  "wasm alloc() reuses pooled blocks and leaks nothing over 1,000 steps, kernel scratch included",
  (shared) => {
    const b = shared as WasmBackend;
    const base = b.ledger.liveBytes;
    const x = b.alloc(2 * 3 * 17 * 17, { category: "activations" });
    const w = b.alloc(4 * 3 * 3 * 3, { category: "weights" });
    b.write(x, new Float32Array(x.length).fill(0.5));
    b.write(w, new Float32Array(w.length).fill(0.25));
    const attrs = conv2dAttrs([2, 3, 17, 17], [4, 3, 3, 3], { stride: 2, padding: 1 });
    let before = b.memoryStats();
    for (let step = 0; step < 1000; step++) {
      if (step === 10) before = b.memoryStats(); // after the first steps have filled the pool
      // 7 sizes, two live at once, as a training step frees and reallocates its activations.
      const n = 1000 + (step % 7) * 500;
      const s = b.alloc(n, { category: "activations" });
      const t = b.alloc(n + 1, { category: "saved" });
      const dy = b.alloc(2 * 4 * attrs.outH * attrs.outW, { category: "grads" });
      const dx = b.alloc(x.length, { category: "grads" });
      b.run("fill", { out: dy, attrs: { n: dy.length, value: 1 } });
      // The general input gradient allocates its col2im buffer as workspace inside run().
      b.run("conv2d_grad_input", { dy, w, out: dx, attrs });
      b.release(dx);
      b.release(dy);
      b.release(t);
      b.release(s);
    }
    const after = b.memoryStats();
    b.release(x);
    b.release(w);
    equal(b.ledger.liveBytes, base, "the ledger returns to its baseline");
    equal(after.inUseBytes, before.inUseBytes, "blocks in use return to their baseline");
    equal(
      after.blocks,
      before.blocks,
      "no new blocks after the first steps: every allocation is served from the pool",
    );
    equal(after.memoryBytes, before.memoryBytes, "the memory did not grow");
    ok(after.hits - before.hits >= 990 * 5, `pool hits ${after.hits - before.hits}`);
  },
);

wasmTest(
  "wasm kernel scratch is counted as workspace while the kernel runs and freed when it returns",
  (shared) => {
    const b = shared as WasmBackend;
    const attrs = conv2dAttrs([4, 8, 20, 20], [8, 8, 3, 3], { padding: 1 });
    const dy = b.alloc(4 * 8 * 20 * 20, { category: "grads" });
    const w = b.alloc(8 * 8 * 9, { category: "weights" });
    const dx = b.alloc(4 * 8 * 20 * 20, { category: "grads" });
    b.ledger.resetPeak();
    const live = b.ledger.liveBytes;
    b.run("conv2d_grad_input", { dy, w, out: dx, attrs });
    const snap = b.ledger.snapshot();
    // dcol of the whole batch: 4 images x (8*9 rows) x 400 columns of f32.
    equal(snap.peak.workspace - snap.live.workspace, 4 * 72 * 400 * 4);
    equal(b.ledger.liveBytes, live);
    for (const s of [dy, w, dx]) b.release(s);
  },
);

wasmTest(
  "wasm runs out of memory with OutOfMemoryError, in alloc and in kernel scratch, and stays usable",
  async () => {
    await withWasm({ maxBytes: 96 * 2 ** 20, threads: 2 }, async (b) => {
      throws(() => b.alloc(40 * 2 ** 20, { category: "activations" }), OutOfMemoryError);
      const base = b.ledger.liveBytes;
      // The 3x3 input gradient's col2im buffer (576 rows x 40,000 columns, 92 MB) does not fit in 96 MiB.
      const attrs = conv2dAttrs([1, 64, 200, 200], [64, 64, 3, 3], { padding: 1 });
      const dy = b.alloc(64 * 200 * 200, { category: "grads" });
      const w = b.alloc(64 * 64 * 9, { category: "weights" });
      const dx = b.alloc(64 * 200 * 200, { category: "grads" });
      throws(() => b.run("conv2d_grad_input", { dy, w, out: dx, attrs }), OutOfMemoryError);
      equal(
        b.ledger.liveBytes - base,
        4 * (dy.length + w.length + dx.length),
        "the failed kernel's scratch was freed",
      );
      // Still usable: a small kernel runs and reads back.
      const s = b.alloc(10, { category: "activations" });
      b.run("fill", { out: s, attrs: { n: 10, value: 3 } });
      equal((await b.read(s))[9], 3);
      for (const t of [dy, w, dx, s]) b.release(t);
      equal(b.ledger.liveBytes, base);
    });
  },
);

wasmTest(
  "wasm kernels refuse attributes that reach past a storage instead of touching other memory",
  (b) => {
    const a = b.alloc(10, { category: "activations" });
    const out = b.alloc(10, { category: "activations" });
    throws(
      () => b.run("unary", { x: a, out, attrs: { n: 11, op: "relu" } }),
      /x holds 10 elements, the attributes need 11/,
    );
    throws(
      () =>
        b.run("matmul", {
          a,
          b: a,
          out,
          attrs: {
            batch: 1,
            m: 3,
            n: 4,
            k: 3,
            transA: false,
            transB: false,
            strideA: 0,
            strideB: 0,
            strideC: 0,
            accumulate: false,
          },
        }),
      /matmul: b holds 10 elements, the attributes need 12/,
    );
    throws(
      () => b.run("copy", { x: a, out, attrs: { n: 5, srcOffset: 6, dstOffset: 0 } }),
      /copy: x holds 10 elements, the attributes need 11/,
    );
    throws(() => b.run("fill", { out, attrs: { n: -1, value: 0 } }), /n must be a non-negative integer/);
    b.release(a);
    b.release(out);
  },
);

wasmTest("a disposed wasm backend refuses further work with BackendError", async () => {
  const b = await withWasm({ threads: 2 }, (b) => Promise.resolve(b));
  throws(() => b.alloc(4, { category: "activations" }), BackendError);
  const s = { id: 1, length: 1, dtype: "f32" as const, bytes: 4, category: "activations" as const, refs: 1 };
  throws(() => b.run("fill", { out: s, attrs: { n: 1, value: 0 } }), BackendError);
});

wasmTest(
  "wasm workers see memory the host grows between two kernels (each kernel reaches new pages)",
  async () => {
    await withWasm({ threads: 3 }, async (b) => {
      // Hot workers first (their code optimised, as in a long run), then storages that grow the memory, each
      // written by every thread at once.
      const warm = b.alloc(200_000, { category: "activations" });
      for (let i = 0; i < 400; i++) {
        b.run("unary", { x: warm, out: warm, attrs: { n: warm.length, op: "relu" } });
      }
      const live = [];
      const before = b.memoryStats().memoryBytes;
      for (let i = 0; i < 40; i++) {
        const s = b.alloc(1_000_000 + i * 1000, { category: "activations" });
        b.run("fill", { out: s, attrs: { n: s.length, value: i } });
        b.run("unary", { x: s, out: s, attrs: { n: s.length, op: "relu" } });
        live.push(s);
      }
      ok(b.memoryStats().memoryBytes > before + 40 * 4_000_000, "the memory grew");
      for (const [i, s] of live.entries()) {
        const v = await b.read(s);
        ok(v[0] === i && v[v.length - 1] === i, `storage ${i} holds ${v[0]} .. ${v[v.length - 1]}`);
        b.release(s);
      }
      b.release(warm);
    });
  },
);
