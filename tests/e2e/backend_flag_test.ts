/**
 * --backend wasm, --threads and --backend auto through the CLI: the wasm backend answers like the CPU
 * reference, a machine without WebGPU gets wasm (not the scalar CPU backend), and bad values are usage errors.
 */
import { equal, match, ok } from "node:assert/strict";
import { runCli, stream } from "./_cli.ts";

const MODEL = "fixtures/models/mnist_irb.onnx";

Deno.test("edgetrain predict --backend wasm --threads 2 agrees with --backend cpu", async () => {
  const args = ["predict", "--model", MODEL, ...stream("clean"), "--batch", "200", "--json"];
  const [wasm, cpu] = await Promise.all([
    runCli([...args, "--backend", "wasm", "--threads", "2"]),
    runCli([...args, "--backend", "cpu"]),
  ]);
  equal(wasm.code, 0, wasm.stderr);
  equal(cpu.code, 0, cpu.stderr);
  const w = JSON.parse(wasm.stdout), c = JSON.parse(cpu.stdout);
  equal(w.backend, "wasm");
  equal(c.backend, "cpu");
  // Same predictions up to f32 summation order: the error rates agree to within one image in 2,000.
  ok(Math.abs(w.error - c.error) <= 1 / 2000 + 1e-12, `wasm error ${w.error} vs cpu ${c.error}`);
});

Deno.test("edgetrain --backend auto uses wasm where WebGPU is missing, and --threads is checked", async () => {
  // Without --unstable-webgpu navigator.gpu does not exist: the machine has no WebGPU at all.
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "predict", "--model", MODEL, ...stream("clean"), "--batch", "500", "--json"],
    env: { EDGETRAIN_PROGRESS: "0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  equal(out.code, 0, dec.decode(out.stderr));
  equal(JSON.parse(dec.decode(out.stdout)).backend, "wasm");
  const bad = await runCli(["predict", "--model", MODEL, ...stream("clean"), "--threads", "0"]);
  equal(bad.code, 2);
  match(bad.stderr, /--threads "0" must be a whole number from 1 to 256/);
  const unknown = await runCli(["predict", "--model", MODEL, ...stream("clean"), "--backend", "tpu"]);
  equal(unknown.code, 2);
  match(unknown.stderr, /--backend "tpu" is not one of webgpu, wasm, cpu, auto/);
});
