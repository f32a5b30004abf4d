import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { corrupt, corruptImage, corruptionFamily, CORRUPTIONS } from "../../src/data/corruptions.ts";
import { poisson } from "../../src/data/corruptions_noise.ts";
import { plasmaFractal } from "../../src/data/corruptions_weather.ts";
import { affineFrom3, jpegBatch } from "../../src/data/corruptions_digital.ts";
import jpeg from "jpeg-js";
import { diskKernel } from "../../src/data/corruptions_blur.ts";
import { type ImageSet, subset } from "../../src/data/images.ts";
import { mnistSplit } from "../../src/data/mnist.ts";
import { readIdxImages, readIdxLabels } from "../../src/data/idx.ts";
import { makeStreams } from "../../tools/make_stream.ts";
import { Rng } from "../../src/random.ts";

/** Mean absolute difference in pixel levels (0..255). */
function mad(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

/** 6 real digits (1x28x28) and 2 synthetic RGB 3x32x32 scenes (gradient sky, a square, stripes). */
const digits = mnistSplit().then(({ test }) => subset(test, [0, 1, 2, 3, 4, 5]));
function scenes(): ImageSet {
  const n = 2, h = 32, w = 32, plane = h * w, pixels = new Uint8Array(n * 3 * plane);
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const inSquare = x > 8 + 4 * i && x < 20 + 4 * i && y > 10 && y < 24;
        const stripe = (x + 2 * y) % 8 < 3;
        const rgb = inSquare ? [200, 40, 40] : stripe ? [30, 160, 60] : [90 + 4 * y, 120 + 2 * x, 230];
        for (let c = 0; c < 3; c++) pixels[(i * 3 + c) * plane + y * w + x] = rgb[c];
      }
    }
  }
  return { n, channels: 3, height: h, width: w, pixels, labels: new Int32Array([4, 2]) };
}

// Corruptions without randomness: another seed must give the same output.
const DETERMINISTIC = new Set([
  "gaussian_blur",
  "defocus_blur",
  "brightness",
  "contrast",
  "pixelate",
  "jpeg_compression",
]);

for (const name of CORRUPTIONS) {
  Deno.test(`corrupt() ${name}: seeded, in range, same shape, and stronger at severity 5 than 1`, async () => {
    for (const set of [await digits, scenes()]) {
      const s1 = corrupt(set, name, { severity: 1, seed: 7 });
      const s5 = corrupt(set, name, { severity: 5, seed: 7 });
      for (const out of [s1, s5]) {
        deepEqual([out.n, out.channels, out.height, out.width], [set.n, set.channels, set.height, set.width]);
        ok(out.pixels instanceof Uint8Array && out.pixels.length === set.pixels.length);
        deepEqual(out.labels, set.labels);
      }
      deepEqual(corrupt(set, name, { severity: 5, seed: 7 }).pixels, s5.pixels, "same seed, same images");
      if (!DETERMINISTIC.has(name)) {
        notDeepEqual(corrupt(set, name, { severity: 5, seed: 8 }).pixels, s5.pixels);
      }
      const d1 = mad(s1.pixels, set.pixels), d5 = mad(s5.pixels, set.pixels);
      ok(d1 > 0, `${name} severity 1 changes the image (${set.channels} channels)`);
      ok(
        d5 > d1,
        `${name} on ${set.channels}-channel images: severity 5 (${d5.toFixed(2)}) > 1 (${d1.toFixed(2)})`,
      );
    }
  });
}

Deno.test("corruptImage() gives image i exactly what corrupt() gives it inside a set", async () => {
  const set = await digits;
  for (const name of ["shot_noise", "elastic_transform", "jpeg_compression"]) {
    const all = corrupt(set, name, { severity: 3, seed: 11 });
    const i = 4, size = 28 * 28;
    const one = corruptImage(
      { channels: 1, height: 28, width: 28, pixels: set.pixels.subarray(i * size, (i + 1) * size) },
      name,
      { severity: 3, seed: 11, index: i },
    );
    deepEqual(
      one.pixels,
      all.pixels.subarray(i * size, (i + 1) * size),
      `${name}: mosaic/batch path equals single path`,
    );
  }
});

