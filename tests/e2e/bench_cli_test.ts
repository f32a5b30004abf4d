import { equal, ok } from "node:assert/strict";
import { runCli } from "./_cli.ts";

Deno.test("edgetrain bench --json reports kernel throughput and a measured TENT step", async () => {
  const r = await runCli(["bench", "--backend", "cpu", "--batch", "8", "--steps", "1", "--json"]);
  equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  equal(out.backend, "cpu");
  for (const k of ["copy_gbps", "matmul_gflops", "conv_gflops", "depthwise_gflops"]) ok(out[k] > 0, k);
  equal(out.tent_step.batch, 8);
  ok(out.tent_step.ms_per_step > 0);
  ok(out.tent_step.peak_saved_bytes > 0 && out.tent_step.peak_bytes >= out.tent_step.peak_saved_bytes);
});
