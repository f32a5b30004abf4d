/**
 * A seeded slice of `deno task fuzz` (tools/fuzz.ts), issue 14: mutated PNG, JPEG, WebP, BMP, IDX, ONNX and
 * checkpoint bytes through the real parsers; none may throw anything but the parser's own error. The whole
 * campaign (100,000 inputs) is the task; this slice keeps the harness itself honest in every test run.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { FORMATS, runFuzz } from "../../tools/fuzz.ts";

Deno.test("runFuzz() over 1,400 mutated inputs of every format finds no crash (issue 14: fuzz)", async () => {
  const report = await runFuzz({ seed: 14, count: 1400 });
  equal(report.inputs, 1400);
  deepEqual(Object.keys(report.byFormat).sort(), [...FORMATS].sort());
  deepEqual(report.crashes, []);
  // The mutations reach past the parsers' first checks: some inputs of each image format still decode.
  for (const f of ["png", "jpeg", "webp", "bmp", "onnx"]) {
    ok((report.accepted[f] ?? 0) > 0, `${f}: ${JSON.stringify(report.accepted)}`);
  }
});
