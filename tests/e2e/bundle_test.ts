/**
 * The one-file build (`deno task bundle` -> dist/edgetrain.js) runs with nothing of the project around it: from
 * an empty folder, with --no-config (no import map, no node_modules) and an empty DENO_DIR (no npm cache), so
 * the kernels, the default model, the demo streams and every npm dependency must be inside the file. Runs
 * `demo` (its first method over every embedded stream), `predict` and a `serve` round trip. Also checks what `deno task compile` would run (denort cannot be
 * downloaded here, so the compile itself is not run; see docs/service.md).
 */
import { equal, ok } from "node:assert/strict";
import { pngOf, reap, startServe, writeSmallModel } from "./_serve_helpers.ts";
import { mnistSplit } from "../../src/data/mnist.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function run(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd,
    env: { NO_COLOR: "1", EDGETRAIN_PROGRESS: "0", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("bundle: dist/edgetrain.js runs demo, predict and serve from an empty folder with an empty DENO_DIR", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "edgetrain-bundle-" });
  const bundle = `${tmp}/edgetrain.js`;
  const built = await run(
    ["bundle", "--quiet", `--config=${ROOT}deno.json`, "-o", bundle, `${ROOT}main.ts`],
    { cwd: ROOT },
  );
  equal(built.code, 0, built.stderr);
  const work = `${tmp}/work`, denoDir = `${tmp}/deno_dir`;
  await Deno.mkdir(work);
  await Deno.mkdir(denoDir);
  const env = { DENO_DIR: denoDir };
  const deno = ["run", "--no-config", "--no-prompt", "--unstable-webgpu", "--unstable-net", "-A", bundle];

  // demo: the embedded default model and streams. A full demo is three methods over four streams (about two
  // minutes on a loaded 2-core CPU), so the test stops it once the unadapted model has gone through all four
  // embedded streams: that proves the model, the streams and the engine are inside the file.
  const demo = new Deno.Command(Deno.execPath(), {
    args: [...deno, "demo", "--backend", "cpu"],
    cwd: work,
    env: { NO_COLOR: "1", ...env },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  reap(demo);
  let log = "";
  let sourceDone: RegExpExecArray | null = null;
  for await (const chunk of demo.stderr.pipeThrough(new TextDecoderStream())) {
    log += chunk;
    // "source 4/4 motion_blur [####...] 2000/2000 12.3s err 45.6%": the last stream, every image.
    sourceDone = /^source (\d+)\/\1 \S+ \[#{24}\] (\d+)\/\2 .*err ([\d.]+)%$/m.exec(log);
    if (sourceDone) break;
  }
  ok(sourceDone, `demo ended before the source model finished its streams:\n${log}`);
  ok(
    Number(sourceDone[1]) >= 2 && Number(sourceDone[2]) >= 100,
    `several streams, every image: ${sourceDone[0]}`,
  );
  ok(
    Number(sourceDone[3]) < 90,
    `source error ${sourceDone[3]}% is better than chance: the embedded model is trained`,
  );
  demo.kill("SIGTERM");
  await demo.status;

  // predict: a user's model and a folder of PNGs with labels (user data, not project files).
  await writeSmallModel(tmp, { seed: 2 });
  await Deno.rename(`${tmp}/model.onnx`, `${work}/model.onnx`);
  await Deno.rename(`${tmp}/model.json`, `${work}/model.json`);
  const { test } = await mnistSplit();
  await Deno.mkdir(`${work}/digits`);
  const labels: string[] = [];
  for (let i = 0; i < 8; i++) {
    await Deno.writeFile(`${work}/digits/${i}.png`, pngOf(test, i));
    labels.push(`${i}.png,${test.labels![i]}`);
  }
  await Deno.writeTextFile(`${work}/digits/labels.csv`, labels.join("\n") + "\n");
  const pred = await run([
    ...deno,
    "predict",
    "--model",
    "model.onnx",
    "--images",
    "digits",
    // The wasm backend: its module and its workers' source are inside the file too.
    "--backend",
    "wasm",
    "--json",
  ], {
    cwd: work,
    env,
  });
  equal(pred.code, 0, pred.stderr);
  const p = JSON.parse(pred.stdout);
  equal(p.n, 8);
  ok(p.error >= 0 && p.error <= 1, pred.stdout);

  // JPEG and WebP: their WebAssembly decoders are inside the file too.
  await Deno.mkdir(`${work}/photos`);
  for (const f of ["jpeg_rgb_420.jpg", "webp_lossy.webp"]) {
    await Deno.copyFile(`${ROOT}fixtures/data/goldens/${f}`, `${work}/photos/${f}`);
  }
  const photos = await run(
    [
      ...deno,
      "predict",
      "--model",
      "model.onnx",
      "--images",
      "photos",
      "--resize",
      "28",
      "--center-crop",
      "28",
    ]
      .concat(["--backend", "cpu", "--json"]),
    { cwd: work, env },
  );
  equal(photos.code, 0, photos.stderr);
  equal(JSON.parse(photos.stdout).n, 2);

  // serve: a round trip under the unit's narrow permissions.
  const served = await startServe(
    [
      "--model",
      `${work}/model.onnx`,
      "--method",
      "tent",
      "--state",
      `${work}/state`,
      "--backend",
      "cpu",
      "--flush-ms",
      "10",
    ],
    {
      entry: { script: bundle, denoFlags: ["--no-config"] },
      narrow: { model: `${work}/model.onnx`, state: `${work}/state` },
      cwd: work,
      env,
    },
  );
  const res = await fetch(`${served.url}/v1/predict`, {
    method: "POST",
    headers: { "content-type": "image/png" },
    body: pngOf(test, 0),
  });
  const body = await res.json();
  equal(res.status, 200, JSON.stringify(body));
  equal(body.probabilities.length, 10);
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  ok(Deno.statSync(`${work}/state`).isDirectory);

  // Nothing was fetched into the empty DENO_DIR: the bundle needs deno and nothing else.
  const npm = [...Deno.readDirSync(denoDir)].find((e) => e.name === "npm");
  equal(npm ? [...Deno.readDirSync(`${denoDir}/npm`)].length : 0, 0, "no npm package was fetched");
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("tools/compile.ts plans host, x86_64 and aarch64 Linux builds and honours DENORT_BIN_<ARCH>", async () => {
  const out = await run([
    "run",
    "-A",
    `${ROOT}tools/compile.ts`,
    "--dry-run",
    "--out",
    "/tmp/edgetrain-compile-plan",
  ], {
    cwd: ROOT,
    env: { DENORT_BIN_AARCH64: "/opt/denort-aarch64/denort" },
  });
  equal(out.code, 0, out.stderr);
  const cmds = out.stdout.trim().split("\n");
  for (const t of ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]) {
    const cmd = cmds.find((c) => c.includes(`--target ${t}`));
    ok(cmd, `${t} in ${out.stdout}`);
    for (
      const f of ["--unstable-webgpu", "--unstable-net", "--allow-read", "--exclude-unused-npm", "main.ts"]
    ) ok(cmd.includes(f), f);
    ok(!cmd.includes(" -A ") && !cmd.includes("--allow-all") && !cmd.includes("--allow-run"), cmd);
  }
  ok(out.stderr.includes("aarch64-unknown-linux-gnu (runtime from /opt/denort-aarch64/denort)"), out.stderr);
});
