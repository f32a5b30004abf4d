import { equal, ok } from "node:assert/strict";
import { buildSteps, readNativeSources, sourceHash } from "../../tools/gen_wasm.ts";
import {
  WASM_BUILD_STEPS,
  WASM_RELAXED,
  WASM_SIMD,
  WASM_SOURCE_HASH,
} from "../../src/backend/wasm/_wasm_gen.ts";

// CI has no wasm toolchain: the test compares the hash of the sources and build steps with the one recorded
// when the embedded modules were built, rather than building them again.
Deno.test("gen_wasm: src/backend/wasm/_wasm_gen.ts was built from src/backend/wasm/native/ (run `deno task gen:wasm`)", async () => {
  const sources = await readNativeSources();
  equal(
    await sourceHash(sources),
    WASM_SOURCE_HASH,
    "the embedded wasm modules are stale: install clang-16 and lld-16, run `deno task gen:wasm`, commit the result",
  );
  const names = Object.keys(sources).sort();
  for (const v of ["relaxed", "simd"] as const) {
    equal(JSON.stringify(WASM_BUILD_STEPS[v]), JSON.stringify(buildSteps(v, names).map((s) => s.join(" "))));
  }
});

Deno.test("gen_wasm: both embedded modules are valid WebAssembly with the kernels' entry points", () => {
  for (const b64 of [WASM_RELAXED, WASM_SIMD]) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    ok(WebAssembly.validate(bytes), "module does not validate");
    const exports = WebAssembly.Module.exports(new WebAssembly.Module(bytes)).map((e) => e.name);
    for (
      const name of [
        "matmul",
        "conv2d",
        "bn_apply",
        "worker_wait",
        "worker_run",
        "set_stack_pointer",
        "heap_base",
      ]
    ) {
      ok(exports.includes(name), `missing export ${name}`);
    }
  }
});
