/**
 * Hostile and broken inputs for the readers (issue 14): decompression bombs refused before any memory is
 * spent, bad CRCs, bad labels. Memory is measured as the growth of this process's RSS across the call; a
 * decoded bomb would add gigabytes.
 */
import { equal, match, ok, rejects, throws } from "node:assert/strict";
import { decodeForModel, decodeImageChecked } from "../../src/data/decode.ts";
import { ImageDecodeError } from "../../src/data/decode_error.ts";
import { readImageFolder } from "../../src/data/folder.ts";
import { gzip, readIdxImages } from "../../src/data/idx.ts";
import { checkLabelRange, readLabels } from "../../src/data/labels.ts";
import { loadImages } from "../../src/data/images.ts";

const BOMBS = new URL("../../fixtures/data/bombs/", import.meta.url).pathname;
const IMAGES = new URL("../../fixtures/data/images/", import.meta.url).pathname;
const GOLDENS = new URL("../../fixtures/data/goldens/", import.meta.url).pathname;
const MiB = 2 ** 20;

/** Runs `f` and returns what it threw, with how much the process's RSS grew meanwhile. */
async function refusal(f: () => unknown): Promise<{ error: Error; grewMiB: number }> {
  const before = Deno.memoryUsage().rss;
  try {
    await f();
  } catch (e) {
    return { error: e as Error, grewMiB: (Deno.memoryUsage().rss - before) / MiB };
  }
  throw new Error("expected a refusal");
}

function oneLine(e: Error): void {
  ok(!e.message.includes("\n"), `one line: ${e.message}`);
}

Deno.test("decodeImageChecked() refuses a 2 MB PNG declaring 46000x46000 before decoding (issue 14 item 1)", async () => {
  const bytes = await Deno.readFile(`${BOMBS}png_46000x46000.png`);
  ok(bytes.length > 2_000_000);
  const { error, grewMiB } = await refusal(() => decodeImageChecked(bytes, { name: "bomb.png" }));
  ok(error instanceof ImageDecodeError);
  equal(error.kind, "too-large");
  equal(
    error.message,
    'Cannot read image "bomb.png": PNG declares 46000x46000 = 2116000000 pixels, over the limit of 67108864 ' +
      "(--max-pixels); refused before decoding",
  );
  ok(grewMiB < 64, `RSS grew ${grewMiB} MiB`);
});

Deno.test("decodeImageChecked() refuses a valid 20000x20000 PNG of 390 KB by its header (issue 14 item 1)", async () => {
  const bytes = await Deno.readFile(`${BOMBS}png_20000x20000.png`);
  const { error, grewMiB } = await refusal(() => decodeImageChecked(bytes));
  equal((error as ImageDecodeError).kind, "too-large");
  oneLine(error);
  ok(grewMiB < 64, `RSS grew ${grewMiB} MiB`);
  // A caller's size requirement is checked on the header too.
  const small = await Deno.readFile(`${IMAGES}00_gray.png`);
  throws(() => decodeImageChecked(small, { expectSize: [28, 28] }), {
    message: "image is 4x3 (HxW) but 28x28 is needed",
  });
});

Deno.test("readIdxImages() refuses a 1 MB gzipped IDX that inflates to a gigabyte, at its declared size (issue 14 item 1)", async () => {
  const path = `${BOMBS}bomb-images-idx3-ubyte.gz`;
  ok((await Deno.stat(path)).size > 1_000_000);
  const { error, grewMiB } = await refusal(() => readIdxImages(path));
  equal(
    error.message,
    `Cannot read IDX file "${path}": gzip data inflates past the 7840016 bytes its IDX header declares (trailing data)`,
  );
  ok(grewMiB < 128, `RSS grew ${grewMiB} MiB`);
});

