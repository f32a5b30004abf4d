/**
 * The wasm backend against PyTorch CPU and onnxruntime-web wasm, measured in one run with the contenders
 * interleaved (round r runs each of them in turn, starting with a different one every round), so load from
 * other processes falls on all of them alike. Reported: the median of every run of each, the machine's load
 * average before and after, and edgetrain's speed as a fraction of each peer's (peer ms / edgetrain ms).
 *
 *   (a) TENT step of the MobileNetV2-style IRB net (src/nn/mobilenet.ts), batch 64, 1x32x32, from the same
 *       weights and input in both (first-step losses compared): target >= 0.5x PyTorch;
 *   (b) mobilenet_v2 forward at 224x224, batch 8 (fixtures/models/mobilenet_v2_eval.onnx re-declared at 224;
 *       PyTorch runs torchvision's with BN folded, the same graph): targets >= 0.5x PyTorch, >= onnxruntime;
 *   (c) GEMM 1024^3 GFLOP/s on 1 and 2 threads against PyTorch (its BLAS on as many threads).
 */
import type { Backend } from "../../src/backend/backend.ts";
import { createWasmBackend, type WasmBackend } from "../../src/backend/wasm/mod.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { Tent } from "../../src/methods/tent.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";
import { decodeModel } from "../../src/onnx/model.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { mobilenetAt, type OrtPeer, startOrt, type Times, TorchPeer } from "./cpu_peers.ts";
import { processCpuSeconds } from "./kernels_bench.ts";

export interface WasmBenchOptions {
  rounds: number;
  quick: boolean;
  threads: number;
  torch: boolean;
  ort: boolean;
  print(line: string): void;
}

type Runner = (reps: number) => Promise<Times>;

interface Stats {
  median_ms: number;
  min_ms: number;
  /** Median process CPU time of a run: robust to other load for one thread (it sums threads otherwise). */
  median_cpu_ms: number;
  runs: number;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function stats(t: Times): Stats {
  return {
    median_ms: round(median(t.ms)),
    min_ms: round(Math.min(...t.ms)),
    median_cpu_ms: round(median(t.cpu)),
    runs: t.ms.length,
  };
}

const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d;

function load(): number {
  try {
    return round(Deno.loadavg()[0]);
  } catch {
    return -1;
  }
}

/** Round-robin rounds; returns every run's times per contender. */
async function interleave(contenders: Record<string, Runner>, rounds: number, reps: number) {
  const names = Object.keys(contenders);
  const out: Record<string, Times> = Object.fromEntries(names.map((n) => [n, { ms: [], cpu: [] }]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length];
      const t = await contenders[name](reps);
      out[name].ms.push(...t.ms);
      out[name].cpu.push(...t.cpu);
    }
  }
  return out;
}

/** A runner timing each call of `body` (which must finish its work before resolving), wall and CPU. */
function timedRunner(body: () => Promise<unknown>): Runner {
  return async (reps) => {
    const out: Times = { ms: [], cpu: [] };
    for (let i = 0; i < reps; i++) {
      const c0 = processCpuSeconds(), t0 = performance.now();
      await body();
      out.ms.push(performance.now() - t0);
      out.cpu.push((processCpuSeconds() - c0) * 1000);
    }
    return out;
  };
}

async function gemmRunner(b: Backend, n: number): Promise<{ run: Runner; dispose(): void }> {
  const rng = new Rng(0);
  const a = b.alloc(n * n, { category: "workspace" }), bb = b.alloc(n * n, { category: "workspace" });
  const c = b.alloc(n * n, { category: "workspace" });
  b.write(a, rng.uniforms(n * n, 0, 1));
  b.write(bb, rng.uniforms(n * n, 0, 1));
  const attrs = {
    batch: 1,
    m: n,
    n,
    k: n,
    transA: false,
    transB: false,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    accumulate: false,
  };
  const run = timedRunner(async () => {
    b.run("matmul", { a, b: bb, out: c, attrs });
    await b.sync();
  });
  await run(3); // warm-up: V8 optimises the kernels after their first runs
  return { run, dispose: () => [a, bb, c].forEach((s) => b.release(s)) };
}

