/**
 * WebGPU backend infrastructure: device acquisition errors, buffer pool reuse and leaks, write ordering,
 * error scopes (WGSL compile errors, out-of-memory), lost devices, 2-D grids and tensors larger than
 * maxStorageBufferBindingSize. Tests that need a device skip with a printed reason when there is no adapter
 * (EDGETRAIN_REQUIRE_WEBGPU=1 makes that a failure).
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { BackendError, OutOfMemoryError } from "../../src/backend/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../src/backend/webgpu/mod.ts";
import { webgpuBackend } from "../_backends.ts";

function gpuTest(name: string, body: (b: WebGpuBackend) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const b = await webgpuBackend() as WebGpuBackend | null;
      if (!b) {
        console.warn(`skipped "${name}": no WebGPU adapter`);
        return;
      }
      await body(b);
    },
  });
}

/** A backend on its own device, for tests that break or cap it. */
async function ownBackend(options: { memoryLimitBytes?: number } = {}): Promise<WebGpuBackend> {
  return await createWebGpuBackend({ debug: "", ...options });
}

Deno.test("createWebGpuBackend() explains a missing navigator.gpu and a missing adapter", async () => {
  await rejects(createWebGpuBackend({ gpu: null }), (e: Error) => {
    ok(e instanceof BackendError, e.message);
    ok(e.message.includes("--unstable-webgpu"), e.message);
    return true;
  });
  const noAdapter = { requestAdapter: () => Promise.resolve(null) } as unknown as GPU;
  await rejects(createWebGpuBackend({ gpu: noAdapter }), (e: Error) => {
    ok(e instanceof BackendError, e.message);
    ok(e.message.includes("No WebGPU adapter") && e.message.includes("mesa-vulkan-drivers"), e.message);
    return true;
  });
});

gpuTest("alloc() reuses pooled buffers and leaks nothing over 1,000 steps", async (b) => {
  const base = b.ledger.liveBytes;
  const x = b.alloc(4096, { category: "weights" });
  b.write(x, new Float32Array(4096).fill(1));
  const before = b.memoryStats();
  for (let step = 0; step < 1000; step++) {
    // A step's worth of temporaries of a few sizes, released in a different order than allocated.
    const n = 1000 + (step % 7) * 500;
    const a = b.alloc(n, { category: "activations" });
    const g = b.alloc(n, { category: "grads" });
    b.run("unary", { x, out: a, attrs: { n, op: "relu" } });
    b.run("axpy", { x: a, out: g, attrs: { n, alpha: 0.5, accumulate: false } });
    b.release(a);
    b.run("axpy", { x: g, out: x, attrs: { n, alpha: 1e-3, accumulate: true } });
    b.release(g);
    if (step % 250 === 249) await b.sync();
  }
  const after = b.memoryStats();
  b.release(x);
  equal(b.ledger.liveBytes, base, "ledger returns to its baseline");
  // 7 sizes x 2 live at once: at most 14 new buffers; every other allocation is served from the pool.
  ok(after.buffers - before.buffers <= 14, `pool grew by ${after.buffers - before.buffers} buffers`);
  ok(
    after.hits - before.hits >= 2000 - 14,
    `only ${after.hits - before.hits} of 2000 allocations reused a buffer`,
  );
  ok(
    after.submits - before.submits <= 5,
    `${after.submits - before.submits} submits: steps were not batched`,
  );
});

gpuTest("write() after run() does not overtake pending work that reads the old contents", async (b) => {
  const a = b.alloc(256, { category: "activations" });
  const out = b.alloc(256, { category: "activations" });
  b.write(a, new Float32Array(256).fill(1));
  b.run("copy", { x: a, out, attrs: { n: 256, srcOffset: 0, dstOffset: 0 } });
  b.write(a, new Float32Array(256).fill(2)); // pending copy must still see 1s
  // The freed buffer goes back to the pool and its next owner is written at once: still after the copy.
  b.release(a);
  const c = b.alloc(256, { category: "activations" });
  b.write(c, new Float32Array(256).fill(3));
  deepEqual(Array.from(await b.read(out)), new Array(256).fill(1));
  deepEqual(Array.from(await b.read(c)), new Array(256).fill(3));
  b.release(c);
  b.release(out);
});

gpuTest("read() returns Uint32Array for u32 storages and Float32Array for f32", async (b) => {
  const u = b.alloc(3, { category: "saved", dtype: "u32" });
  b.write(u, [1, 2 ** 32 - 1, 7]);
  const r = await b.read(u);
  ok(r instanceof Uint32Array);
  deepEqual(Array.from(r), [1, 2 ** 32 - 1, 7]);
  const f = b.alloc(2, { category: "activations" });
  b.write(f, [0.5, -1]);
  ok((await b.read(f)) instanceof Float32Array);
  b.release(u);
  b.release(f);
});

