import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { decodeImage, type ImageSet, loadImages, subset } from "../../src/data/images.ts";
import { readImageFolder } from "../../src/data/folder.ts";
import { parseLabelsText } from "../../src/data/labels.ts";
import { loadMnist, mnistSplit, splitSet } from "../../src/data/mnist.ts";

// Made by fixtures/data/make_images.ts: 4x3 images, see the values there.
const FIXTURE = new URL("../../fixtures/data/images", import.meta.url).pathname;
const ramp = Array.from({ length: 12 }, (_, i) => 20 * i);

Deno.test("readImageFolder() decodes PNG/JPEG in name order, reports the broken file and reads labels.csv", async () => {
  const { set, errors } = await readImageFolder(FIXTURE);
  deepEqual(set.names, ["00_gray.png", "01_rgb.png", "02_gray16.png", "03_flat.jpg"]);
  deepEqual([set.n, set.channels, set.height, set.width], [4, 3, 4, 3], "one RGB image makes the set RGB");
  deepEqual(Array.from(set.labels!), [3, 1, 4, 1]);
  equal(errors.length, 1);
  equal(errors[0].name, "04_broken.png");
  ok(errors[0].message.startsWith(`Cannot read image "${FIXTURE}/04_broken.png": `), errors[0].message);
  const img = (i: number, c: number) =>
    Array.from(set.pixels.subarray((i * 3 + c) * 12, (i * 3 + c + 1) * 12));
  for (let c = 0; c < 3; c++) deepEqual(img(0, c), ramp, "8-bit gray replicated to every channel");
  deepEqual(img(1, 0), ramp.map((v) => v / 2), "R = 10 * i");
  deepEqual(img(1, 1), Array(12).fill(100));
  deepEqual(img(1, 2), ramp.map((v) => 255 - v / 2), "alpha dropped, B = 255 - 10 * i");
  deepEqual(img(2, 0), ramp, "16-bit gray scaled to 8 bits");
  // Quality-100 JPEG of a flat colour: within 3 levels (chroma rounding in YCbCr).
  [60, 120, 180].forEach((want, c) =>
    ok(img(3, c).every((v: number) => Math.abs(v - want) <= 3), `jpeg channel ${c}: ${img(3, c)}`)
  );
});

Deno.test("readImageFolder() converts to one channel with BT.601 luma when asked", async () => {
  const { set } = await readImageFolder(FIXTURE, { channels: 1 });
  equal(set.channels, 1);
  deepEqual(Array.from(set.pixels.subarray(0, 12)), ramp);
  // 0.299 * 10i + 0.587 * 100 + 0.114 * (255 - 10i) rounded.
  deepEqual(
    Array.from(set.pixels.subarray(12, 24)),
    ramp.map((_, i) => Math.round(0.299 * 10 * i + 58.7 + 0.114 * (255 - 10 * i))),
  );
});

Deno.test("loadImages() fails on an unreadable file by name unless told to skip it", async () => {
  await rejects(
    loadImages(FIXTURE),
    /^Error: Cannot read image ".*04_broken.png": .*\(1 of 5 files unreadable\)$/,
  );
  const skipped: string[] = [];
  const set = await loadImages(FIXTURE, { skipUnreadable: true, onSkip: (e) => skipped.push(e.name) });
  equal(set.n, 4);
  deepEqual(skipped, ["04_broken.png"]);
});

