/**
 * `edgetrain serve` end to end: a corrupted MNIST stream through the HTTP API with a token, SIGKILL mid-stream,
 * restart, resume from the newest checkpoint, and the whole stream's online error against an uninterrupted
 * runAdaptation (what `adapt` runs) with the same method and batch.
 */
import { equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { corrupt } from "../../src/data/corruptions.ts";
import { subset } from "../../src/data/images.ts";
import { mnistSplit } from "../../src/data/mnist.ts";
import { runAdaptation } from "../../src/methods/run.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { loadModel } from "../../src/onnx/model.ts";
import { decodeCheckpoint, sha256Hex } from "../../src/service/checkpoint.ts";
import { auth, getJson, MNIST_PRE, pngOf, startServe, until, writeSmallModel } from "./_serve_helpers.ts";

const BATCH = 16;
const GROUPS = 30; // 480 images
const EVERY = 5; // checkpoint period (steps)
const KILL_AT = 16; // group index sent when the process is killed (0-based): groups 0..15 were answered
const TOKEN = "e2e-secret-token";

Deno.test("serve: SIGKILL mid-stream, restart resumes the newest checkpoint; online error within 1 point of adapt", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-serve-" });
  const state = `${dir}/state`;
  const tokenFile = `${dir}/token`;
  await Deno.writeTextFile(tokenFile, TOKEN + "\n", { mode: 0o600 });
  const modelPath = await writeSmallModel(dir, { trainImages: 2000 });
  const { test } = await mnistSplit();
  const stream = corrupt(
    subset(test, Array.from({ length: GROUPS * BATCH }, (_, i) => i)),
    "gaussian_noise",
    {
      severity: 4,
      seed: 7,
    },
  );

  // The reference: one uninterrupted continual run, as `adapt --method tent --batch 16 --memory 16` does it.
  const cpu = new CpuBackend();
  const refMethod = await createMethod("tent", importOnnx(cpu, await loadModel(modelPath)), {
    stream: { capacity: BATCH },
  });
  const refPredictions: number[] = [];
  const ref = await runAdaptation(cpu, refMethod, [{ name: "gaussian_noise", set: stream }], {
    batch: BATCH,
    preprocess: MNIST_PRE,
    observers: [{ chunk: (e) => refPredictions.push(...e.stats.predictions) }],
  });

  // A huge flush timeout makes every batch exactly the 16 images of one group, as in the reference.
  const args = [
    "--model",
    modelPath,
    "--method",
    "tent",
    "--state",
    state,
    "--token-file",
    tokenFile,
    "--backend",
    "cpu",
  ];
  args.push("--batch", String(BATCH), "--memory", String(BATCH), "--flush-ms", "600000");
  args.push("--checkpoint-every", String(EVERY));
  const narrow = { model: modelPath, state, tokenFile };
  const pngs = Array.from({ length: stream.n }, (_, i) => pngOf(stream, i));
  const predicted = new Map<number, number>();
  const sendGroup = (url: string, g: number) =>
    Promise.all(Array.from({ length: BATCH }, async (_, k) => {
      const i = g * BATCH + k;
      // Staggered so that the frames of a group reach the service in the reference's order: the memory bank
      // keeps frames by arrival, and the reference offers them in index order.
      await new Promise((r) => setTimeout(r, 5 * k));
      const res = await fetch(`${url}/v1/predict`, {
        method: "POST",
        headers: { ...auth(TOKEN), "content-type": "image/png" },
        body: pngs[i],
      });
      const body = await res.json();
      equal(res.status, 200, JSON.stringify(body));
      equal(body.probabilities.length, 10);
      predicted.set(i, body.class);
    }));

  let served = await startServe(args, { narrow });
  for (let g = 0; g < KILL_AT; g++) await sendGroup(served.url, g);
  const lost = sendGroup(served.url, KILL_AT).then(() => "answered", () => "lost");
  await new Promise((r) => setTimeout(r, 30));
  served.child.kill("SIGKILL");
  equal((await served.status).signal, "SIGKILL");
  await lost;
  for (let k = 0; k < BATCH; k++) predicted.delete(KILL_AT * BATCH + k);

  // Before the kill the service made the reference's predictions (answers use target statistics, so the order
  // of the frames within a group does not change them; it may change which frames the bank keeps).
  let same = 0;
  for (let i = 0; i < KILL_AT * BATCH; i++) if (predicted.get(i) === refPredictions[i]) same++;
  ok(
    same >= 0.97 * KILL_AT * BATCH,
    `${same} of ${KILL_AT * BATCH} pre-kill predictions equal the reference's`,
  );

  served = await startServe(args, { narrow });
  const resumedStep = Math.floor(KILL_AT / EVERY) * EVERY;
  ok(served.lines.some((l) => l.includes(`at step ${resumedStep} from`)), served.lines.join("\n"));
  const st = await getJson(`${served.url}/v1/state`, auth(TOKEN));
  equal(st.steps, resumedStep);
  equal((st.resumed_from as { step: number }).step, resumedStep);
  for (let g = KILL_AT; g < GROUPS; g++) await sendGroup(served.url, g);
  const after = await getJson(`${served.url}/v1/state`, auth(TOKEN));
  equal(after.steps, resumedStep + (GROUPS - KILL_AT), "the step count continues from the checkpoint");

  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));

  // Every checkpoint left reads back intact, for this model; none was set aside.
  const sha = await sha256Hex(await Deno.readFile(modelPath));
  const files = [...Deno.readDirSync(state)].map((e) => e.name).sort();
  ok(!files.some((f) => f.endsWith(".bad")), files.join(", "));
  const ckpts = files.filter((f) => f.endsWith(".etck"));
  ok(ckpts.length >= 2, files.join(", "));
  for (const f of ckpts) {
    const ck = await decodeCheckpoint(await Deno.readFile(`${state}/${f}`), f);
    equal(ck.header.model_sha256, sha);
  }
  equal(
    ckpts.at(-1),
    `ckpt-${String(resumedStep + GROUPS - KILL_AT).padStart(12, "0")}.etck`,
    "final checkpoint on SIGTERM",
  );

  equal(predicted.size, stream.n, "every image answered exactly once");
  let wrong = 0;
  for (const [i, c] of predicted) if (c !== stream.labels![i]) wrong++;
  const error = wrong / stream.n;
  ok(
    Math.abs(error - ref.error!) <= 0.01,
    `service error ${(100 * error).toFixed(2)}% vs adapt ${(100 * ref.error!).toFixed(2)}%`,
  );
  console.log(
    `serve e2e: online error ${(100 * error).toFixed(2)}% (adapt ${(100 * ref.error!).toFixed(2)}%)`,
  );
  refMethod.dispose();
  cpu.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("serve --spool: name order, one results line per file, done/ and failed/, no file lost or redone across a crash", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  const spool = `${dir}/spool`, state = `${dir}/state`;
  await Deno.mkdir(spool);
  const model = await writeSmallModel(dir);
  const { test } = await mnistSplit();
  for (let i = 0; i < 6; i++) await Deno.writeFile(`${spool}/00${i}.png`, pngOf(test, i));
  await Deno.writeTextFile(`${spool}/006.txt`, "not an image");
  await Deno.writeFile(`${spool}/007.png`, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 1]));
  const small = { n: 1, channels: 1, height: 20, width: 20, pixels: new Uint8Array(400).fill(9) };
  await Deno.writeFile(`${spool}/008.png`, pngOf(small, 0));
  await Deno.writeFile(`${spool}/.incoming.png`, pngOf(test, 9));
  const results = `${spool}/results.jsonl`;
  const lines = async () => (await Deno.readTextFile(results).catch(() => "")).split("\n").filter(Boolean);
  const args = ["--model", model, "--method", "tent", "--state", state, "--spool", spool, "--backend", "cpu"];
  args.push("--batch", "4", "--flush-ms", "100");
  const narrow = { model, state, spool };

  let served = await startServe(args, { narrow });
  await until(served, async () => (await lines()).length >= 9, "9 results lines");
  const first = (await lines()).map((l) => JSON.parse(l));
  equal(
    first.map((r) => r.file).join(),
    "000.png,001.png,002.png,003.png,004.png,005.png,006.txt,007.png,008.png",
  );
  ok(
    first.slice(0, 6).every((r) => Number.isInteger(r.class) && r.probabilities.length === 10 && r.step >= 1),
  );
  ok(first.slice(6).every((r) => typeof r.error === "string" && r.class === undefined));
  const ls = (sub: string) => [...Deno.readDirSync(`${spool}/${sub}`)].map((e) => e.name).sort();
  await until(served, () => ls("failed").length === 6, "failed/ to fill");
  equal(ls("done").join(), "000.png,001.png,002.png,003.png,004.png,005.png");
  equal(ls("failed").join(), "006.txt,006.txt.reason,007.png,007.png.reason,008.png,008.png.reason");
  ok(/not a \.png/.test(await Deno.readTextFile(`${spool}/failed/006.txt.reason`)));
  ok(/expects 1x32x32/.test(await Deno.readTextFile(`${spool}/failed/008.png.reason`)));
  ok(Deno.statSync(`${spool}/.incoming.png`).isFile, "hidden files (being written) are left alone");
  served.child.kill("SIGKILL");
  await served.status;

  // The crash window: 003.png was recorded but not yet moved, and an append was torn mid-line.
  await Deno.copyFile(`${spool}/done/003.png`, `${spool}/003.png`);
  await Deno.writeTextFile(results, '{"file":"009.p', { append: true });
  await Deno.writeFile(`${spool}/009.png`, pngOf(test, 9));
  served = await startServe(args, { narrow });
  await until(served, async () => (await lines()).length >= 10, "the 10th results line");
  await until(served, () => !ls(".").includes("009.png"), "009.png to be moved");
  const second = (await lines()).map((l) => JSON.parse(l));
  equal(second.length, 10, "the torn line was cut, 003.png not redone, 009.png added");
  equal(second.filter((r) => r.file === "003.png").length, 1);
  equal(second[9].file, "009.png");
  ok(ls("done").includes("003.png~1") && ls("done").includes("009.png"), ls("done").join());
  ok(!ls(".").includes("003.png"));

  // A later file reusing a processed name is a duplicate: failed, not predicted twice.
  await Deno.writeFile(`${spool}/001.png`, pngOf(test, 1));
  await until(served, async () => (await lines()).length >= 11, "the duplicate's line");
  const dup = JSON.parse((await lines())[10]);
  equal(dup.file, "001.png");
  ok(/duplicate/.test(dup.error), dup.error);
  const st = await getJson(`${served.url}/v1/state`);
  equal((st.spool as { processed: number }).processed, 2);
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  await Deno.remove(dir, { recursive: true });
});