gpuTest("dispatch() runs grids over 65535 workgroups split into 2-D", async (b) => {
  b.registerShader(
    "test_grid",
    `struct P { count: u32, gx: u32 }
     @group(0) @binding(0) var<storage, read_write> out: array<u32>;
     @group(0) @binding(1) var<uniform> p: P;
     @compute @workgroup_size(1)
     fn main(@builtin(workgroup_id) wid: vec3<u32>) {
       let w = wid.y * p.gx + wid.x;
       if (w < p.count) { out[w] = w + 1u; }
     }`,
  );
  const count = 70000;
  const out = b.alloc(count, { category: "workspace", dtype: "u32" });
  const { grid2d } = await import("../../src/backend/webgpu/kernel_chunks.ts");
  const [gx, gy] = grid2d(b, count);
  deepEqual([gx, gy], [65535, 2]);
  b.dispatchRaw({
    shader: "test_grid",
    entry: "main",
    bindings: [out],
    uniforms: { count, gx },
    workgroups: [gx, gy],
  });
  const r = await b.read(out);
  ok(r.every((v, i) => v === i + 1), "every workgroup ran exactly once");
  throws(
    () => b.dispatchRaw({ shader: "test_grid", entry: "main", bindings: [out], workgroups: [70000] }),
    BackendError,
  );
  b.release(out);
});

Deno.test({
  name: "sync() reports a WGSL compile error with the compiler's message, and the backend recovers",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const b = await ownBackend().catch(() => null);
    if (!b) return console.warn("skipped: no WebGPU adapter");
    b.registerShader(
      "broken",
      `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
       @compute @workgroup_size(1) fn main() { out[0] = no_such_function(1.0); }`,
    );
    const out = b.alloc(4, { category: "workspace" });
    b.dispatchRaw({ shader: "broken", entry: "main", bindings: [out], workgroups: [1] });
    await rejects(b.sync(), (e: Error) => {
      ok(e instanceof BackendError, e.message);
      ok(e.message.includes("no_such_function") && e.message.includes("kernels/broken.wgsl"), e.message);
      return true;
    });
    b.run("fill", { out, attrs: { n: 4, value: 3 } });
    deepEqual(Array.from(await b.read(out)), [3, 3, 3, 3]);
    b.dispose();
  },
});

Deno.test({
  name: "alloc() throws OutOfMemoryError over memoryLimitBytes and over maxBufferSize",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const b = await ownBackend({ memoryLimitBytes: 2 ** 20 }).catch(() => null);
    if (!b) return console.warn("skipped: no WebGPU adapter");
    const a = b.alloc(200_000, { category: "activations" }); // 800 kB
    throws(() => b.alloc(100_000, { category: "saved" }), (e: Error) => {
      ok(e instanceof OutOfMemoryError, e.message);
      equal(e.requestedBytes, 400_000);
      ok(e.message.includes("memory limit"), e.message);
      return true;
    });
    b.release(a);
    const c = b.alloc(100_000, { category: "saved" }); // fits once the first is gone
    b.release(c);
    throws(() => b.alloc(b.maxElements + 1, { category: "activations" }), (e: Error) => {
      ok(e instanceof OutOfMemoryError && e.message.includes("maxBufferSize"), e.message);
      return true;
    });
    // What WebGPU itself reports for a buffer over maxBufferSize: a validation error, not out-of-memory.
    b.device.pushErrorScope("out-of-memory");
    b.device.pushErrorScope("validation");
    b.device.createBuffer({ size: b.limits.maxBufferSize + 4, usage: GPUBufferUsage.STORAGE });
    const validation = await b.device.popErrorScope();
    const oom = await b.device.popErrorScope();
    ok(validation instanceof GPUValidationError, "over maxBufferSize is a validation error");
    equal(oom, null);
    b.dispose();
  },
});

Deno.test({
  name: "run() and sync() throw BackendError naming the reason after the device is lost",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const b = await ownBackend().catch(() => null);
    if (!b) return console.warn("skipped: no WebGPU adapter");
    const x = b.alloc(16, { category: "activations" });
    b.device.destroy();
    await b.device.lost;
    throws(() => b.run("fill", { out: x, attrs: { n: 16, value: 1 } }), (e: Error) => {
      ok(e instanceof BackendError && /lost \(destroyed\)/.test(e.message), e.message);
      return true;
    });
    await rejects(b.sync(), BackendError);
    b.release(x); // releasing after loss still balances the ledger
    equal(b.ledger.liveBytes, 0);
  },
});