Deno.test("jpegBatch() equals a direct jpeg-js round trip of each image, unpadded", async () => {
  const set = await digits, plane = 28 * 28;
  const imgs = [0, 1, 2].map((i) => ({
    channels: 1,
    height: 28,
    width: 28,
    data: Float32Array.from(set.pixels.subarray(i * plane, (i + 1) * plane), (v) => v / 255),
  }));
  const batch = jpegBatch(imgs, 4);
  imgs.forEach((_img, i) => {
    const rgba = new Uint8Array(plane * 4);
    for (let p = 0; p < plane; p++) {
      rgba.set([0, 1, 2].map(() => set.pixels[i * plane + p]).concat(255), 4 * p);
    }
    const enc = jpeg.encode({ data: rgba, width: 28, height: 28 }, 50); // severity 4 = quality 50
    const dec = jpeg.decode(enc.data, { useTArray: true, formatAsRGBA: false }).data;
    const want = Array.from(
      { length: plane },
      (_, p) => (dec[3 * p] + dec[3 * p + 1] + dec[3 * p + 2]) / (3 * 255),
    );
    deepEqual(Array.from(batch[i].data), Array.from(Float32Array.from(want)), `image ${i}`);
  });
});

Deno.test("corrupt() rejects unknown names and severities outside 1..5", async () => {
  const set = await digits;
  throws(
    () => corrupt(set, "snow", { severity: 1 }),
    /^Error: Unknown corruption "snow"; known: gaussian_noise, shot_noise/,
  );
  throws(() => corrupt(set, "fog", { severity: 0 }), {
    message: "corrupt(): severity 0 is not an integer from 1 to 5",
  });
  equal(corrupt(set, "jpeg", { severity: 1 }).n, set.n, '"jpeg" is an alias of jpeg_compression');
  deepEqual(
    [...new Set(CORRUPTIONS.map(corruptionFamily))],
    ["noise", "blur", "weather", "digital"],
  );
  equal(CORRUPTIONS.length, 13);
});

Deno.test("corrupt() gaussian_noise adds noise of std c = 0.08 at severity 3 on mid-gray", () => {
  const n = 64 * 64,
    set: ImageSet = { n: 1, channels: 1, height: 64, width: 64, pixels: new Uint8Array(n).fill(128) };
  const out = corrupt(set, "gaussian_noise", { severity: 3, seed: 1 }).pixels;
  let s = 0, s2 = 0;
  for (const v of out) s += v - 128, s2 += (v - 128) ** 2;
  const std = Math.sqrt(s2 / n - (s / n) ** 2) / 255;
  ok(Math.abs(std - 0.08) < 0.004, `std ${std} vs 0.08 (5% tolerance for 4096 samples + rounding)`);
});

Deno.test("corrupt() contrast and brightness follow their formulas on a tiny gray image", () => {
  const set: ImageSet = { n: 1, channels: 1, height: 1, width: 2, pixels: new Uint8Array([0, 200]) };
  // contrast severity 2: c = 0.5, mean 100 -> (x - 100) * 0.5 + 100 = 50, 150.
  deepEqual(Array.from(corrupt(set, "contrast", { severity: 2 }).pixels), [50, 150]);
  // brightness severity 5: V + 0.3 (gray: V is the value) -> 0 + 76.5 = 77 (rounded), 200 + 76.5 = 255 (clipped).
  deepEqual(Array.from(corrupt(set, "brightness", { severity: 5 }).pixels), [77, 255]);
  // RGB keeps hue and saturation: (100, 50, 0) with V = 100/255 -> scaled by (V + 0.05) / V.
  const rgb: ImageSet = { n: 1, channels: 3, height: 1, width: 1, pixels: new Uint8Array([100, 50, 0]) };
  const k = (100 / 255 + 0.05) / (100 / 255);
  deepEqual(
    Array.from(corrupt(rgb, "brightness", { severity: 1 }).pixels),
    [100, 50, 0].map((v) => Math.round(v * k)),
  );
});

