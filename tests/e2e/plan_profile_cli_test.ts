import { autoCandidates } from "../../src/methods/registry.ts";
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { runCli, STREAMS } from "./_cli.ts";
import { IDX_IMAGES_MAGIC, readIdxImages } from "../../src/data/idx.ts";
import { loadProfile } from "../../src/devices/profile.ts";
import { storesFor } from "../../src/governor/planner.ts";

const MODEL = "fixtures/models/mnist_irb.onnx";
const RANK = autoCandidates("adapt").map((m) => m.name);

/** Lexicographic: method rank, then larger batch, then more faithful store; lower is better. */
function notWorse(a: number[], b: number[]): boolean {
  const i = a.findIndex((v, k) => v !== b[k]);
  return i < 0 || a[i] < b[i];
}

/** The first n clean stream images as an uncompressed IDX file in `dir`. */
async function smallStream(dir: string, n: number): Promise<string> {
  const set = await readIdxImages(`${STREAMS}/clean-images-idx3-ubyte.gz`);
  const bytes = new Uint8Array(16 + n * set.height * set.width);
  const v = new DataView(bytes.buffer);
  [IDX_IMAGES_MAGIC, n, set.height, set.width].forEach((x, i) => v.setUint32(4 * i, x));
  bytes.set(set.pixels.subarray(0, n * set.height * set.width), 16);
  const path = `${dir}/small-images-idx3-ubyte`;
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("edgetrain plan prints the choice, the prediction per category and the alternatives as JSON", async () => {
  const r = await runCli(["plan", "--model", MODEL, "--budget", "256MiB", "--backend", "cpu", "--json"]);
  equal(r.code, 0, r.stderr);
  const p = JSON.parse(r.stdout);
  for (
    const k of [
      "method",
      "batch",
      "store",
      "predicted_peak_bytes",
      "predicted_process_peak_bytes",
      "process_terms",
      "budget_bytes",
      "alternatives",
    ]
  ) {
    ok(k in p, k);
  }
  equal(p.budget_bytes, 256 * 2 ** 20);
  equal(p.backend, "cpu");
  // What must fit is the process: the runtime and the allocator's bytes around the ledger's tensors.
  ok(p.fits && p.predicted_process_peak_bytes <= p.budget_bytes * 0.9);
  ok(p.predicted_process_peak_bytes > p.predicted_peak_bytes + p.process_terms.base_bytes);
  equal(
    Object.values(p.process_terms as Record<string, number>).reduce((s, v) => s + v, 0),
    p.predicted_process_peak_bytes,
  );
  equal(
    Object.values(p.by_category as Record<string, number>).reduce((s, v) => s + v, 0),
    p.predicted_peak_bytes,
  );
  ok(p.alternatives.length > 0);
  const text = await runCli(["plan", "--model", MODEL, "--device", "jetson-nano-4gb", "--method", "tent"]);
  equal(text.code, 0, text.stderr);
  match(text.stdout, /tent, batch 64, store fp32: predicted peak/);
  match(text.stdout, /device jetson-nano-4gb/);
  const none = await runCli(["plan", "--model", MODEL, "--budget", "100KiB", "--method", "tent"]);
  equal(none.code, 1);
  match(none.stderr, /nothing fits/);
});

Deno.test("edgetrain adapt --budget B --memory auto --method auto stays within B and never picks worse for more", async () => {
  const dir = await Deno.makeTempDir();
  const images = await smallStream(dir, 64);
  let prev: number[] | null = null;
  for (const budget of ["160MiB", "256MiB", "2GiB"]) {
    const r = await runCli([
      "adapt",
      "--model",
      MODEL,
      "--images",
      images,
      "--method",
      "auto",
      "--memory",
      "auto",
      "--budget",
      budget,
      "--backend",
      "cpu",
      "--json",
    ]);
    equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    ok(
      out.process_peak_bytes <= out.budget_bytes,
      `${budget}: the process peaked at ${out.process_peak_bytes} > ${out.budget_bytes}`,
    );
    // The prediction is the ledger's count exactly, up to data-dependent filters that skip an update.
    ok(
      out.peak_bytes <= out.predicted_peak_bytes,
      `${budget}: measured ${out.peak_bytes} > ${out.predicted_peak_bytes}`,
    );
    deepEqual(out.backoffs, []);
    const rank = [RANK.indexOf(out.method), -out.memory, storesFor(out.method).indexOf(out.store)];
    if (prev) ok(notWorse(rank, prev), `${budget} picked [${rank}] after [${prev}]`);
    prev = rank;
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain profile writes a schema-valid probed profile that plan accepts", async () => {
  const dir = await Deno.makeTempDir();
  for (const backend of ["cpu", "auto"]) {
    const out = `${dir}/probed-${backend}.json`;
    const r = await runCli(["profile", "--out", out, "--backend", backend, "--seconds", "0.02"]);
    equal(r.code, 0, r.stderr);
    const p = await loadProfile(out);
    equal(p.kind, "probed");
    equal(p.name, `probed-${backend}`);
    ok(p.measured!.matmul_gflops! > 0 && p.measured!.copy_gbps! > 0 && p.measured!.conv_gflops! > 0);
    ok(p.memory.usable_bytes > 0 && p.memory.usable_bytes <= p.memory.total_bytes);
    if (backend === "cpu") equal(p.webgpu.available, false);
    else if (p.webgpu.available) ok(p.adapter?.limits?.maxBufferSize);
    const f = p.footprint!;
    ok(f.runtime_bytes > 0 && f.step_bytes >= 0 && f.gc_slack_bytes > 0, "the footprint was measured");
    equal(f.backend, p.webgpu.available ? "webgpu" : "cpu");
    const plan = await runCli(["plan", "--model", MODEL, "--device", out, "--backend", backend, "--json"]);
    equal(plan.code, 0, plan.stderr);
    const planned = JSON.parse(plan.stdout);
    equal(planned.budget_bytes, p.memory.usable_bytes);
    equal(planned.process_terms.step_bytes, f.step_bytes, "plan takes the profile's footprint");
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain plan names a malformed device profile and the field at fault", async () => {
  const dir = await Deno.makeTempDir();
  const bad = `${dir}/bad.json`;
  await Deno.writeTextFile(bad, JSON.stringify({ name: "bad", kind: "probed" }));
  const r = await runCli(["plan", "--model", MODEL, "--device", bad]);
  equal(r.code, 1);
  match(r.stderr, /Invalid device profile ".*bad\.json": \$: missing required field "display_name"/);
  await Deno.writeTextFile(bad, "{ not json");
  match((await runCli(["plan", "--model", MODEL, "--device", bad])).stderr, /is not valid JSON/);
  const both = await runCli(["plan", "--model", MODEL, "--device", bad, "--budget", "1GiB"]);
  equal(both.code, 2);
  match(both.stderr, /--budget and --device exclude each other/);
  await Deno.remove(dir, { recursive: true });
});