gpuTest("kernels split tensors larger than maxStorageBufferBindingSize into windows", async (b) => {
  const limit = b.limits.maxStorageBufferBindingSize;
  // 40M floats = 160 MB on llvmpipe's 128 MiB binding limit; devices with larger bindings get 1.25x theirs.
  const n = Math.max(40_000_000, Math.ceil((limit / 4) * 1.25 / 1000) * 1000);
  if (n * 4 > b.limits.maxBufferSize) return console.warn("skipped: maxBufferSize below the test size");
  const x = b.alloc(n, { category: "activations" });
  const y = b.alloc(n, { category: "activations" });
  b.run("fill", { out: x, attrs: { n, value: 1.5 } });
  const probes = [0, 123, 33_554_431, 33_554_433, n - 1001, n - 1];
  for (const [i, p] of probes.entries()) b.write(x, [i - 2], p);
  b.run("unary", { x, out: y, attrs: { n, op: "square" } });
  b.run("axpy", { x, out: y, attrs: { n, alpha: 2, accumulate: true } });
  // y = x^2 + 2x; gather each probe and its neighbour with copies from windows across the storage.
  const neighbour = (p: number) => (p < n - 1 ? p + 1 : p - 1);
  const sample = b.alloc(probes.length * 2, { category: "workspace" });
  for (const [i, p] of probes.entries()) {
    b.run("copy", { x: y, out: sample, attrs: { n: 1, srcOffset: p, dstOffset: 2 * i } });
    b.run("copy", { x: y, out: sample, attrs: { n: 1, srcOffset: neighbour(p), dstOffset: 2 * i + 1 } });
  }
  const xAt = (q: number) => (probes.includes(q) ? probes.indexOf(q) - 2 : 1.5);
  const f = (v: number) => v * v + 2 * v;
  deepEqual(Array.from(await b.read(sample)), probes.flatMap((p) => [f(xAt(p)), f(xAt(neighbour(p)))]));
  // A reduction over the whole tensor: sum of y = (n - k) * f(1.5) + sum of the probes' f(i - 2).
  const total = b.alloc(1, { category: "workspace" });
  b.run("reduce", { x: y, out: total, attrs: { op: "sum", outer: 1, size: n, inner: 1 } });
  const expected = (n - probes.length) * f(1.5) + probes.reduce((s, _, i) => s + f(i - 2), 0);
  const sum = (await b.read(total))[0];
  ok(Math.abs(sum - expected) / expected < 1e-4, `sum ${sum} vs ${expected}`);
  for (const s of [x, y, sample, total]) b.release(s);
  b.trim(); // give the 320 MB back to the system
});

Deno.test({
  name: "EDGETRAIN_DEBUG=shaders,dispatch,memory prints compiles, dispatches and pool activity to stderr",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    if (!(await webgpuBackend())) return console.warn("skipped: no WebGPU adapter");
    const mod = new URL("../../src/backend/webgpu/mod.ts", import.meta.url).href;
    const code = `const { createWebGpuBackend } = await import(${JSON.stringify(mod)});
      const b = await createWebGpuBackend();
      const s = b.alloc(8, { category: "activations" });
      b.run("fill", { out: s, attrs: { n: 8, value: 1 } });
      await b.read(s);`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--unstable-webgpu", code],
      env: { EDGETRAIN_DEBUG: "shaders,dispatch,memory" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    equal(out.code, 0, err);
    ok(err.includes("[edgetrain shaders] compile kernels/elementwise.wgsl"), err);
    ok(err.includes("fn fill("), "the shader source is printed");
    ok(err.includes("[edgetrain dispatch] elementwise/fill"), err);
    ok(err.includes("[edgetrain memory] alloc #"), err);
  },
});

gpuTest("dispatch() caches pipelines by shader, entry and override constants", async (b) => {
  b.registerShader(
    "test_cache",
    `override C: u32 = 0u;
     @group(0) @binding(0) var<storage, read_write> out: array<u32>;
     @compute @workgroup_size(1) fn main() { out[0] = C; }`,
  );
  const out = b.alloc(1, { category: "workspace", dtype: "u32" });
  const run = (C: number) =>
    b.dispatchRaw({
      shader: "test_cache",
      entry: "main",
      constants: { C },
      bindings: [out],
      workgroups: [1],
    });
  const before = b.memoryStats().pipelines;
  run(1);
  run(1);
  equal(b.memoryStats().pipelines, before + 1, "the second dispatch reused the pipeline");
  run(2);
  equal(b.memoryStats().pipelines, before + 2, "another constant is another pipeline");
  deepEqual(Array.from(await b.read(out)), [2]);
  b.release(out);
});