Deno.test("poisson() has mean and variance lambda for small and large lambda", () => {
  const rng = new Rng(5);
  for (const lambda of [3, 40, 400]) {
    const n = 20000;
    let s = 0, s2 = 0;
    for (let i = 0; i < n; i++) {
      const k = poisson(lambda, rng);
      s += k;
      s2 += k * k;
    }
    const mean = s / n, variance = s2 / n - mean * mean;
    // Standard error of the mean is sqrt(lambda / n); 5 of them, and 8% on the variance.
    ok(Math.abs(mean - lambda) < 5 * Math.sqrt(lambda / n), `lambda ${lambda}: mean ${mean}`);
    ok(Math.abs(variance / lambda - 1) < 0.08, `lambda ${lambda}: variance ${variance}`);
  }
});

Deno.test("plasmaFractal() spans [0, 1] and is seeded", () => {
  const a = plasmaFractal(32, 2, new Rng(1)), b = plasmaFractal(32, 2, new Rng(1));
  deepEqual(a, b);
  equal(Math.min(...a), 0);
  equal(Math.max(...a), 1);
  throws(() => plasmaFractal(30, 2, new Rng(1)), /size 30 is not a power of two/);
});

Deno.test("affineFrom3() maps the three points onto their targets", () => {
  const from = [[0, 0], [10, 0], [0, 10]], to = [[1, 2], [11, 3], [0, 12]];
  const [a, b, c, d, e, f] = affineFrom3(from, to);
  from.forEach(([x, y], i) => {
    ok(Math.abs(a * x + b * y + c - to[i][0]) < 1e-9 && Math.abs(d * x + e * y + f - to[i][1]) < 1e-9);
  });
});

Deno.test("diskKernel() sums to 1 and is symmetric", () => {
  const k = diskKernel(1.5, 0.1), size = Math.sqrt(k.length);
  ok(Math.abs(k.reduce((s, v) => s + v, 0) - 1) < 1e-6);
  for (let i = 0; i < k.length; i++) ok(Math.abs(k[i] - k[k.length - 1 - i]) < 1e-7);
  equal(size, 7);
});

Deno.test("makeStreams() writes IDX images and labels per corruption and a manifest", async () => {
  const out = await Deno.makeTempDir({ prefix: "edgetrain_stream_" });
  try {
    const files = await makeStreams({
      corruptions: ["clean", "fog"],
      severities: [1, 5],
      n: 20,
      out,
      seed: 3,
      gzip: true,
    });
    deepEqual(files.map((f) => f.images), [
      "clean-images-idx3-ubyte.gz",
      "fog-s1-images-idx3-ubyte.gz",
      "fog-s5-images-idx3-ubyte.gz",
    ]);
    const clean = await readIdxImages(`${out}/clean-images-idx3-ubyte.gz`);
    const fog5 = await readIdxImages(`${out}/fog-s5-images-idx3-ubyte.gz`);
    const { test } = await mnistSplit();
    deepEqual(clean.pixels, test.pixels.subarray(0, 20 * 784), "clean is the first 20 test images");
    deepEqual(
      fog5.pixels,
      corrupt(subset(test, Array.from({ length: 20 }, (_, i) => i)), "fog", { severity: 5, seed: 3 }).pixels,
    );
    deepEqual(await readIdxLabels(`${out}/fog-s5-labels-idx1-ubyte.gz`), test.labels!.slice(0, 20));
    const manifest = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`));
    deepEqual([manifest.n, manifest.seed, manifest.files.length], [20, 3, 3]);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
