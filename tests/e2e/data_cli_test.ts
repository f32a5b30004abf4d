/**
 * The data frictions of issues 13 and 14 as a user meets them: what `edgetrain predict` prints and writes for
 * ImageFolder trees, single files, mixed sizes, unsupported formats, bad labels, missing mean/std and
 * decompression bombs.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { type CliResult, runCli } from "./_cli.ts";
import { pngOf } from "./_serve_helpers.ts";
import { mnistSplit } from "../../src/data/mnist.ts";

const MODEL = "fixtures/models/torch_mnist_cnn_eval.onnx"; // 1x28x28, 10 classes
const RGB_MODEL = "fixtures/models/mobilenet_v2_eval.onnx"; // 3x32x32
const GOLDENS = "fixtures/data/goldens";
const BOMBS = "fixtures/data/bombs";
const { test: digits } = await mnistSplit();

/** The one error line of a failed run (everything else on stderr is progress or warnings). */
function errorLine(r: CliResult): string {
  const lines = r.stderr.trim().split("\n").filter((l) =>
    l.startsWith("edgetrain predict: ") && !l.includes("warning")
  );
  equal(lines.length, 1, r.stderr);
  return lines[0];
}

const NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/** An ImageFolder of `n` digits, class folders named by `name(label)`. */
async function digitFolder(dir: string, n: number, name = (l: number) => String(l)): Promise<void> {
  for (let i = 0; i < n; i++) {
    const l = digits.labels![i];
    await Deno.mkdir(`${dir}/${name(l)}`, { recursive: true });
    await Deno.writeFile(`${dir}/${name(l)}/d${String(i).padStart(3, "0")}.png`, pngOf(digits, i));
  }
}