export async function wasmSection(o: WasmBenchOptions): Promise<unknown[]> {
  const rows: unknown[] = [];
  let torch: TorchPeer | null = null;
  let torchInfo: Record<string, unknown> | string = "disabled (--no-torch)";
  if (o.torch) {
    const t = await TorchPeer.start();
    if ("peer" in t) {
      torch = t.peer;
      torchInfo = t.info;
    } else {
      torchInfo = t.error;
      o.print(`PyTorch peer skipped: ${t.error}`);
    }
  }
  // One backend per thread count of threadVariants(): o.threads, and 1.
  const backends = await Promise.all(
    threadVariants(o.threads).map((v) => createWasmBackend({ threads: v.threads })),
  );
  const wasm = backends[0];
  o.print(`wasm backend: ${wasm.threads} threads, ${wasm.simd}; PyTorch: ${JSON.stringify(torchInfo)}`);
  const rounds = o.quick ? 1 : o.rounds;
  try {
    rows.push(await tentCase(backends, torch, rounds, o));
    rows.push(await mobilenetCase(backends, torch, rounds, o));
    rows.push(...await gemmCases(torch, rounds, o));
  } finally {
    torch?.close();
    for (const b of backends) b.dispose();
  }
  return [{ name: "peers", torch: torchInfo, wasm: { threads: wasm.threads, simd: wasm.simd } }, ...rows];
}

/** Which contender each peer is compared with: the same thread count. */
const PAIRS: [string, string][] = [
  ["edgetrain", "torch"],
  ["edgetrain_1t", "torch_1t"],
  ["edgetrain_1t", "onnxruntime"],
  ["edgetrain", "onnxruntime"],
];

function report(
  name: string,
  ms: Record<string, Times>,
  extra: Record<string, unknown>,
  o: WasmBenchOptions,
  loadBefore: number,
): Record<string, unknown> {
  const row: Record<string, unknown> = { name, ...extra, load_before: loadBefore, load_after: load() };
  for (const [who, times] of Object.entries(ms)) row[who] = stats(times);
  const parts: string[] = [];
  for (const [ours, peer] of PAIRS) {
    if (!ms[ours] || !ms[peer]) continue;
    // Speed as a fraction of the peer's: > 1 is faster than the peer. By CPU time too, for one thread.
    const a = row[ours] as Stats, b = row[peer] as Stats;
    const ratio = round(b.median_ms / a.median_ms, 3);
    row[`speed_${ours}_vs_${peer}`] = ratio;
    let cpu = "";
    if (ours.endsWith("_1t") && (peer.endsWith("_1t") || peer === "onnxruntime")) {
      row[`cpu_speed_${ours}_vs_${peer}`] = round(b.median_cpu_ms / a.median_cpu_ms, 3);
      cpu = ` (cpu ${row[`cpu_speed_${ours}_vs_${peer}`]}x)`;
    }
    parts.push(`${ours}/${peer} ${ratio}x${cpu}`);
  }
  const medians = Object.keys(ms).map((w) => `${w} ${(row[w] as Stats).median_ms} ms`).join(", ");
  o.print(`${name}: ${medians}; speed ${parts.join(", ")} [load ${loadBefore} -> ${row.load_after}]`);
  return row;
}

/** Per thread count: edgetrain's contender name and the torch peer's runner name and thread count. */
function threadVariants(threads: number): { suffix: string; threads: number }[] {
  return threads === 1
    ? [{ suffix: "_1t", threads: 1 }]
    : [{ suffix: "", threads }, { suffix: "_1t", threads: 1 }];
}

