import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import {
  encodeIdxImages,
  encodeIdxLabels,
  gzip,
  parseIdxImages,
  readIdxImages,
  readIdxLabels,
  writeIdxImages,
  writeIdxLabels,
} from "../../src/data/idx.ts";
import { type ImageSet, loadImages } from "../../src/data/images.ts";

function tinySet(n = 3, h = 4, w = 5): ImageSet {
  const pixels = Uint8Array.from({ length: n * h * w }, (_, i) => (i * 37) % 256);
  return { n, channels: 1, height: h, width: w, pixels };
}

async function withTmp(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain_idx_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("writeIdxImages() and readIdxImages() round-trip plain and gzipped files", async () => {
  await withTmp(async (dir) => {
    const set = tinySet();
    for (
      const [file, opts] of [["a-idx3-ubyte", {}], ["b-idx3-ubyte.gz", {}], ["c-idx3-ubyte", {
        gzip: true,
      }]] as const
    ) {
      await writeIdxImages(`${dir}/${file}`, set, opts);
      const back = await readIdxImages(`${dir}/${file}`);
      deepEqual([back.n, back.channels, back.height, back.width], [3, 1, 4, 5]);
      deepEqual(back.pixels, set.pixels);
    }
    const raw = await Deno.readFile(`${dir}/a-idx3-ubyte`);
    deepEqual(
      Array.from(raw.subarray(0, 16)),
      [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5],
      "big-endian header",
    );
    const gz = await Deno.readFile(`${dir}/c-idx3-ubyte`);
    deepEqual([gz[0], gz[1]], [0x1f, 0x8b], "gzip was detected by header, not by name");
  });
});

Deno.test("writeIdxLabels() and readIdxLabels() round-trip plain and gzipped files", async () => {
  await withTmp(async (dir) => {
    const labels = [0, 9, 3, 255, 1];
    await writeIdxLabels(`${dir}/l-idx1-ubyte`, labels);
    await writeIdxLabels(`${dir}/l-idx1-ubyte.gz`, labels);
    deepEqual(Array.from(await readIdxLabels(`${dir}/l-idx1-ubyte`)), labels);
    deepEqual(Array.from(await readIdxLabels(`${dir}/l-idx1-ubyte.gz`)), labels);
    throws(() => encodeIdxLabels([1, 256]), /label 256 at index 1 does not fit IDX uint8/);
  });
});

Deno.test("readIdxImages() names the file and both magics when the magic is wrong", async () => {
  await withTmp(async (dir) => {
    await Deno.writeFile(`${dir}/zeros`, new Uint8Array(32));
    await rejects(readIdxImages(`${dir}/zeros`), {
      message: `Cannot read IDX file "${dir}/zeros": magic 0x00000000 is not 0x00000803 (images)`,
    });
    await writeIdxLabels(`${dir}/labels`, [1, 2]);
    await rejects(readIdxImages(`${dir}/labels`), {
      message: `Cannot read IDX file "${dir}/labels": magic 0x00000801 is not 0x00000803 (images)`,
    });
    await writeIdxImages(`${dir}/images`, tinySet());
    await rejects(readIdxLabels(`${dir}/images`), {
      message: `Cannot read IDX file "${dir}/images": magic 0x00000803 is not 0x00000801 (labels)`,
    });
  });
});

Deno.test("parseIdxImages() reports truncated data with expected and actual bytes", () => {
  const bytes = encodeIdxImages(tinySet()); // 16 + 3 * 4 * 5 = 76 bytes
  equal(bytes.length, 76);
  throws(() => parseIdxImages(bytes.subarray(0, 70), "t.idx"), {
    message:
      'Cannot read IDX file "t.idx": truncated data, expected 76 bytes (16 header + 3 x 4 x 5 uint8) ' +
      "but the file has 70",
  });
  throws(
    () => parseIdxImages(bytes.subarray(0, 10), "t.idx"),
    /truncated header, expected 16 bytes but the file has 10/,
  );
  throws(
    () => parseIdxImages(new Uint8Array([...bytes, 0]), "t.idx"),
    /trailing data, expected 76 bytes .* has 77/,
  );
});

Deno.test("parseIdxImages() rejects a dtype other than uint8 by name", () => {
  const bytes = encodeIdxImages(tinySet());
  bytes[2] = 0x0d;
  throws(() => parseIdxImages(bytes, "f.idx"), {
    message: 'Cannot read IDX file "f.idx": dtype 0x0d (float32) is not supported, only 0x08 (uint8)',
  });
});

Deno.test("readIdxImages() names the file when its gzip stream is cut short", async () => {
  await withTmp(async (dir) => {
    const gz = await gzip(encodeIdxImages(tinySet(50, 28, 28)));
    await Deno.writeFile(`${dir}/cut.gz`, gz.subarray(0, Math.floor(gz.length / 2)));
    await rejects(
      readIdxImages(`${dir}/cut.gz`),
      /^Error: Cannot read IDX file ".*cut.gz": gzip data is corrupt or truncated/,
    );
    await rejects(readIdxImages(`${dir}/missing`), {
      message: `Cannot read IDX file "${dir}/missing": no such file`,
    });
  });
});

Deno.test("loadImages() attaches IDX labels and rejects a labels count that differs from the images", async () => {
  await withTmp(async (dir) => {
    await writeIdxImages(`${dir}/i-idx3-ubyte`, tinySet());
    await writeIdxLabels(`${dir}/ok-idx1-ubyte.gz`, [7, 8, 9]);
    await writeIdxLabels(`${dir}/bad-idx1-ubyte`, [7, 8]);
    const set = await loadImages(`${dir}/i-idx3-ubyte`, { labels: `${dir}/ok-idx1-ubyte.gz` });
    deepEqual(Array.from(set.labels!), [7, 8, 9]);
    await rejects(loadImages(`${dir}/i-idx3-ubyte`, { labels: `${dir}/bad-idx1-ubyte` }), {
      message: `Labels file "${dir}/bad-idx1-ubyte" has 2 labels but "${dir}/i-idx3-ubyte" has 3 images`,
    });
    await Deno.writeTextFile(`${dir}/labels.txt`, "1\n2\n3\n");
    deepEqual(
      Array.from((await loadImages(`${dir}/i-idx3-ubyte`, { labels: `${dir}/labels.txt` })).labels!),
      [1, 2, 3],
    );
    const rgb = await loadImages(`${dir}/i-idx3-ubyte`, { channels: 3 });
    equal(rgb.channels, 3);
    deepEqual(
      rgb.pixels.subarray(20, 40),
      set.pixels.subarray(0, 20),
      "gray replicated into the second plane",
    );
    await rejects(loadImages(`${dir}/nothing-here`), {
      message: `Cannot read images "${dir}/nothing-here": no such file or folder`,
    });
  });
});

Deno.test("encodeIdxImages() refuses sets with more than one channel", () => {
  const set = { ...tinySet(), channels: 3, pixels: new Uint8Array(3 * 3 * 4 * 5) };
  throws(() => encodeIdxImages(set), /IDX images hold one channel but the set has 3 \(\[3, 3, 4, 5\]\)/);
  ok(encodeIdxImages(tinySet()).length === 76);
});
