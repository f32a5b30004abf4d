/**
 * The process side of tools/governor_table.ts: `adapt --budget B --memory auto` spawned as a user runs it,
 * with what it predicted and measured — the ledger's peak, the allocator's high-water bytes and the process's
 * peak resident bytes (VmHWM) — for the table of docs/governor.md and the budget sweep.
 */
import { firstImages } from "../tests/e2e/_budget.ts";
import { writeMobileNetV2At } from "../tests/e2e/_mobilenet224.ts";

const MiB = 2 ** 20;
const FOG = "fixtures/streams/mnist_c/fog-s5-images-idx3-ubyte.gz";

export interface AdaptRun {
  model: string;
  backend: string;
  budget: number;
  method: string;
  memory: number;
  store: string;
  predicted_peak_bytes: number;
  peak_bytes: number;
  predicted_allocator_peak_bytes: number;
  allocator_peak_bytes: number;
  predicted_process_peak_bytes: number;
  process_peak_bytes: number;
  /** Set when the run failed (nothing fits). */
  error?: string;
}

/** `adapt ... --budget B --memory auto --json` in a process of its own. */
export async function adaptCli(
  name: string,
  args: string[],
  budget: number,
  backend: string,
): Promise<AdaptRun> {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-webgpu",
      main,
      "adapt",
      ...args,
      "--budget",
      `${budget}B`,
      "--memory",
      "auto",
    ]
      .concat(["--backend", backend, "--json"]),
    env: { EDGETRAIN_PROGRESS: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  if (out.code !== 0) {
    const error = text.decode(out.stderr).trim().split("\n").at(-1) ?? "failed";
    return { model: name, backend, budget, error } as AdaptRun;
  }
  const r = JSON.parse(text.decode(out.stdout));
  console.error(
    `${name} ${backend} ${mib(budget)} MiB: ${r.method}/${r.memory}/${r.store} process ${
      mib(r.process_peak_bytes)
    } MiB, predicted ${mib(r.predicted_process_peak_bytes)}`,
  );
  return { ...r, model: name, backend, budget };
}

const mib = (b: number) => (b / MiB).toFixed(1);
const pct = (measured: number, predicted: number) => {
  const e = measured / predicted - 1;
  return `${e >= 0 ? "+" : ""}${(100 * e).toFixed(1)}%`;
};

/** A temporary folder with mobilenet_v2 at 224 and the first `n` fog images. */
async function workdir(n: number): Promise<{ dir: string; mobilenet: string; images: string }> {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-table-" });
  const mobilenet = `${dir}/mobilenet_v2_224.onnx`;
  await writeMobileNetV2At(mobilenet, 224);
  return { dir, mobilenet, images: await firstImages(FOG, n, `${dir}/fog-idx3-ubyte`) };
}

/** The runs: the demo model and mobilenet_v2 at 224, on the CPU backend and WebGPU, at 512 MiB. */
export async function processRuns(backends: string[]): Promise<AdaptRun[]> {
  const runs: AdaptRun[] = [];
  for (const backend of backends) {
    // As `deno task budget` runs them: 24 images at 224 on the CPU, 8 on lavapipe (about 8 s an image).
    const w = await workdir(backend === "cpu" ? 24 : 8);
    const demo = await firstImages(FOG, 192, `${w.dir}/demo-idx3-ubyte`);
    try {
      runs.push(
        await adaptCli(
          "mnist_irb.onnx (demo, 1x32x32)",
          [
            "--model",
            "fixtures/models/mnist_irb.onnx",
            "--images",
            demo,
            "--method",
            "tent",
          ],
          512 * MiB,
          backend,
        ),
      );
      runs.push(
        await adaptCli(
          "mobilenet_v2 PRESERVE (3x224x224)",
          [
            "--model",
            w.mobilenet,
            "--images",
            w.images,
            "--method",
            "tent",
            ...["--size", "224", "--channels", "3", "--mean", "0.5", "--std", "0.25"],
          ],
          512 * MiB,
          backend,
        ),
      );
    } finally {
      await Deno.remove(w.dir, { recursive: true });
    }
  }
  return runs;
}

/** `adapt --method auto --memory auto --budget B` on the CPU backend over the first 128 fog images. */
export async function budgetSweep(budgets: number[]): Promise<AdaptRun[]> {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-sweep-" });
  const images = await firstImages(FOG, 128, `${dir}/fog-idx3-ubyte`);
  const models: [string, string[]][] = [
    ["mnist_irb.onnx", ["--model", "fixtures/models/mnist_irb.onnx"]],
    ["mobilenet_v3_small_preserve.onnx", [
      "--model",
      "fixtures/models/mobilenet_v3_small_preserve.onnx",
      ...["--size", "32", "--channels", "3", "--mean", "0.5", "--std", "0.25"],
    ]],
  ];
  const runs: AdaptRun[] = [];
  try {
    for (const [name, args] of models) {
      for (const b of budgets) {
        runs.push(await adaptCli(name, [...args, "--images", images, "--method", "auto"], b, "cpu"));
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return runs;
}

const budgetText = (b: number) => b >= 2 ** 30 ? `${b / 2 ** 30} GiB` : `${b / MiB} MiB`;

export function processTable(runs: AdaptRun[]): string {
  const out = [
    "| model | backend | budget | plan | ledger predicted | ledger measured | allocator predicted | allocator " +
    "measured | process predicted | process measured | error | within budget |",
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const r of runs) {
    if (r.error) {
      out.push(`| ${r.model} | ${r.backend} | ${budgetText(r.budget)} | ${r.error} |||||||||`);
      continue;
    }
    out.push(
      `| ${r.model} | ${r.backend} | ${
        budgetText(r.budget)
      } | ${r.method}, memory ${r.memory}, ${r.store} | ` +
        `${mib(r.predicted_peak_bytes)} | ${mib(r.peak_bytes)} | ${
          mib(r.predicted_allocator_peak_bytes)
        } | ` +
        `${mib(r.allocator_peak_bytes)} | ${mib(r.predicted_process_peak_bytes)} | ${
          mib(r.process_peak_bytes)
        } | ` +
        `${pct(r.process_peak_bytes, r.predicted_process_peak_bytes)} | ` +
        `${r.process_peak_bytes <= r.budget ? "yes" : "**no**"} |`,
    );
  }
  return out.join("\n");
}