async function tentCase(
  backends: WasmBackend[],
  torch: TorchPeer | null,
  rounds: number,
  o: WasmBenchOptions,
) {
  const batch = 64;
  const input = new Rng(11).normals(batch * 32 * 32);
  const contenders: Record<string, Runner> = {};
  const extra: Record<string, unknown> = { batch, input: [1, 32, 32], threads: o.threads };
  const cleanup: (() => void)[] = [];
  for (const [i, v] of threadVariants(o.threads).entries()) {
    const b = backends[i];
    const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
    if (torch && i === 0) {
      const path = await Deno.makeTempFile({ suffix: ".json" });
      const state = await net.state();
      const spec = {
        state: Object.fromEntries(Object.entries(state).map(([k, v]) => [k, Array.from(v)])),
        input: Array.from(input),
        shape: [batch, 1, 32, 32],
      };
      await Deno.writeTextFile(path, JSON.stringify(spec));
      extra.torch_first_loss = (await torch.request({ op: "tent_setup", path })).first_loss;
      await Deno.remove(path);
    }
    const tent = await Tent.create(net);
    const x = Tensor.from(b, input, [batch, 1, 32, 32]);
    const first = (await tent.learn(x)).entropy;
    if (i === 0) extra.edgetrain_first_loss = first;
    await tent.learn(x);
    contenders[`edgetrain${v.suffix}`] = timedRunner(() => tent.learn(x));
    if (torch) {
      contenders[`torch${v.suffix}`] = async (reps) => {
        await torch.request({ op: "threads", n: v.threads });
        return await torch.times("tent", reps);
      };
    }
    cleanup.push(() => {
      x.dispose();
      tent.dispose();
      net.dispose();
    });
  }
  const before = load();
  const ms = await interleave(contenders, rounds, 3);
  cleanup.forEach((f) => f());
  return report(`tent_step b${batch} 32x32`, ms, extra, o, before);
}

async function mobilenetCase(
  backends: WasmBackend[],
  torch: TorchPeer | null,
  rounds: number,
  o: WasmBenchOptions,
) {
  const batch = 8, size = 224;
  const bytes = await mobilenetAt(size);
  const contenders: Record<string, Runner> = {};
  const extra: Record<string, unknown> = { batch, size, threads: o.threads };
  const cleanup: (() => void)[] = [];
  if (torch) {
    await torch.request({ op: "mnv2_setup", batch, size });
    await torch.times("mnv2", 1);
  }
  for (const [i, v] of threadVariants(o.threads).entries()) {
    const b = backends[i];
    const model = importOnnx(b, decodeModel(bytes));
    const x = Tensor.from(b, new Rng(5).uniforms(batch * 3 * size * size, 0, 1), [batch, 3, size, size]);
    const forward = async () => {
      const y = model.call(x);
      await y.data();
      y.dispose();
    };
    await forward();
    await forward();
    contenders[`edgetrain${v.suffix}`] = timedRunner(forward);
    if (torch) {
      contenders[`torch${v.suffix}`] = async (reps) => {
        await torch.request({ op: "threads", n: v.threads });
        return await torch.times("mnv2", reps);
      };
    }
    cleanup.push(() => {
      x.dispose();
      model.dispose();
    });
  }
  if (o.ort) {
    try {
      const peer: OrtPeer = await startOrt(bytes, batch, size);
      await peer.run();
      extra.onnxruntime_threads = peer.threads;
      contenders.onnxruntime = timedRunner(() => peer.run());
    } catch (e) {
      o.print(`onnxruntime-web peer skipped: ${(e as Error).message}`);
      extra.onnxruntime_error = (e as Error).message;
    }
  }
  const before = load();
  const ms = await interleave(contenders, rounds, 2);
  cleanup.forEach((f) => f());
  return report(`mobilenet_v2 forward b${batch} ${size}x${size}`, ms, extra, o, before);
}

