/**
 * `adapt --budget 512MiB --memory auto` on the demo model holds the budget for the whole process, as
 * predicted (tests/e2e/_budget.ts). mobilenet_v2 at 224x224, slower, is in `deno task budget`
 * (tests/e2e/budget_mobilenet.ts).
 */
import { adaptWithinBudget, firstImages, hasWebGpu } from "./_budget.ts";
import { STREAMS } from "./_cli.ts";

async function demo(backend: "cpu" | "webgpu") {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-budget-" });
  try {
    // Three chunks of 64 fog digits: enough for the first step's JIT and a steady one.
    const images = await firstImages(`${STREAMS}/fog-s5-images-idx3-ubyte.gz`, 192, `${dir}/fog-idx3-ubyte`);
    await adaptWithinBudget(["--model", "fixtures/models/mnist_irb.onnx", "--images", images], backend);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("edgetrain adapt --budget 512MiB --memory auto keeps the demo model's process within the budget and the prediction (cpu)", async () => {
  await demo("cpu");
});

Deno.test("edgetrain adapt --budget 512MiB --memory auto keeps the demo model's process within the budget and the prediction (webgpu)", async () => {
  if (await hasWebGpu()) await demo("webgpu");
});
