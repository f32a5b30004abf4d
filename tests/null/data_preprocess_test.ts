import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import type { ImageSet } from "../../src/data/images.ts";
import {
  loadPreprocessSidecar,
  mergePreprocess,
  outputShape,
  parsePreprocessArgs,
  preprocess,
  preprocessBatch,
  preprocessFromJson,
} from "../../src/data/preprocess.ts";
import { batches, visitOrder } from "../../src/data/stream.ts";

const TOL = 1e-6; // float32 rounding of values near 1

function close(actual: ArrayLike<number>, expected: number[], msg?: string): void {
  equal(actual.length, expected.length, msg);
  for (let i = 0; i < expected.length; i++) {
    ok(Math.abs(actual[i] - expected[i]) <= TOL, `${msg ?? ""} [${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

const gray = (h: number, w: number, values: number[], n = 1): ImageSet => ({
  n,
  channels: 1,
  height: h,
  width: w,
  pixels: Uint8Array.from(values),
  names: Array.from({ length: n }, (_, i) => `img${i}.png`),
});

Deno.test("preprocess() scales pixels to [0, 1] without other options", () => {
  close(preprocess(gray(1, 3, [0, 51, 255])), [0, 0.2, 1]);
});

Deno.test("preprocess() pads raw 0 before normalising, so the border becomes -mean/std", () => {
  const set = gray(2, 2, [255, 255, 255, 255]);
  // x = 1 inside, 0 on the border; (x - 0.5) / 0.25 gives 2 inside and -2 on the border.
  const out = preprocess(set, { pad: 1, mean: [0.5], std: [0.25] });
  close(out, [
    -2,
    -2,
    -2,
    -2,
    -2,
    2,
    2,
    -2,
    -2,
    2,
    2,
    -2,
    -2,
    -2,
    -2,
    -2,
  ]);
  deepEqual(outputShape(set, { pad: 1 }), { channels: 1, height: 4, width: 4 });
});

Deno.test("preprocess() resizes bilinearly with half-pixel centres (align_corners=False)", () => {
  // 1x2 [0, 1] -> 1x4: source x = (o + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped).
  close(preprocess(gray(1, 2, [0, 255]), { size: [1, 4] }), [0, 0.25, 0.75, 1]);
  // 2x2 -> 1x1 samples the centre (0.5, 0.5): the mean of the four pixels.
  close(preprocess(gray(2, 2, [0, 51, 102, 255]), { size: 1 }), [(0 + 0.2 + 0.4 + 1) / 4]);
  // Same size is the identity.
  close(preprocess(gray(2, 2, [0, 51, 102, 255]), { size: [2, 2] }), [0, 0.2, 0.4, 1]);
});

Deno.test("preprocess() replicates one channel to three, then normalises per channel", () => {
  const out = preprocess(gray(1, 2, [0, 255]), { channels: 3, mean: [0.5, 0, 1], std: [0.5, 1, 2] });
  close(out, [-1, 1, 0, 1, -0.5, 0]);
});

Deno.test("preprocess() converts three channels to one with BT.601 luma", () => {
  const set: ImageSet = { n: 1, channels: 3, height: 1, width: 1, pixels: new Uint8Array([255, 0, 0]) };
  close(preprocess(set, { channels: 1 }), [0.299]);
});

Deno.test("preprocess() pads, then resizes, then normalises (order matters)", () => {
  // 1x1 of 255, pad 1 -> 3x3 with a 1 in the centre, resize to 1x1 samples the centre exactly -> 1.
  close(preprocess(gray(1, 1, [255]), { pad: 1, size: 1, mean: [0.5], std: [0.5] }), [1]);
  // Resize to 2x2: source (o + 0.5) * 1.5 - 0.5 = 0.25, 1.75; weights mix border 0 and centre 1.
  // Corner sample at (0.25, 0.25): (1 - 0.25)^2 * 0 + ... + 0.25 * 0.25 * 1 = 0.0625.
  close(preprocess(gray(1, 1, [255]), { pad: 1, size: 2 }), [0.0625, 0.0625, 0.0625, 0.0625]);
});

Deno.test("preprocess() validates list lengths, std 0 and non-finite results with clear errors", () => {
  const set = gray(1, 2, [0, 255]);
  throws(() => preprocess(set, { channels: 3, mean: [0.1, 0.2] }), {
    message: "preprocess(): mean has 2 values [0.1, 0.2] but the model input has 3 channels (give 1 or 3)",
  });
  throws(() => preprocess(set, { std: [0] }), {
    message: "preprocess(): std[0] is 0, which would divide by zero",
  });
  throws(() => preprocess(set, { mean: [NaN] }), {
    message: "preprocess(): mean[0] is NaN, not a finite number",
  });
  // A subnormal std passes validation but overflows float32: the image is named.
  throws(
    () => preprocess(set, { std: [1e-45] }),
    /^Error: preprocess\(\): image "img0.png" has Infinity after preprocessing/,
  );
  throws(() => preprocess(set, { pad: -1 }), {
    message: "preprocess(): pad -1 is not a non-negative integer",
  });
  throws(() => preprocess(set, { size: [0, 3] }), /size \[0, 3\] is not two positive integers/);
  const rgb: ImageSet = { n: 1, channels: 3, height: 1, width: 1, pixels: new Uint8Array(3) };
  throws(() => preprocess(rgb, { channels: 4 }), {
    message: "preprocess(): images have 3 channels but the model wants 4",
  });
});

Deno.test("parsePreprocessArgs() parses single values, per-channel lists and sizes", () => {
  deepEqual(parsePreprocessArgs({ mean: "0.1307", std: "0.3081", pad: "2" }), {
    mean: [0.1307],
    std: [0.3081],
    pad: 2,
  });
  deepEqual(parsePreprocessArgs({ mean: "0.485,0.456, 0.406", size: "32", channels: "3" }), {
    mean: [0.485, 0.456, 0.406],
    size: 32,
    channels: 3,
  });
  deepEqual(parsePreprocessArgs({ size: "24x32" }).size, [24, 32]);
  deepEqual(parsePreprocessArgs({ size: "24,32" }).size, [24, 32]);
  throws(() => parsePreprocessArgs({ mean: "0.5,,0.5" }), {
    message: '--mean "0.5,,0.5" is not a number or a comma-separated list of numbers',
  });
  throws(() => parsePreprocessArgs({ std: "abc" }), /--std "abc" is not a number/);
  throws(() => parsePreprocessArgs({ pad: "1.5" }), { message: '--pad "1.5" is not an integer' });
});

Deno.test("loadPreprocessSidecar() reads MODEL.json beside MODEL.onnx and flags override it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain_sidecar_" });
  try {
    equal(await loadPreprocessSidecar(`${dir}/m.onnx`), undefined, "no sidecar is not an error");
    await Deno.writeTextFile(
      `${dir}/m.json`,
      JSON.stringify({ mean: 0.1307, std: [0.3081], pad: 2, size: [32, 32], classes: 10 }),
    );
    const side = await loadPreprocessSidecar(`${dir}/m.onnx`);
    deepEqual(side, { mean: [0.1307], std: [0.3081], pad: 2, size: [32, 32] });
    deepEqual(mergePreprocess(side, parsePreprocessArgs({ pad: "0" })), {
      mean: [0.1307],
      std: [0.3081],
      pad: 0,
      size: [32, 32],
    });
    await Deno.writeTextFile(`${dir}/m.json`, "{ mean: 1 }");
    await rejects(
      loadPreprocessSidecar(`${dir}/m.onnx`),
      /^Error: Preprocessing file ".*m.json" is not valid JSON/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  throws(() => preprocessFromJson({ std: "0.3" }, "x.json"), {
    message: 'Preprocessing file "x.json": "std" must be a number or a list of numbers, got "0.3"',
  });
  throws(
    () => preprocessFromJson({ size: [32] }, "x.json"),
    /"size" must be an integer or \[height, width\]/,
  );
});

Deno.test("batches() yields full batches then the partial last one, with labels, indices and names", () => {
  const set = {
    ...gray(1, 2, Array.from({ length: 20 }, (_, i) => i * 10), 10),
    labels: Int32Array.from({ length: 10 }, (_, i) => i % 3),
  };
  const got = [...batches(set, 4, { preprocess: { mean: [0.5] } })];
  deepEqual(got.map((b) => b.shape), [[4, 1, 1, 2], [4, 1, 1, 2], [2, 1, 1, 2]]);
  deepEqual(Array.from(got[2].indices), [8, 9]);
  deepEqual(Array.from(got[2].labels!), [2, 0]);
  deepEqual(got[2].names, ["img8.png", "img9.png"]);
  close(got[2].x, [160 / 255 - 0.5, 170 / 255 - 0.5, 180 / 255 - 0.5, 190 / 255 - 0.5]);
  equal([...batches(set, 4, { dropLast: true })].length, 2);
  throws(() => [...batches(set, 0)], { message: "batches(): batch size 0 is not a positive integer" });
  throws(() => batches(set, 2, { preprocess: { std: [0] } }).next(), /std\[0\] is 0/);
});

Deno.test("batches() shuffles deterministically by seed and visits every image once", () => {
  const set = gray(1, 1, Array.from({ length: 50 }, (_, i) => i), 50);
  const order = (seed: number) =>
    [...batches(set, 8, { shuffle: true, seed })].flatMap((b) => Array.from(b.indices));
  deepEqual(order(3), order(3));
  ok(order(3).some((v, i) => v !== order(4)[i]), "different seeds differ");
  ok(order(3).some((v, i) => v !== i), "shuffled");
  deepEqual([...order(3)].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
  deepEqual(Array.from(visitOrder(4)), [0, 1, 2, 3]);
  // The batch content is the preprocessed image at each index.
  const [first] = batches(set, 8, { shuffle: true, seed: 3 });
  close(first.x, Array.from(preprocessBatch(set, first.indices)));
  close(first.x, Array.from(first.indices, (i) => i / 255));
});
