import { ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { noGrad } from "../../src/autograd/tape.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { ortForward } from "../../src/onnx/ort.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { maxRelDiff } from "../_compare.ts";

Deno.test("moduleToOnnx() writes an IRB net that onnxruntime-web runs with edgetrain's eval outputs", async () => {
  const b = new CpuBackend();
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10, seed: 5 });
  // Non-trivial running statistics so that eval-mode BN matters.
  const warm = Tensor.from(b, new Rng(1).normals(16 * 32 * 32, 2), [16, 1, 32, 32]);
  noGrad(() => net.call(warm)).dispose();
  net.eval();
  const data = new Rng(2).normals(4 * 32 * 32);
  const x = Tensor.from(b, data, [4, 1, 32, 32]);
  const ours = await noGrad(() => net.call(x)).data();
  const bytes = await moduleToOnnx(net, { inputShape: [1, 32, 32] });
  const ref = await ortForward(bytes, { data, dims: [4, 1, 32, 32] });
  const err = maxRelDiff(ours, ref.data);
  ok(err <= 1e-4, `max relative difference ${err}`);
});
