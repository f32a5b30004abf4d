import { deepEqual, equal, throws } from "node:assert/strict";
import { GENERATED_FILE, readKernelSources, renderFormatted } from "../../tools/gen_kernels.ts";
import { packUniforms, reflectWgsl } from "../../src/backend/webgpu/wgsl_reflect.ts";
import type { DispatchOptions } from "../../src/backend/webgpu/context.ts";
import { OP_CODES } from "../../src/backend/webgpu/_kernels_gen.ts";
import { debugFlags } from "../../src/backend/webgpu/device.ts";
import { sizeClass } from "../../src/backend/webgpu/pool.ts";

Deno.test("gen_kernels: src/backend/webgpu/_kernels_gen.ts matches kernels/*.wgsl (run `deno task gen`)", async () => {
  // The whole generated module: embedded sources, uniform struct types, entries and op codes.
  const expected = await renderFormatted(await readKernelSources());
  const actual = await Deno.readTextFile(GENERATED_FILE);
  equal(actual, expected, "the embedded kernels are stale: run `deno task gen` and commit the result");
});

Deno.test("reflectWgsl() finds the bindings each entry uses, through called functions, ignoring comments", () => {
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
  const e = reflectWgsl(src).entries;
  deepEqual([...e.keys()], ["first", "second"]);
  deepEqual(e.get("first")!.bindings.map((b) => `${b.binding}:${b.kind}`), [
    "0:read",
    "1:read_write",
    "2:uniform",
  ]);
  deepEqual(e.get("first")!.uniform?.struct, "P");
  deepEqual(e.get("second")!.bindings.map((b) => `${b.binding}:${b.kind}`), ["1:read", "2:read_write"]);
  equal(e.get("second")!.uniform, null);
});

Deno.test("reflectWgsl() lays out uniform structs by WGSL's alignment rules and reads op codes", () => {
  const r = reflectWgsl(`
    const OP_ACT_RELU: u32 = 1u;
    const OP_ACT_GELU = 2u;
    override OP: u32 = 0u;
    struct S { n: u32, dims: array<vec4<u32>, 2>, k: i32, v: vec2<f32>, alpha: f32 }
    @group(0) @binding(0) var<uniform> s: S;
    @compute @workgroup_size(1) fn main() { let x = s.n; }`);
  const s = r.structs.get("S")!;
  deepEqual(s.fields.map((f) => [f.name, f.scalar, f.offset, f.count]), [
    ["n", "u32", 0, 1],
    ["dims", "u32", 16, 8], // arrays of vec4 align to 16
    ["k", "i32", 48, 1],
    ["v", "f32", 56, 2], // vec2 aligns to 8
    ["alpha", "f32", 64, 1],
  ]);
  equal(s.bytes, 80); // rounded up to 16
  deepEqual(r.overrides, ["OP"]);
  deepEqual([...r.opCodes.get("ACT")!], [["relu", 1], ["gelu", 2]]);
  throws(() => reflectWgsl(`struct T { a: array<u32, 4> } @group(0) @binding(0) var<uniform> t: T;`), /16/);
});

Deno.test("packUniforms() writes fields by name and type, and rejects missing, extra or mistyped fields", () => {
  const layout = reflectWgsl(`
    struct P { n: u32, off: i32, dims: array<vec4<u32>, 1>, scale: f32 }
    @group(0) @binding(0) var<uniform> p: P;
    @compute @workgroup_size(1) fn main() { let x = p.n; }`).structs.get("P")!;
  const out = new Uint32Array(layout.bytes / 4);
  packUniforms(layout, { n: 7, off: -2, dims: [1, 2], scale: 0.5 }, out, "t");
  deepEqual(Array.from(out.slice(0, 8)), [7, 2 ** 32 - 2, 0, 0, 1, 2, 0, 0]);
  equal(new Float32Array(out.buffer)[8], 0.5);
  throws(() => packUniforms(layout, { n: 7, off: 0, dims: [] }, out, "t"), /P\.scale is missing/);
  throws(() => packUniforms(layout, { n: 7, off: 0, dims: [], scale: 1, nn: 3 }, out, "t"), /no field "nn"/);
  throws(() => packUniforms(layout, { n: 1.5, off: 0, dims: [], scale: 1 }, out, "t"), /not an integer/);
  throws(() => packUniforms(layout, { n: 1, off: 0, dims: [1, 2, 3, 4, 5], scale: 1 }, out, "t"), /4 values/);
});

Deno.test("DispatchOptions: the generated contract makes wrong uniform fields and entries type errors", () => {
  const ok: DispatchOptions<"elementwise", "copy"> = {
    shader: "elementwise",
    entry: "copy",
    bindings: [],
    uniforms: { n: 1, x_off: 0, out_off: 0 },
    workgroups: [1],
  };
  const bad: DispatchOptions<"elementwise", "copy">[] = [
    {
      shader: "elementwise",
      entry: "copy",
      bindings: [],
      // @ts-expect-error: a misspelled field
      uniforms: { n: 1, x_of: 0, out_off: 0 },
      workgroups: [1],
    },
    // @ts-expect-error: a missing field
    { shader: "elementwise", entry: "copy", bindings: [], uniforms: { n: 1, x_off: 0 }, workgroups: [1] },
    {
      shader: "elementwise",
      entry: "copy",
      bindings: [],
      // @ts-expect-error: an extra field
      uniforms: { n: 1, x_off: 0, out_off: 0, alpha: 1 },
      workgroups: [1],
    },
  ];
  // @ts-expect-error: an override the file does not declare
  const constants: DispatchOptions<"elementwise", "copy">["constants"] = { WG: 64, TILE: 2 };
  equal(ok.entry, "copy");
  equal(bad.length, 3);
  void constants;
  equal(OP_CODES.UNARY.identity, 0);
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