Deno.test("readIdxImages() refuses an IDX whose header declares more than the cap or than its gzip can hold (issue 14 item 1)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const header = new Uint8Array(16);
    new DataView(header.buffer).setUint32(0, 0x803);
    new DataView(header.buffer).setUint32(4, 100_000);
    new DataView(header.buffer).setUint32(8, 1000);
    new DataView(header.buffer).setUint32(12, 1000);
    await Deno.writeFile(`${dir}/huge-idx3-ubyte.gz`, await gzip(header));
    await rejects(readIdxImages(`${dir}/huge-idx3-ubyte.gz`), {
      message: `Cannot read IDX file "${dir}/huge-idx3-ubyte.gz": header declares 100000000016 bytes, ` +
        `over the limit of 2147483648 bytes`,
    });
    new DataView(header.buffer).setUint32(4, 1000); // 1 GB declared, a few bytes of gzip
    await Deno.writeFile(`${dir}/lie-idx3-ubyte.gz`, await gzip(header));
    await rejects(readIdxImages(`${dir}/lie-idx3-ubyte.gz`), /more than \d+ gzip bytes can hold/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A PNG: signature, IHDR, one IDAT of `zlib` bytes, IEND, with real CRCs. */
function png(width: number, height: number, zlib: Uint8Array): Uint8Array {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, data.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(data, 8);
    let c = 0xffffffff;
    for (const b of out.subarray(4, 8 + data.length)) c = table[(c ^ b) & 0xff] ^ (c >>> 8);
    v.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
    return out;
  };
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, width);
  new DataView(ihdr.buffer).setUint32(4, height);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib),
    chunk("IEND", new Uint8Array()),
  ];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.length);
  return out;
}

async function deflate(bytes: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(s).arrayBuffer());
}

Deno.test("decodeImageChecked() decodes a PNG whose zlib data inflates far past its 16x16 IHDR in bounded memory (issue 14 item 1)", async () => {
  const zlib = await deflate(new Uint8Array(64 * MiB)); // 16x16 needs 272 bytes
  const bytes = png(16, 16, zlib);
  const before = Deno.memoryUsage().rss;
  const img = decodeImageChecked(bytes);
  const grew = (Deno.memoryUsage().rss - before) / MiB;
  equal(`${img.channels}x${img.height}x${img.width}`, "1x16x16");
  ok(img.pixels.every((v) => v === 0));
  ok(grew < 64, `RSS grew ${grew} MiB decoding ${zlib.length} bytes that inflate to 64 MiB`);
});

Deno.test("decodeImageChecked() rejects a PNG with a bad CRC instead of decoding it silently (issue 14 item 10)", async () => {
  const good = await Deno.readFile(`${IMAGES}00_gray.png`);
  decodeImageChecked(good);
  const bad = good.slice();
  bad[bad.length - 20] ^= 0x40; // inside IDAT's data (the file ends IDAT data, CRC, IEND)
  throws(() => decodeImageChecked(bad, { name: "x.png" }), (e: unknown) => {
    ok(e instanceof ImageDecodeError);
    equal(e.kind, "corrupt");
    match(
      e.message,
      /^Cannot read image "x.png": PNG chunk "IDAT" at byte \d+ has a bad CRC \(the file is damaged\)$/,
    );
    return true;
  });
  const truncated = good.subarray(0, good.length - 30);
  throws(() => decodeImageChecked(truncated), /truncated PNG/);
});

Deno.test("decodeImageChecked() refuses a JPEG with hundreds of scans and recovers after corrupt JPEG data (issue 14 item 1)", async () => {
  const sof = [0xff, 0xc2, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0];
  const sos = [0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0, 0x12];
  const bytes = new Uint8Array([0xff, 0xd8, ...sof, ...Array(600).fill(sos).flat(), 0xff, 0xd9]);
  throws(() => decodeImageChecked(bytes), { message: "JPEG has 600 scans, over the limit of 500" });
  const jpeg = await Deno.readFile(`${GOLDENS}jpeg_rgb_420.jpg`);
  const broken = jpeg.slice();
  broken.fill(0x55, 700, 1200); // entropy data replaced by garbage with no markers
  throws(() => decodeImageChecked(broken.subarray(0, 1200)), (e: unknown) => e instanceof ImageDecodeError);
  equal(decodeImageChecked(jpeg).width, 67, "the decoder works again after a failure");
});

