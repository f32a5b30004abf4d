/**
 * Prints how far decoded pixels and Resize/CenterCrop outputs are from PIL's and torchvision's, per fixture
 * of fixtures/data/goldens (made by tools/fixtures/make_image_goldens.py):
 *
 *   deno run -A tools/image_parity.ts
 *
 * For JPEGs it also shows jpeg-js (the pure-JS decoder edgetrain used before) next to libjpeg-turbo.
 */
import jpeg from "jpeg-js";
import { decodeImageChecked } from "../src/data/decode.ts";
import { applyGeometry, type Geometry } from "../src/data/geometry.ts";

const dir = new URL("../fixtures/data/goldens/", import.meta.url).pathname;
const { cases } = JSON.parse(await Deno.readTextFile(`${dir}goldens.json`));

/** Max and mean |a - golden| where `at(p, c)` reads a planar or interleaved sample. */
function diff(
  gold: Uint8Array,
  c: { width: number; height: number; channels: number },
  at: (p: number, ch: number) => number,
) {
  let max = 0, sum = 0;
  const plane = c.width * c.height;
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < c.channels; ch++) {
      const d = Math.abs(at(p, ch) - gold[p * c.channels + ch]);
      max = Math.max(max, d);
      sum += d;
    }
  }
  return `max ${max} mean ${(sum / gold.length).toFixed(3)}`;
}

for (const c of cases) {
  if (c.kind === "imagefolder") continue;
  const gold = await Deno.readFile(`${dir}${c.golden}`);
  const bytes = await Deno.readFile(`${dir}${c.file}`);
  let img = decodeImageChecked(bytes);
  if (c.kind === "resize") {
    const g: Geometry = {};
    for (const [op, arg] of c.steps) op === "resize" ? (g.resize = arg) : (g.centerCrop = arg);
    img = applyGeometry(img, g);
  }
  const plane = c.width * c.height;
  const ours = diff(gold, c, (p, ch) => img.pixels[ch * plane + p]);
  let before = "";
  if (c.file.endsWith(".jpg")) {
    const js = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
    before = `   jpeg-js: ${diff(gold, c, (p, ch) => js.data[p * 3 + ch])}`;
  }
  console.log(`${c.name.padEnd(40)} edgetrain: ${ours}${before}`);
}
