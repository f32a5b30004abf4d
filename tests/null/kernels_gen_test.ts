import { deepEqual, equal } from "node:assert/strict";
import { GENERATED_FILE, readKernelSources, renderKernels } from "../../tools/gen_kernels.ts";
import { entryBindings } from "../../src/backend/webgpu/pipelines.ts";
import { debugFlags } from "../../src/backend/webgpu/device.ts";
import { sizeClass } from "../../src/backend/webgpu/pool.ts";

Deno.test("gen_kernels: src/backend/webgpu/_kernels_gen.ts matches kernels/*.wgsl (run `deno task gen`)", async () => {
  const expected = renderKernels(await readKernelSources());
  const actual = await Deno.readTextFile(GENERATED_FILE);
  equal(actual, expected, "the embedded kernels are stale: run `deno task gen` and commit the result");
});

Deno.test("entryBindings() finds the bindings each entry uses, through called functions, ignoring comments", () => {
  const src = `
    struct P { n: u32 }
    @group(0) @binding(0) var<storage, read> xs: array<f32>;
    @group(0) @binding(1) var<storage, read_write> out: array<f32>;
    @group(0) @binding(2) var<uniform> p: P;
    @group(0) @binding(1) var<storage, read> other: array<f32>;
    @group(0) @binding(2) var<storage, read_write> out2: array<f32>;
    fn helper(i: u32) -> f32 { return xs[i]; }
    @compute @workgroup_size(64)
    fn first(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x < p.n) { out[g.x] = helper(g.x); } }
    // a comment naming out and p must not count
    @compute @workgroup_size(64) fn second(@builtin(global_invocation_id) g: vec3<u32>) {
      out2[g.x] = other[g.x]; /* xs */
    }
    fn unused() { out[0] = 1.0; }`;
  const e = entryBindings(src);
  deepEqual([...e.keys()], ["first", "second"]);
  deepEqual(e.get("first")!.map((b) => `${b.binding}:${b.kind}`), ["0:read", "1:read_write", "2:uniform"]);
  deepEqual(e.get("second")!.map((b) => `${b.binding}:${b.kind}`), ["1:read", "2:read_write"]);
});

Deno.test("sizeClass() rounds to powers of two up to 4 KiB, then within 25%", () => {
  deepEqual([1, 256, 257, 4096, 4097, 5121, 2 ** 20 + 1].map(sizeClass), [
    256,
    256,
    512,
    4096,
    5120,
    6144,
    1310720,
  ]);
  for (let b = 4097; b < 2 ** 27; b = Math.ceil(b * 1.37)) {
    const c = sizeClass(b);
    equal(c >= b && c <= b * 1.25 + 4 * 2 ** 20, true, `class ${c} for ${b} bytes`);
  }
});

Deno.test("debugFlags() parses EDGETRAIN_DEBUG topics", () => {
  deepEqual(debugFlags("shaders,memory"), { shaders: true, dispatch: false, memory: true });
  deepEqual(debugFlags("all"), { shaders: true, dispatch: true, memory: true });
  deepEqual(debugFlags(""), { shaders: false, dispatch: false, memory: false });
});