async function gemmCases(torch: TorchPeer | null, rounds: number, o: WasmBenchOptions) {
  const n = o.quick ? 512 : 1024;
  const rows: Record<string, unknown>[] = [];
  for (const threads of [1, 2]) {
    const wasm = await createWasmBackend({ threads });
    const g = await gemmRunner(wasm, n);
    const contenders: Record<string, Runner> = { edgetrain: g.run };
    if (torch) {
      await torch.request({ op: "threads", n: threads });
      await torch.times("gemm", 2, { n });
      contenders.torch = (reps) => torch.times("gemm", reps, { n });
    }
    const before = load();
    const ms = await interleave(contenders, rounds, 3);
    const row = report(
      `gemm ${n}^3 ${threads} thread${threads > 1 ? "s" : ""}`,
      ms,
      { n, threads },
      o,
      before,
    );
    const gf = (ms: number) => round(2 * n ** 3 / (ms * 1e6), 1);
    row.edgetrain_gflops = gf((row.edgetrain as Stats).median_ms);
    if (row.torch) row.torch_gflops = gf((row.torch as Stats).median_ms);
    // Per CPU-second: what one core does, whatever else the machine runs (one thread only).
    if (threads === 1) {
      row.edgetrain_gflops_cpu = gf((row.edgetrain as Stats).median_cpu_ms);
      if (row.torch) row.torch_gflops_cpu = gf((row.torch as Stats).median_cpu_ms);
    }
    o.print(
      `  GFLOP/s: edgetrain ${row.edgetrain_gflops}${row.torch ? `, torch ${row.torch_gflops}` : ""}` +
        (threads === 1
          ? ` (per CPU-second: edgetrain ${row.edgetrain_gflops_cpu}${
            row.torch ? `, torch ${row.torch_gflops_cpu}` : ""
          })`
          : ""),
    );
    rows.push(row);
    g.dispose();
    wasm.dispose();
  }
  return rows;
}

/** The README's table from the section's rows: median ms per run, and edgetrain's speed relative to each peer. */
export function wasmTable(rows: unknown[]): string[] {
  const lines = [
    "| case | threads | edgetrain wasm | PyTorch CPU | edgetrain speed vs PyTorch | onnxruntime-web wasm (1 thread) | vs onnxruntime |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  const ms = (s: unknown) => (s ? `${(s as Stats).median_ms} ms` : "-");
  const x = (v: unknown) => (typeof v === "number" ? `${v}×` : "-");
  for (const r of rows as Record<string, unknown>[]) {
    if (r.name === "peers") continue;
    if (String(r.name).startsWith("gemm")) {
      const gf = (v: unknown, cpu: unknown) =>
        typeof v === "number" ? `${v} GFLOP/s${typeof cpu === "number" ? ` (${cpu} per CPU-s)` : ""}` : "-";
      lines.push(
        `| ${r.name} | ${r.threads} | ${gf(r.edgetrain_gflops, r.edgetrain_gflops_cpu)} | ${
          gf(r.torch_gflops, r.torch_gflops_cpu)
        } | ${x(r.speed_edgetrain_vs_torch)} | - | - |`,
      );
      continue;
    }
    for (const [suffix, threads] of [["", r.threads], ["_1t", 1]] as const) {
      if (!r[`edgetrain${suffix}`]) continue;
      const cpu = r[`cpu_speed_edgetrain${suffix}_vs_torch${suffix}`];
      lines.push(
        `| ${r.name} | ${threads} | ${ms(r[`edgetrain${suffix}`])} | ${ms(r[`torch${suffix}`])} | ${
          x(r[`speed_edgetrain${suffix}_vs_torch${suffix}`])
        }${cpu ? ` (CPU time ${x(cpu)})` : ""} | ${ms(r.onnxruntime)} | ${
          x(r[`speed_edgetrain${suffix}_vs_onnxruntime`])
        } |`,
      );
    }
  }
  return lines;
}
