/**
 * Parity of imported torchvision models with PyTorch: for every NAME_*.onnx in a folder written by
 * tools/fixtures/export_zoo.py, import it, run the reference batch (NAME.ref.json) and report
 * max |logit - torch| / max |torch logit| per backend. tests/backend/zoo_parity_test.ts runs it on the committed
 * small models; `deno task zoo` exports the full zoo with PyTorch and runs it there, writing the table
 * docs/zoo.md shows.
 *
 *   deno run -A --unstable-webgpu tools/zoo_parity.ts DIR [--backends cpu,webgpu] [--json]
 */
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { noGrad } from "../src/autograd/tape.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { loadModel } from "../src/onnx/model.ts";
import { Tensor } from "../src/tensor.ts";

export interface Reference {
  model: string;
  input: Float32Array;
  inputShape: number[];
  output: Float32Array;
}

function decodeF32(b64: string): Float32Array {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  return Float32Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

export async function readReference(path: string): Promise<Reference> {
  const r = JSON.parse(await Deno.readTextFile(path));
  return {
    model: r.model,
    input: decodeF32(r.input_f32le_b64),
    inputShape: r.input_shape,
    output: decodeF32(r.output_f32le_b64),
  };
}

/** max |a - b| / max |b|: the parity measure of the zoo table. */
export function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return Number.isNaN(diff) || got.length !== want.length ? Infinity : diff / scale;
}

/** Import `file` on `b`, run the reference batch (per sample when the export has a fixed batch of 1). */
export async function parityOf(b: Backend, file: string, ref: Reference): Promise<number> {
  const model = importOnnx(b, await loadModel(file));
  try {
    const x = Tensor.from(b, ref.input, ref.inputShape);
    const y = noGrad(() => model.call(x));
    const got = await y.data();
    x.dispose();
    y.dispose();
    return relativeError(got, ref.output);
  } finally {
    model.dispose();
  }
}

export interface ParityRow {
  file: string;
  model: string;
  errors: Record<string, number>;
}

/** Every export in `dir` against its reference on each backend. */
export async function zooParity(
  dir: string,
  backends: Record<string, Backend>,
  onRow?: (row: ParityRow) => void,
): Promise<ParityRow[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".onnx")) files.push(e.name);
  files.sort();
  const rows: ParityRow[] = [];
  for (const f of files) {
    const model = f.replace(/_(eval|preserve).*$/, "");
    const ref = await readReference(`${dir}/${model}.ref.json`);
    const errors: Record<string, number> = {};
    for (const [name, b] of Object.entries(backends)) errors[name] = await parityOf(b, `${dir}/${f}`, ref);
    const row = { file: f, model, errors };
    rows.push(row);
    onRow?.(row);
  }
  return rows;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) throw new Error("usage: zoo_parity.ts DIR [--backends cpu,webgpu] [--json]");
  const i = Deno.args.indexOf("--backends");
  const names = (i >= 0 ? Deno.args[i + 1] : "cpu,webgpu").split(",");
  const backends: Record<string, Backend> = {};
  for (const n of names) {
    if (n === "cpu") backends.cpu = new CpuBackend();
    else {
      const { createWebGpuBackend } = await import("../src/backend/webgpu/mod.ts");
      backends.webgpu = await createWebGpuBackend();
    }
  }
  const json = Deno.args.includes("--json");
  if (!json) {
    console.log(`| export | ${names.map((n) => `${n}: max abs diff / max abs logit`).join(" | ")} |`);
  }
  if (!json) console.log(`|---|${names.map(() => "---:").join("|")}|`);
  const rows = await zooParity(dir, backends, (r) => {
    if (!json) console.log(`| ${r.file} | ${names.map((n) => r.errors[n].toExponential(1)).join(" | ")} |`);
  });
  if (json) console.log(JSON.stringify(rows));
  const worst = Math.max(...rows.flatMap((r) => Object.values(r.errors)));
  if (!json) console.log(`\n${rows.length} exports, worst ${worst.toExponential(2)} (limit 1e-4)`);
  Deno.exit(worst <= 1e-4 ? 0 : 1);
}