Deno.test("readImageFolder() takes one label per line in sorted order and rejects wrong counts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain_folder_" });
  try {
    for (const f of ["00_gray.png", "02_gray16.png", "04_broken.png"]) {
      await Deno.copyFile(`${FIXTURE}/${f}`, `${dir}/${f}`);
    }
    await Deno.writeTextFile(`${dir}/labels.txt`, "# digits\n7\n\n8\n9\n");
    const { set, errors } = await readImageFolder(dir);
    deepEqual(Array.from(set.labels!), [7, 8], "the broken file drops its own label only");
    equal(set.channels, 1, "all gray: auto picks one channel");
    equal(errors.length, 1);
    await Deno.writeTextFile(`${dir}/labels.txt`, "7\n8\n");
    await rejects(readImageFolder(dir), {
      message: `Labels file "${dir}/labels.txt" has 2 labels but "${dir}" has 3 image files`,
    });
    await Deno.writeTextFile(`${dir}/labels.txt`, "00_gray.png 1\n04_broken.png 2\n");
    await rejects(readImageFolder(dir), {
      message: `Labels file "${dir}/labels.txt" has no label for image "02_gray16.png"`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseLabelsText() accepts name,label with a header, tabs, or a plain list, and rejects the rest", () => {
  deepEqual(parseLabelsText("name,label\na.png,1\nb.png, 2\r\nc.png\t3\n", "l"), {
    byName: new Map([["a.png", { label: 1, line: 2 }], ["b.png", { label: 2, line: 3 }], [
      "c.png",
      { label: 3, line: 4 },
    ]]),
  });
  deepEqual(parseLabelsText("1\n# x\n 2 \n", "l"), { list: [{ label: 1, line: 1 }, { label: 2, line: 3 }] });
  throws(() => parseLabelsText("a.png,1\nb.png\n", "l"), {
    message: 'Labels file "l" line 2: "b.png" is not "name,label"',
  });
  throws(() => parseLabelsText("1\n-1\n", "l"), { message: 'Labels file "l" line 2: label -1 is negative' });
});

Deno.test("parseLabelsText() maps class-name labels through the class list, else sorted names", () => {
  deepEqual(parseLabelsText("file,class\na.png,dog\nb.png,cat\nc.png,dog\n", "l"), {
    byName: new Map([["a.png", { label: 1, line: 2 }], ["b.png", { label: 0, line: 3 }], [
      "c.png",
      { label: 1, line: 4 },
    ]]),
    classes: ["cat", "dog"],
  });
  deepEqual(
    parseLabelsText("dog\ncat\n", "l", { classes: ["zebra", "dog", "cat"] }),
    { list: [{ label: 1, line: 1 }, { label: 2, line: 2 }] },
  );
  throws(() => parseLabelsText("dog\n\nemu\n", "l", { classes: ["cat", "dog"] }), {
    message: 'Labels file "l" line 3: class "emu" is not one of the 2 class names (cat, dog)',
  });
});

Deno.test("decodeImage() rejects bytes of an unknown format with a one-line reason", () => {
  throws(() => decodeImage(new Uint8Array([1, 2, 3, 4])), {
    message: "unknown format: not a PNG, JPEG, WebP or BMP file (by its first bytes)",
  });
  throws(() => decodeImage(new TextEncoder().encode("GIF89a....")), {
    message: "GIF is not a supported format (PNG, JPEG, WebP or BMP)",
  });
});

Deno.test("subset() copies images, labels and names in the given order", () => {
  const set: ImageSet = {
    n: 3,
    channels: 1,
    height: 1,
    width: 2,
    pixels: new Uint8Array([1, 2, 3, 4, 5, 6]),
    labels: new Int32Array([7, 8, 9]),
    names: ["a", "b", "c"],
  };
  const s = subset(set, [2, 0]);
  deepEqual([Array.from(s.pixels), Array.from(s.labels!), s.names], [[5, 6, 1, 2], [9, 7], ["c", "a"]]);
  throws(() => subset(set, [3]), { message: "subset(): index 3 is outside 0..2" });
});

Deno.test("loadMnist() loads 10,000 28x28 digits with roughly balanced labels 0..9", async () => {
  const set = await loadMnist();
  deepEqual([set.n, set.channels, set.height, set.width, set.pixels.length], [10000, 1, 28, 28, 10000 * 784]);
  const hist = Array(10).fill(0);
  for (const l of set.labels!) hist[l]++;
  // The package's per-digit counts; every class is 8.6%..11.3% of the set.
  deepEqual(hist, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
  ok(hist.every((h) => h > 800 && h < 1200));
  let max = 0, ink = 0;
  for (const v of set.pixels) max = Math.max(max, v), ink += v > 128 ? 1 : 0;
  equal(max, 255);
  // MNIST digits cover ~10-20% of the 28x28 field with bright strokes.
  const frac = ink / set.pixels.length;
  ok(frac > 0.08 && frac < 0.25, `bright fraction ${frac}`);
  equal(set.names![1001], "mnist/1/0000");
});

Deno.test("mnistSplit() is a deterministic seeded 8,000 / 2,000 split with no overlap", async () => {
  const a = await mnistSplit(), b = await mnistSplit();
  deepEqual([a.train.n, a.test.n], [8000, 2000]);
  deepEqual(a.test.names, b.test.names);
  const train = new Set(a.train.names);
  ok(a.test.names!.every((n) => !train.has(n)));
  const hist = Array(10).fill(0);
  for (const l of a.test.labels!) hist[l]++;
  ok(hist.every((h) => h > 140 && h < 260), `test histogram ${hist}`);
  const c = splitSet(await loadMnist(), { test: 2000, seed: 1 });
  ok(c.test.names!.some((n, i) => n !== a.test.names![i]), "another seed gives another split");
});
