/**
 * `deno task budget`: `adapt --budget 512MiB --memory auto` on torchvision's mobilenet_v2 (PRESERVE export)
 * at 224x224 holds the budget for the whole process, within 10% of the prediction, on the CPU backend and
 * on WebGPU (tests/e2e/_budget.ts). The 224 model is the fixture with its input rewritten, made here; a few
 * chunks of MNIST-C fog, upscaled, keep it to about a minute on two cores.
 */
import { adaptWithinBudget, firstImages, hasWebGpu } from "./_budget.ts";
import { STREAMS } from "./_cli.ts";
import { writeMobileNetV2At } from "./_mobilenet224.ts";

const PREPROCESS = ["--size", "224", "--channels", "3", "--mean", "0.5", "--std", "0.25"];

async function mobilenet(images: number, backend: "cpu" | "webgpu") {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-budget-" });
  try {
    const model = `${dir}/mobilenet_v2_224.onnx`;
    await writeMobileNetV2At(model, 224);
    const idx = await firstImages(`${STREAMS}/fog-s5-images-idx3-ubyte.gz`, images, `${dir}/fog-idx3-ubyte`);
    const run = await adaptWithinBudget(["--model", model, "--images", idx, ...PREPROCESS], backend);
    console.log(
      `${backend}: ${run.method} memory ${run.memory} ${run.store}; process ${run.process_peak_bytes} B, ` +
        `predicted ${run.predicted_process_peak_bytes} B`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("edgetrain adapt --budget 512MiB --memory auto keeps mobilenet_v2 at 224 within the budget and the prediction (cpu)", async () => {
  await mobilenet(24, "cpu");
});

Deno.test("edgetrain adapt --budget 512MiB --memory auto keeps mobilenet_v2 at 224 within the budget and the prediction (webgpu)", async () => {
  if (await hasWebGpu()) await mobilenet(8, "webgpu");
});