Deno.test("parseLabelsText() rejects negative labels and checkLabelRange() out-of-range ones with the line number (issue 14 item 10)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["00_gray.png", "01_rgb.png", "02_gray16.png"]) {
      await Deno.copyFile(`${IMAGES}${f}`, `${dir}/${f}`);
    }
    await Deno.writeTextFile(
      `${dir}/labels.csv`,
      "name,label\n00_gray.png,3\n01_rgb.png,-2\n02_gray16.png,1\n",
    );
    await rejects(readImageFolder(dir), {
      message: `Labels file "${dir}/labels.csv" line 3: label -2 is negative`,
    });
    await Deno.writeTextFile(
      `${dir}/labels.csv`,
      "name,label\n00_gray.png,3\n\n01_rgb.png,12\n02_gray16.png,1\n",
    );
    const { set } = await readImageFolder(dir);
    throws(() => checkLabelRange(set, 10, 'model "m.onnx"'), {
      message: `Labels "${dir}/labels.csv" line 4: label 12 is outside 0..9 (model "m.onnx" has 10 classes)`,
    });
    checkLabelRange(set, 13, "model");
    // IDX labels: the index.
    await Deno.writeFile(`${dir}/l-idx1-ubyte`, new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 1, 200, 3]));
    await Deno.writeFile(
      `${dir}/i-idx3-ubyte`,
      new Uint8Array([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1, 5, 6, 7]),
    );
    const idx = await loadImages(`${dir}/i-idx3-ubyte`, { labels: `${dir}/l-idx1-ubyte` });
    throws(() => checkLabelRange(idx, 10, "model"), {
      message: `Labels "${dir}/l-idx1-ubyte" index 1: label 200 is outside 0..9 (model has 10 classes)`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readLabels() and folder labels say a zero-byte labels file is empty (issue 14 item 10)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/empty-idx1-ubyte`, new Uint8Array());
    await rejects(readLabels(`${dir}/empty-idx1-ubyte`), {
      message: `Labels file "${dir}/empty-idx1-ubyte" is empty (0 bytes)`,
    });
    await Deno.copyFile(`${IMAGES}00_gray.png`, `${dir}/a.png`);
    await Deno.writeTextFile(`${dir}/labels.csv`, "");
    await rejects(readImageFolder(dir), { message: `Labels file "${dir}/labels.csv" is empty (0 bytes)` });
    await Deno.writeTextFile(`${dir}/labels.csv`, "# nothing\n\n");
    await rejects(readImageFolder(dir), {
      message: `Labels file "${dir}/labels.csv" has no labels (only blank or comment lines)`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decodeForModel() checks the model's size on the header unless something resizes, then resizes as the CLI does", async () => {
  const png = await Deno.readFile(`${GOLDENS}src_rgb_67x53.png`); // 53x67
  throws(() => decodeForModel(png, { preprocess: { pad: 2 }, input: [3, 32, 32] }, { name: "r.png" }), {
    message: 'Cannot read image "r.png": image is 53x67 (HxW) but 28x28 is needed',
  });
  const img = decodeForModel(png, { preprocess: { resize: 32, centerCrop: 28 }, input: [3, 28, 28] });
  equal(`${img.channels}x${img.height}x${img.width}`, "3x28x28");
  throws(() => decodeForModel(png, { preprocess: { maxPixels: 1000 } }), (e: unknown) => {
    equal((e as ImageDecodeError).kind, "too-large");
    return true;
  });
});

Deno.test("decodeImageChecked() refuses a tiny PNG declaring 8000x8000 before allocating its pixels (issue 14 item 1)", async () => {
  const bytes = png(8000, 8000, await deflate(new Uint8Array(100)));
  const { error, grewMiB } = await refusal(() => decodeImageChecked(bytes));
  match(error.message, /^truncated PNG: \d+ bytes of image data cannot hold 8000x8000 pixels$/);
  ok(grewMiB < 32, `RSS grew ${grewMiB} MiB`);
});
