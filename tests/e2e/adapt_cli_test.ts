import { deepEqual, equal, match, ok } from "node:assert/strict";
import { encode as encodePng } from "fast-png";
import { runCli, stream } from "./_cli.ts";
import { loadImages } from "../../src/data/images.ts";
import { decodeCheckpoint } from "../../src/service/checkpoint.ts";

const MODEL = "fixtures/models/torch_mnist_cnn_preserve.onnx";

Deno.test("edgetrain adapt --json reports online error per domain, the ledger's peaks and resets", async () => {
  const r = await runCli([
    "adapt",
    "--model",
    MODEL,
    "--method",
    "tent",
    "--batch",
    "50",
    ...stream("fog-s5"),
    ...stream("contrast-s5"),
    "--backend",
    "cpu",
    "--json",
  ]);
  equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  equal(out.method, "tent");
  equal(out.batch, 50);
  equal(out.n, 1000);
  equal(out.domains.length, 2);
  for (const d of out.domains) ok(d.n === 500 && d.error >= 0 && d.error <= 1);
  ok(
    Math.abs(out.error - (out.domains[0].error + out.domains[1].error) / 2) < 1e-9,
    "error is over the whole stream",
  );
  ok(out.peak_saved_bytes > 0 && out.peak_bytes >= out.peak_saved_bytes);
  ok(out.predicted_peak_bytes > 0, "the governor's prediction is reported next to the measurement");
  // This small fixture model collapses on contrast (the guard may restore a healthy state): each reset is listed.
  equal(out.resets, out.reset_events.length);
  for (const e of out.reset_events) match(e.reason, /collapse guard|method/);
  ok(out.ms_per_batch > 0);
  ok(out.warmup_ms > 0, "the first chunk's time is reported apart");
  equal(out.predicted_peak_bytes, out.peak_bytes, "the governor's estimate is the ledger's measured peak");
});

Deno.test("edgetrain adapt --out writes one row per image with its online prediction (issue 13 item 5)", async () => {
  const dir = await Deno.makeTempDir();
  const r = await runCli([
    "adapt",
    "--model",
    MODEL,
    "--method",
    "tent",
    "--batch",
    "50",
    ...stream("fog-s5"),
    "--backend",
    "cpu",
    "--out",
    `${dir}/p.jsonl`,
    "--top-k",
    "1",
    "--json",
  ]);
  equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  const rows = (await Deno.readTextFile(`${dir}/p.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  equal(rows.length, out.n);
  equal(out.rows, out.n);
  deepEqual(rows.map((row) => row.index), rows.map((_, i) => i));
  const wrong = rows.filter((row) => row.top[0].class !== row.label).length;
  equal(wrong / rows.length, out.error, "the rows are the predictions the online error counts");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain adapt skips unreadable files of a folder by name and goes on; a wrong-size file stops it with the fix", async () => {
  const dir = await Deno.makeTempDir();
  const clean = await loadImages("fixtures/streams/mnist_c/clean-images-idx3-ubyte.gz");
  for (let i = 0; i < 6; i++) {
    const data = clean.pixels.slice(i * 784, (i + 1) * 784);
    await Deno.writeFile(
      `${dir}/digit_${i}.png`,
      encodePng({ width: 28, height: 28, data, channels: 1, depth: 8 }),
    );
  }
  await Deno.writeFile(`${dir}/digit_6_broken.png`, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]));
  const r = await runCli([
    "adapt",
    "--model",
    MODEL,
    "--method",
    "tent",
    "--batch",
    "4",
    "--images",
    dir,
    "--backend",
    "cpu",
    "--json",
  ]);
  equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  equal(out.n, 6, "the six readable digits were adapted on");
  equal(out.skipped, 1);
  deepEqual(out.skipped_inputs.map((s: { name: string }) => s.name.split("/").pop()), ["digit_6_broken.png"]);
  ok(r.stderr.includes("digit_6_broken.png"), "the skip is reported on stderr");
  // Images of another size are not skipped silently: the run stops and names the flags that fix it.
  await Deno.writeFile(
    `${dir}/digit_7_small.png`,
    encodePng({ width: 20, height: 20, data: new Uint8Array(400), channels: 1, depth: 8 }),
  );
  const mixed = await runCli(["adapt", "--model", MODEL, "--images", dir, "--backend", "cpu", "--json"]);
  equal(mixed.code, 1);
  ok(/"digit_7_small.png" is 20x20 .*give --resize N --center-crop M/.test(mixed.stderr), mixed.stderr);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain adapt --save-state writes a checksummed state that --load-state continues from", async () => {
  const dir = await Deno.makeTempDir();
  const base = [
    "adapt",
    "--model",
    MODEL,
    "--batch",
    "100",
    ...stream("fog-s5"),
    "--backend",
    "cpu",
    "--json",
  ];
  const first = await runCli([...base, "--method", "tent", "--save-state", `${dir}/s1.etck`]);
  equal(first.code, 0, first.stderr);
  const saved = await decodeCheckpoint(await Deno.readFile(`${dir}/s1.etck`));
  equal(saved.header.method, "tent");
  equal(saved.header.step, JSON.parse(first.stdout).updates);
  ok(Object.keys(saved.state).some((k) => k.startsWith("optimizer.")), "the optimizer state is saved too");
  const next = await runCli([
    ...base,
    "--method",
    "tent",
    "--load-state",
    `${dir}/s1.etck`,
    "--save-state",
    `${dir}/s2.etck`,
  ]);
  equal(next.code, 0, next.stderr);
  equal((await decodeCheckpoint(await Deno.readFile(`${dir}/s2.etck`))).header.step, 2 * saved.header.step);
  const wrong = await runCli([...base, "--method", "eata", "--load-state", `${dir}/s1.etck`]);
  ok(wrong.code !== 0);
  match(wrong.stderr, /was saved for method tent on another model or method/);
  await Deno.remove(dir, { recursive: true });
});
