/**
 * Decoded pixels and Resize/CenterCrop against PIL and torchvision, to the pixel. The fixtures and goldens are
 * made offline by tools/fixtures/make_image_goldens.py (Debian's python3-pil 9.4 with libjpeg-turbo 2.1.5 and
 * libwebp 1.2.4, python3-torchvision 0.14); see fixtures/data/goldens/goldens.json.
 */
import { deepEqual, equal } from "node:assert/strict";
import { decodeImageChecked } from "../../src/data/decode.ts";
import { readImageFolder } from "../../src/data/folder.ts";
import { applyGeometry, type Geometry } from "../../src/data/geometry.ts";
import type { DecodedImage } from "../../src/data/images.ts";

const DIR = new URL("../../fixtures/data/goldens/", import.meta.url).pathname;

interface Case {
  kind: "decode" | "resize" | "imagefolder";
  name: string;
  file: string;
  width: number;
  height: number;
  channels: number;
  golden: string;
  steps?: ["resize" | "center_crop", number | [number, number]][];
  classes?: string[];
  samples?: [string, number][];
}

const CASES: Case[] = JSON.parse(Deno.readTextFileSync(`${DIR}goldens.json`)).cases;

/** Max and mean |ours - golden| over every sample (golden is H x W x C). */
function compare(img: DecodedImage, c: Case): { max: number; mean: number } {
  equal(`${img.channels}x${img.height}x${img.width}`, `${c.channels}x${c.height}x${c.width}`, c.name);
  const gold = Deno.readFileSync(`${DIR}${c.golden}`);
  const plane = c.width * c.height;
  let max = 0, sum = 0;
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < c.channels; ch++) {
      const d = Math.abs(img.pixels[ch * plane + p] - gold[p * c.channels + ch]);
      max = Math.max(max, d);
      sum += d;
    }
  }
  return { max, mean: sum / gold.length };
}

function decodeCases(prefix: string): Case[] {
  return CASES.filter((c) => c.kind === "decode" && c.name.startsWith(prefix));
}

Deno.test("decodeImageChecked() JPEG pixels equal PIL's: RGB 4:2:0, 4:2:2, 4:4:4, gray, progressive, restarts (issue 13 item 7)", () => {
  const cases = decodeCases("jpeg_");
  const names = cases.map((c) => c.name).join(" ");
  for (const want of ["rgb_420", "rgb_422", "rgb_444", "gray", "progressive", "restart"]) {
    equal(names.includes(want), true, `fixture set covers ${want}`);
  }
  for (const c of cases) {
    const img = decodeImageChecked(Deno.readFileSync(`${DIR}${c.file}`), { name: c.file });
    deepEqual(compare(img, c), { max: 0, mean: 0 }, `${c.name}: pixels equal PIL's`);
  }
});

Deno.test("decodeImageChecked() WebP and BMP pixels equal PIL's (issue 13 item 6)", () => {
  const cases = [...decodeCases("webp_"), ...decodeCases("bmp_")];
  equal(cases.length, 7);
  for (const c of cases) {
    const img = decodeImageChecked(Deno.readFileSync(`${DIR}${c.file}`), { name: c.file });
    deepEqual(compare(img, c), { max: 0, mean: 0 }, `${c.name}: pixels equal PIL's`);
  }
});

Deno.test("applyGeometry() equals torchvision Resize/CenterCrop on PIL images: down, up, HxW, odd crops, padding (issue 13 item 6)", () => {
  const cases = CASES.filter((c) => c.kind === "resize");
  equal(cases.length, 12);
  for (const c of cases) {
    const g: Geometry = {};
    for (const [op, arg] of c.steps!) {
      if (op === "resize") g.resize = arg;
      else g.centerCrop = arg;
    }
    const src = decodeImageChecked(Deno.readFileSync(`${DIR}${c.file}`));
    deepEqual(compare(applyGeometry(src, g), c), { max: 0, mean: 0 }, `${c.name} ${JSON.stringify(c.steps)}`);
  }
});

Deno.test("readImageFolder() finds the classes and samples torchvision's ImageFolder finds, in its order (issue 13 item 6)", async () => {
  const c = CASES.find((c) => c.kind === "imagefolder")!;
  const { set, errors } = await readImageFolder(`${DIR}${c.file}`);
  deepEqual(errors, []);
  deepEqual(set.classes, c.classes);
  deepEqual(set.names!.map((n, i) => [n, set.labels![i]]), c.samples);
  equal(set.labelWhere!(3), 'class folder "a_lower"');
});
