/**
 * `deno task zoo`: the full torchvision zoo with edgetrain. Exports every architecture with PyTorch
 * (tools/fixtures/export_zoo.py --set full, into the git-ignored .zoo/), then prints the tables docs/zoo.md
 * shows:
 *   1. parity: max |logit - torch| / max |torch logit| per export on cpu and webgpu (limit 1e-4);
 *   2. `adapt --method bn` and `--method tent` on every PRESERVE export;
 *   3. `train --top-blocks 2` on resnet18, mobilenet_v2 and convnext_tiny, and `train --method mobiletl` on
 *      a MobileNetV2 whose modules have non-torchvision names (irb_custom).
 *
 *   deno task zoo [--skip-export] [--dir .zoo] [--sections parity,adapt,train]
 */
import { encode } from "fast-png";
import { CpuBackend } from "../src/backend/cpu.ts";
import { Rng } from "../src/random.ts";
import type { Backend } from "../src/backend/backend.ts";
import { zooParity } from "./zoo_parity.ts";

const args = Deno.args;
const dir = args.includes("--dir") ? args[args.indexOf("--dir") + 1] : ".zoo";
const sections = new Set(
  (args.includes("--sections") ? args[args.indexOf("--sections") + 1] : "parity,adapt,train").split(","),
);
const decoder = new TextDecoder();

async function run(cmd: string, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, {
    args: argv,
    env: { EDGETRAIN_PROGRESS: "0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function cli(argv: string[]) {
  return run(Deno.execPath(), ["run", "-A", "--unstable-webgpu", "main.ts", ...argv]);
}

if (!args.includes("--skip-export")) {
  console.error(`exporting the zoo with PyTorch into ${dir}/ ...`);
  const r = await run("/usr/bin/python3", ["tools/fixtures/export_zoo.py", "--set", "full", dir]);
  if (r.code !== 0) throw new Error(`export_zoo.py failed:\n${r.stderr}`);
}

const backends: Record<string, Backend> = { cpu: new CpuBackend() };
try {
  const { createWebGpuBackend } = await import("../src/backend/webgpu/mod.ts");
  backends.webgpu = await createWebGpuBackend();
} catch (e) {
  console.error(`no WebGPU: ${(e as Error).message}`);
}
const names = Object.keys(backends);
let worst = 0;
if (sections.has("parity")) {
  console.log(`## Parity with PyTorch (${dir}, 2-image batch)\n`);
  console.log(`| export | ${names.map((n) => `${n}: max abs diff / max abs logit`).join(" | ")} |`);
  console.log(`|---|${names.map(() => "---:").join("|")}|`);
  const rows = await zooParity(dir, backends, (r) => {
    console.log(`| ${r.file} | ${names.map((n) => r.errors[n].toExponential(1)).join(" | ")} |`);
  });
  worst = Math.max(...rows.flatMap((r) => Object.values(r.errors)));
  console.log(`\n${rows.length} exports, worst ${worst.toExponential(2)} (limit 1e-4).\n`);
}
const exports: string[] = [];
for await (const e of Deno.readDir(dir)) if (e.name.endsWith("_preserve.onnx")) exports.push(e.name);
exports.sort();

// An ImageFolder of 4 classes x 4 images (96x96 RGB): the stream adapt and train read (the CPU reference
// backend runs the big models at seconds per batch).
const data = await Deno.makeTempDir({ prefix: "edgetrain-zoo-data-" });
const rng = new Rng(5);
for (let c = 0; c < 4; c++) {
  await Deno.mkdir(`${data}/c${c}`);
  for (let i = 0; i < 4; i++) {
    const px = Uint8Array.from(rng.uniforms(96 * 96 * 3, 0, 1), (v) => Math.round(20 * c + 60 * v));
    await Deno.writeFile(`${data}/c${c}/${i}.png`, encode({ width: 96, height: 96, data: px, channels: 3 }));
  }
}
const PRE = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--backend", "cpu", "--json"];
const brief = (
  r: { code: number; stdout: string; stderr: string },
  f: (o: Record<string, unknown>) => string,
) =>
  r.code === 0
    ? f(JSON.parse(r.stdout.trim().split("\n").at(-1)!))
    : `error: ${r.stderr.trim().split("\n").at(-1)}`;

if (sections.has("adapt")) {
  console.log("## adapt on every PRESERVE export (16 images, batch 8, cpu)\n");
  console.log("| model | --method bn | --method tent |");
  console.log("|---|---|---|");
  for (const file of exports) {
    const cells = [];
    for (const method of ["bn", "tent"]) {
      const r = await cli([
        "adapt",
        "--model",
        `${dir}/${file}`,
        "--images",
        data,
        "--method",
        method,
        "--batch",
        "8",
        ...PRE,
      ]);
      cells.push(
        brief(r, (o) => `ok: ${o.updates} updates, ${Math.round(o.ms_per_batch as number)} ms/batch`),
      );
    }
    console.log(`| ${file} | ${cells.join(" | ")} |`);
  }
}

if (sections.has("train")) {
  console.log("\n## train (16 images of 4 classes: --num-classes 4, 1 epoch, batch 8, cpu)\n");
  console.log("| model | command | trained blocks | trainable parameters | ms/batch |");
  console.log("|---|---|---|---:|---:|");
  const trains: [string, string[]][] = [
    ["resnet18_preserve.onnx", ["--method", "full", "--top-blocks", "2"]],
    ["mobilenet_v2_preserve.onnx", ["--method", "full", "--top-blocks", "2"]],
    ["convnext_tiny_preserve.onnx", ["--method", "full", "--top-blocks", "2"]],
    ["mobilenet_v2_preserve.onnx", ["--method", "mobiletl", "--top-blocks", "2"]],
    ["irb_custom_preserve.onnx", ["--method", "mobiletl", "--top-blocks", "2"]],
  ];
  for (const [file, extra] of trains) {
    const r = await cli([
      "train",
      "--model",
      `${dir}/${file}`,
      "--images",
      data,
      "--num-classes",
      "4",
      "--epochs",
      "1",
      "--batch",
      "8",
      ...extra,
      ...PRE,
    ]);
    const cell = brief(
      r,
      (o) =>
        `${(o.trained_blocks as string[]).join(", ")} | ${o.trainable_parameters} | ${
          Math.round(o.ms_per_batch as number)
        }`,
    );
    console.log(`| ${file} | train ${extra.join(" ")} | ${cell} |`);
  }
}
await Deno.remove(data, { recursive: true });
Deno.exit(worst <= 1e-4 ? 0 : 1);
