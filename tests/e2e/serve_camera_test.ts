/**
 * `serve` as a camera uses it: one client posting frames one after another. Every answer comes from the current
 * model with its target statistics (never normalised by a batch of one) and the service learns from its
 * memory bank every K frames, so its online error is what `adapt --batch 1` measures on the same stream.
 */
import { equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { corrupt } from "../../src/data/corruptions.ts";
import { subset } from "../../src/data/images.ts";
import { mnistSplit } from "../../src/data/mnist.ts";
import { streamOrder } from "../../src/data/order.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { runAdaptation } from "../../src/methods/run.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { loadModel } from "../../src/onnx/model.ts";
import { MNIST_PRE, pngOf, startServe, writeSmallModel } from "./_serve_helpers.ts";

const FRAMES = 240;
const MEMORY = 32;

Deno.test("serve: one client posting frames one by one gets adapt --batch 1's online error (default method)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-camera-" });
  const modelPath = await writeSmallModel(dir, { trainImages: 2000 });
  const { test } = await mnistSplit();
  // Contrast shifts the BN statistics; sorted by class, as a camera watching one thing at a time would.
  const shifted = corrupt(subset(test, Array.from({ length: FRAMES }, (_, i) => i)), "contrast", {
    severity: 4,
    seed: 3,
  });
  const stream = subset(shifted, streamOrder(FRAMES, shifted.labels, { kind: "sorted" }, 1));

  const cpu = new CpuBackend();
  const model = importOnnx(cpu, await loadModel(modelPath));
  const ref = await createMethod("rotta", model, { stream: { capacity: MEMORY } });
  const adapt = await runAdaptation(cpu, ref, [{ name: "contrast", set: stream }], {
    batch: 1,
    preprocess: MNIST_PRE,
  });
  const source = await createMethod("source", importOnnx(cpu, await loadModel(modelPath)));
  const unadapted = await runAdaptation(cpu, source, [{ name: "contrast", set: stream }], {
    batch: 1,
    preprocess: MNIST_PRE,
  });

  const served = await startServe([
    "--model",
    modelPath,
    "--state",
    `${dir}/state`,
    "--memory",
    String(MEMORY),
    "--backend",
    "cpu",
  ]);
  let wrong = 0;
  const t0 = performance.now();
  for (let i = 0; i < FRAMES; i++) {
    const res = await fetch(`${served.url}/v1/predict`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: pngOf(stream, i),
    });
    const body = await res.json();
    equal(res.status, 200, JSON.stringify(body));
    equal(body.batch, 1, "a sequential client's frames are answered one at a time");
    if (body.class !== stream.labels![i]) wrong++;
  }
  const fps = FRAMES / ((performance.now() - t0) / 1000);
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  ok(served.lines.some((l) => l.includes("rotta")), "rotta is the service's default method");

  const error = wrong / FRAMES;
  console.log(
    `serve, one client, ${FRAMES} frames: online error ${(100 * error).toFixed(2)}% ` +
      `(adapt --batch 1 ${(100 * adapt.error!).toFixed(2)}%, unadapted ${
        (100 * unadapted.error!).toFixed(2)
      }%), ` +
      `${fps.toFixed(1)} frames/s with ${adapt.adaptation_steps} learning steps`,
  );
  ok(Math.abs(error - adapt.error!) <= 0.02, `serve ${error} vs adapt ${adapt.error}`);
  ok(adapt.adaptation_steps >= FRAMES / MEMORY - 1, "the service's twin learned every MEMORY frames");
  ref.dispose();
  source.dispose();
  cpu.dispose();
  await Deno.remove(dir, { recursive: true });
});