Deno.test("edgetrain predict --out writes one row per image of an ImageFolder with class names, top-k and logits (issue 13 items 5, 6)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // Folders named "eight", "five", ...: sorted they would be classes 0, 1, ...; the class list maps them.
    await digitFolder(`${dir}/val`, 30, (l) => NAMES[l]);
    await Deno.writeTextFile(`${dir}/names.txt`, NAMES.join("\n") + "\n");
    const out = ["--out", `${dir}/p.csv`, "--top-k", "3", "--classes", `${dir}/names.txt`, "--json"];
    const csv = await runCli([
      "predict",
      "--model",
      MODEL,
      "--images",
      `${dir}/val`,
      "--backend",
      "cpu",
      ...out,
    ]);
    equal(csv.code, 0, csv.stderr);
    const summary = JSON.parse(csv.stdout);
    deepEqual([summary.n, summary.rows, summary.out], [30, 30, `${dir}/p.csv`]);
    ok(summary.error < 0.2, `labels come from the class folders through --classes: error ${summary.error}`);
    const lines = (await Deno.readTextFile(`${dir}/p.csv`)).trim().split("\n");
    equal(lines[0], "images,index,file,label,class_1,name_1,p_1,class_2,name_2,p_2,class_3,name_3,p_3");
    equal(lines.length, 31);
    const first = lines[1].split(",");
    equal(first[0], `${dir}/val`);
    match(first[2], /^eight\/d\d{3}\.png$/, "files in torchvision's order: class folders sorted");
    equal(first[3], "8", "the label is the class's index in --classes");
    equal(first[5], NAMES[+first[4]]);

    await digitFolder(`${dir}/val2`, 30);
    const more = ["--out", `${dir}/p.jsonl`, "--logits"];
    const jsonl = await runCli([
      "predict",
      "--model",
      MODEL,
      "--images",
      `${dir}/val2`,
      "--backend",
      "cpu",
      ...more,
    ]);
    equal(jsonl.code, 0, jsonl.stderr);
    match(jsonl.stdout, /predictions: 30 rows in .*p\.jsonl/);
    const row = JSON.parse((await Deno.readTextFile(`${dir}/p.jsonl`)).split("\n")[0]);
    equal(row.logits.length, 10);
    equal(row.top.length, 5);
    equal(row.top[0].name, String(row.top[0].class), "the ImageFolder's class folders name the classes");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgetrain predict takes a single image file as --images (issue 13 item 6)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/seven.png`, pngOf(digits, 0));
    const r = await runCli([
      "predict",
      "--model",
      MODEL,
      "--images",
      `${dir}/seven.png`,
      "--backend",
      "cpu",
      "--out",
      `${dir}/p.jsonl`,
      "--json",
    ]);
    equal(r.code, 0, r.stderr);
    equal(JSON.parse(r.stdout).n, 1);
    const row = JSON.parse(await Deno.readTextFile(`${dir}/p.jsonl`));
    deepEqual([row.index, row.file], [0, "seven.png"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgetrain predict on images of mixed sizes says which flags fix it, and --resize/--center-crop do (issue 13 item 6)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/imgs`);
    await Deno.writeFile(`${dir}/imgs/a.png`, pngOf(digits, 0));
    await Deno.copyFile(`${GOLDENS}/src_gray_57x33.png`, `${dir}/imgs/b.png`);
    const base = ["predict", "--model", MODEL, "--images", `${dir}/imgs`, "--backend", "cpu"];
    const bad = await runCli(base);
    equal(bad.code, 1);
    equal(
      errorLine(bad),
      `edgetrain predict: Images in "${dir}/imgs" differ in size: "b.png" is 33x57 but "a.png" is 28x28 (HxW); ` +
        "give --resize N --center-crop M to bring them to one size (as torchvision's Resize and CenterCrop)",
    );
    const half = await runCli([...base, "--resize", "28"]);
    match(errorLine(half), /differ in size after --resize 28: "b.png" is 28x48 .* add --center-crop M/);
    const good = await runCli([...base, "--resize", "28", "--center-crop", "28", "--json"]);
    equal(good.code, 0, good.stderr);
    equal(JSON.parse(good.stdout).n, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgetrain predict skips an unsupported format and a PNG with a bad CRC with one line each (issue 13 item 6, issue 14 item 10)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/imgs`);
    await Deno.writeFile(`${dir}/imgs/a.png`, pngOf(digits, 0));
    await Deno.writeTextFile(`${dir}/imgs/b.gif`, "GIF89a not really");
    const bad = pngOf(digits, 1);
    bad[bad.length - 20] ^= 1;
    await Deno.writeFile(`${dir}/imgs/c.png`, bad);
    const r = await runCli([
      "predict",
      "--model",
      MODEL,
      "--images",
      `${dir}/imgs`,
      "--backend",
      "cpu",
      "--json",
    ]);
    equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    deepEqual([out.n, out.skipped], [1, 2]);
    ok(
      r.stderr.includes(
        `edgetrain predict: skipped: Cannot read image "${dir}/imgs/b.gif": GIF is not a supported format (PNG, JPEG, WebP or BMP)`,
      ),
      r.stderr,
    );
    match(r.stderr, /skipped: Cannot read image ".*c\.png": PNG chunk "IDAT" at byte \d+ has a bad CRC/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgetrain predict rejects an out-of-range label with its line, and a zero-byte labels file by name (issue 14 item 10)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/imgs`);
    for (let i = 0; i < 3; i++) await Deno.writeFile(`${dir}/imgs/${i}.png`, pngOf(digits, i));
    await Deno.writeTextFile(`${dir}/imgs/labels.csv`, "name,label\n0.png,7\n1.png,12\n2.png,1\n");
    const r = await runCli(["predict", "--model", MODEL, "--images", `${dir}/imgs`, "--backend", "cpu"]);
    equal(r.code, 1);
    equal(
      errorLine(r),
      `edgetrain predict: Labels "${dir}/imgs/labels.csv" line 3: label 12 is outside 0..9 (model "${MODEL}" has 10 classes)`,
    );
    await Deno.writeTextFile(`${dir}/empty.txt`, "");
    const e = await runCli([
      "predict",
      "--model",
      MODEL,
      "--images",
      "fixtures/streams/mnist_c/clean-images-idx3-ubyte.gz",
      "--labels",
      `${dir}/empty.txt`,
      "--backend",
      "cpu",
    ]);
    equal(e.code, 1);
    equal(errorLine(e), `edgetrain predict: Labels file "${dir}/empty.txt" is empty (0 bytes)`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgetrain predict warns when a 3-channel model has no --mean/--std or 0-255 values (issue 13 item 6)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/imgs`);
    await Deno.copyFile(`${GOLDENS}/src_rgb_67x53.png`, `${dir}/imgs/a.png`);
    const base = [
      "predict",
      "--model",
      RGB_MODEL,
      "--images",
      `${dir}/imgs`,
      "--backend",
      "cpu",
      "--resize",
      "32",
      "--center-crop",
      "32",
      "--json",
    ];
    const none = await runCli(base);
    equal(none.code, 0, none.stderr);
    match(
      none.stderr,
      /edgetrain predict: warning: no --mean for a 3-channel model: torchvision models expect --mean 0.485,0.456,0.406/,
    );
    const raw = await runCli([...base, "--mean", "123.7,116.3,103.5", "--std", "58.4,57.1,57.4"]);
    equal(raw.code, 0, raw.stderr);
    match(raw.stderr, /warning: --mean 123.7,116.3,103.5 looks like 0-255 values/);
    const fine = await runCli([...base, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]);
    ok(!fine.stderr.includes("warning"), fine.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs the CLI through _peak_rss.ts: its result and the process's peak RSS in MiB. */
async function runMeasured(args: string[]): Promise<CliResult & { peakMiB: number }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", new URL("./_peak_rss.ts", import.meta.url).pathname, ...args],
    env: { EDGETRAIN_PROGRESS: "0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const kib = Number(/peak_rss_kib=(\d+)/.exec(stderr)?.[1]);
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: stderr.replace(/peak_rss_kib=.*\n?/, ""),
    peakMiB: kib / 1024,
  };
}

Deno.test("edgetrain predict refuses PNG and gzipped-IDX bombs with one line, exit 1 and a small peak RSS (issue 14 item 1)", async () => {
  const baseline = await runMeasured([
    "predict",
    "--model",
    MODEL,
    "--images",
    `${BOMBS}/nope.png`,
    "--backend",
    "cpu",
  ]);
  equal(baseline.code, 1);
  const cases: [string, RegExp][] = [
    ["png_46000x46000.png", /PNG declares 46000x46000 = 2116000000 pixels, over the limit of 67108864/],
    ["png_20000x20000.png", /PNG declares 20000x20000 = 400000000 pixels, over the limit of 67108864/],
    ["bomb-images-idx3-ubyte.gz", /inflates past the 7840016 bytes its IDX header declares/],
  ];
  for (const [file, message] of cases) {
    const r = await runMeasured([
      "predict",
      "--model",
      MODEL,
      "--images",
      `${BOMBS}/${file}`,
      "--backend",
      "cpu",
    ]);
    equal(r.code, 1, `${file}: refused, not killed: ${r.stderr}`);
    match(errorLine(r), message);
    ok(Number.isFinite(r.peakMiB), "VmHWM was read");
    // The CLI alone (a missing file) sets the baseline; a decoded bomb would add 400 MiB to 2 GiB.
    ok(
      r.peakMiB < baseline.peakMiB + 64,
      `${file}: peak ${r.peakMiB.toFixed(0)} MiB vs ${baseline.peakMiB.toFixed(0)} MiB`,
    );
  }
});
