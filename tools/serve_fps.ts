/**
 * Frames per second of `serve` as a camera uses it — one client posting PNG frames one after another, each
 * answered before the next is sent, the service learning every 64 frames — for docs/streaming.md:
 *
 *   deno run -A tools/serve_fps.ts [--model fixtures/models/mnist_irb.onnx] [--frames 640] [--backend wasm]
 *
 * The stream: the held-out test digits under contrast (severity 5), class-sorted. Prints frames per second
 * over the whole run (learning steps included) and the online error.
 */
import { parseArgs } from "node:util";
import { corrupt } from "../src/data/corruptions.ts";
import { subset } from "../src/data/images.ts";
import { mnistSplit } from "../src/data/mnist.ts";
import { streamOrder } from "../src/data/order.ts";
import { pngOf, startServe } from "../tests/e2e/_serve_helpers.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
    frames: { type: "string", default: "640" },
    backend: { type: "string", default: "wasm" },
  },
});
const frames = Number(a.frames);
const { test } = await mnistSplit();
const shifted = corrupt(subset(test, Array.from({ length: frames }, (_, i) => i)), "contrast", {
  severity: 5,
});
const stream = subset(shifted, streamOrder(frames, shifted.labels, { kind: "sorted" }, 0));
const dir = await Deno.makeTempDir({ prefix: "edgetrain-fps-" });
const served = await startServe([
  "--model",
  a.model!,
  "--state",
  dir,
  "--memory",
  "64",
  "--backend",
  a.backend!,
]);
let wrong = 0;
const t0 = performance.now();
for (let i = 0; i < frames; i++) {
  const res = await fetch(`${served.url}/v1/predict`, {
    method: "POST",
    headers: { "content-type": "image/png" },
    body: pngOf(stream, i),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(JSON.stringify(body));
  if (body.class !== stream.labels![i]) wrong++;
}
const seconds = (performance.now() - t0) / 1000;
served.child.kill("SIGTERM");
await served.status;
await Deno.remove(dir, { recursive: true });
console.log(
  `serve ${a.model} --backend ${a.backend}, one client, ${frames} frames: ${(frames / seconds).toFixed(1)} ` +
    `frames/s, online error ${(100 * wrong / frames).toFixed(2)}%`,
);
