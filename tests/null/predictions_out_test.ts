import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { openPredictions, softmax, topK } from "../../src/data/predictions_out.ts";
import { preprocessWarnings } from "../../src/data/preprocess.ts";

Deno.test("openPredictions() writes JSONL rows with top-k classes, names and logits (issue 13 item 5)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = openPredictions(`${dir}/p.jsonl`, { topK: 2, logits: true, classes: ["cat", "dog", "emu"] });
    out.write({ images: "val", index: 0, file: "cat/1.jpg", label: 0, logits: new Float32Array([2, 0, 0]) });
    out.write({ images: "val", index: 1, logits: [0, 1, 1] });
    out.close();
    const rows = (await Deno.readTextFile(`${dir}/p.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
    const e2 = Math.exp(2);
    deepEqual(rows[0], {
      images: "val",
      index: 0,
      file: "cat/1.jpg",
      label: 0,
      top: [
        { class: 0, name: "cat", p: +(e2 / (e2 + 2)).toPrecision(7) },
        { class: 1, name: "dog", p: +(1 / (e2 + 2)).toPrecision(7) },
      ],
      logits: [2, 0, 0],
    });
    deepEqual(rows[1].top.map((t: { class: number }) => t.class), [1, 2], "ties go to the lower class");
    equal(out.rows, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openPredictions() writes CSV with a header, quoted cells and top-k capped at the classes (issue 13 item 5)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = openPredictions(`${dir}/p.csv`, { topK: 5 });
    out.write({ images: "a,b", index: 3, file: 'x"y.png', logits: [0, 0] });
    out.close();
    deepEqual((await Deno.readTextFile(`${dir}/p.csv`)).split("\n"), [
      "images,index,file,label,class_1,p_1,class_2,p_2",
      '"a,b",3,"x""y.png",,0,0.5,1,0.5',
      "",
    ]);
    throws(() => openPredictions(`${dir}/p.txt`), {
      message: `--out "${dir}/p.txt" must end in .jsonl or .csv (the format is chosen by the extension)`,
    });
    const bad = openPredictions(`${dir}/q.csv`, { classes: ["a"] });
    throws(() => bad.write({ images: "i", index: 0, logits: [1, 2] }), {
      message: "1 class names were given but the model has 2 outputs",
    });
    bad.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PredictionsWriter streams: rows reach the file before close, the buffer stays small", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = openPredictions(`${dir}/p.jsonl`, { logits: true });
    const logits = new Float32Array(1000).map((_, i) => Math.sin(i));
    for (let i = 0; i < 200; i++) out.write({ images: "s", index: i, logits });
    const before = (await Deno.stat(`${dir}/p.jsonl`)).size;
    ok(before > 0, "flushed while writing");
    out.close();
    const after = (await Deno.stat(`${dir}/p.jsonl`)).size;
    ok(after - before < 70_000, `at most one buffer (64 KiB) was pending: ${after - before} bytes`);
    equal((await Deno.readTextFile(`${dir}/p.jsonl`)).trim().split("\n").length, 200);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("softmax() and topK() are stable on large logits", () => {
  const p = softmax([1000, 1000, -1000]);
  deepEqual(Array.from(p), [0.5, 0.5, 0]);
  deepEqual(topK([0.1, 0.7, 0.2], 2), [1, 2]);
});

Deno.test("preprocessWarnings() flags a 3-channel model without mean/std and 0-255 values (issue 13 item 6)", () => {
  deepEqual(preprocessWarnings({}, 1), []);
  deepEqual(preprocessWarnings({ mean: [0.5], std: [0.5] }, 3), []);
  equal(preprocessWarnings({}, 3).length, 1);
  ok(preprocessWarnings({}, 3)[0].startsWith("no --mean for a 3-channel model"));
  const w = preprocessWarnings({ mean: [123.7, 116.3, 103.5], std: [58.4, 57.1, 57.4] }, 3);
  equal(w.length, 2);
  ok(w[0].includes("looks like 0-255 values") && w[0].includes("0.485,0.456,0.406"), w[0]);
});
