/** Issue 14 (low): `adapt --save-state` into a folder that does not exist fails before the run, not after it. */
import { equal, ok } from "node:assert/strict";
import { runCli, stream } from "./_cli.ts";

Deno.test("edgetrain adapt --save-state into a missing folder fails before the run (issue 14: --save-state)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-save-" });
  const target = `${dir}/missing/state.etck`;
  const r = await runCli([
    "adapt",
    "--model",
    "fixtures/models/torch_mnist_cnn_preserve.onnx",
    "--method",
    "tent",
    ...stream("fog-s5"),
    "--backend",
    "cpu",
    "--save-state",
    target,
    "--json",
  ], { env: { EDGETRAIN_DEBUG: "" } });
  equal(r.code, 2, r.stderr);
  ok(r.stderr.includes(`--save-state "${target}": folder "${dir}/missing" does not exist`), r.stderr);
  equal(r.stdout, "", "nothing was run");
  // A folder that exists but is a file is refused the same way.
  await Deno.writeTextFile(`${dir}/file`, "x");
  const f = await runCli([
    "adapt",
    "--model",
    "m.onnx",
    "--images",
    "i",
    "--save-state",
    `${dir}/file/s.etck`,
  ]);
  equal(f.code, 2, f.stderr);
  ok(/is not a folder/.test(f.stderr), f.stderr);
  await Deno.remove(dir, { recursive: true });
});
