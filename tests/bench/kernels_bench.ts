/**
 * Kernel throughput: matmul, 3x3 / 1x1 / depthwise convolutions and their gradients, edgetrain WebGPU next to
 * TF.js WebGPU on the same adapter. Shapes are MobileNet-like and sized to finish in seconds on llvmpipe.
 */
import type { Backend, Storage } from "../../src/backend/backend.ts";
import type { Conv2dAttrs, KernelArgs, KernelName } from "../../src/backend/kernels.ts";
import { Rng } from "../../src/random.ts";
import type { TfjsPeer } from "./tfjs_peer.ts";

/** One benchmarked operation: enqueue a run, wait for all enqueued runs, free its tensors. */
export interface BenchOp {
  run(): void;
  sync(): Promise<void>;
  dispose(): void;
}

export interface Timing {
  /** Wall milliseconds per run, fastest round. */
  ms: number;
  gflops: number;
  /** Runs timed (after the warm-up). */
  runs: number;
  /**
   * Process CPU milliseconds per run over all rounds (Linux only). On a CPU adapter (llvmpipe) this is the
   * work itself, unaffected by other processes competing for the cores.
   */
  cpuMs?: number;
}

/** User + system CPU seconds of this process (lavapipe's worker threads included), or NaN if unknown. */
export function processCpuSeconds(): number {
  try {
    const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks: USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

export interface KernelRow {
  name: string;
  flops: number;
  edgetrain: Timing | { error: string };
  tfjs: Timing | { error: string } | null;
  /** edgetrain GFLOP/s over TF.js GFLOP/s (> 1: edgetrain is faster). */
  ratio: number | null;
  /** TF.js CPU time per run over edgetrain's (> 1: edgetrain needs less work); CPU adapters only. */
  cpuRatio: number | null;
}

export interface TimeOptions {
  /** Milliseconds of timed runs per round (default 400). */
  minMs?: number;
  /** Rounds; the fastest is reported, since contention on a shared machine only ever adds time (default 3). */
  rounds?: number;
}

/**
 * Warm up (first run compiles pipelines; the second settles buffer pools), then time rounds of back-to-back
 * runs ended by one sync, and report the fastest round's time per run.
 */
export async function timeOp(op: BenchOp, flops: number, options: TimeOptions = {}): Promise<Timing> {
  const minMs = options.minMs ?? 400, rounds = options.rounds ?? 3;
  for (let i = 0; i < 2; i++) {
    op.run();
    await op.sync();
  }
  let best = Infinity, total = 0;
  const cpu0 = processCpuSeconds();
  for (let r = 0; r < rounds; r++) {
    let runs = 0;
    const t0 = performance.now();
    let elapsed = 0;
    // Double the batch of runs until a round lasts minMs: one sync per round keeps the queue full.
    for (let batch = 1; elapsed < minMs; batch *= 2) {
      for (let i = 0; i < batch; i++) op.run();
      await op.sync();
      runs += batch;
      elapsed = performance.now() - t0;
    }
    best = Math.min(best, elapsed / runs);
    total += runs;
  }
  const cpuMs = (processCpuSeconds() - cpu0) * 1000 / total;
  const t: Timing = { ms: best, gflops: flops / best / 1e6, runs: total };
  if (Number.isFinite(cpuMs)) t.cpuMs = cpuMs;
  return t;
}

function convAttrs(
  n: number,
  cin: number,
  size: number,
  cout: number,
  k: number,
  o: { stride?: number; groups?: number } = {},
): Conv2dAttrs {
  const stride = o.stride ?? 1, pad = (k - 1) >> 1;
  const out = Math.floor((size + 2 * pad - k) / stride) + 1;
  return {
    n,
    cin,
    h: size,
    w: size,
    cout,
    kh: k,
    kw: k,
    strideH: stride,
    strideW: stride,
    padH: pad,
    padW: pad,
    dilationH: 1,
    dilationW: 1,
    groups: o.groups ?? 1,
    outH: out,
    outW: out,
  };
}

/** Multiply-adds x 2 of a convolution (the same for its input and weight gradients). */
export function convFlops(a: Conv2dAttrs): number {
  return 2 * a.n * a.cout * a.outH * a.outW * (a.cin / a.groups) * a.kh * a.kw;
}

export interface KernelCase {
  name: string;
  flops: number;
  edgetrain(b: Backend): BenchOp;
  tfjs(p: TfjsPeer): BenchOp;
}

/** Allocate seeded random inputs and a zero output on `b`, and run `kernel` on them. */
function backendOp<K extends KernelName>(
  b: Backend,
  kernel: K,
  sizes: Record<string, number>,
  out: string,
  attrs: KernelArgs<K>["attrs"],
): BenchOp {
  const rng = new Rng(42);
  const storages: Record<string, Storage> = {};
  for (const [name, n] of Object.entries(sizes)) {
    storages[name] = b.alloc(n, { category: "workspace" });
    b.write(storages[name], rng.uniforms(n));
  }
  const args = { ...storages, attrs } as unknown as KernelArgs<K>;
  return {
    run: () => b.run(kernel, args),
    // Read the output back, as TF.js's data() does: it waits for the queue and costs the same transfer.
    sync: async () => {
      await b.read(storages[out]);
    },
    dispose: () => Object.values(storages).forEach((s) => b.release(s)),
  };
}

function matmulCase(m: number, n: number, k: number): KernelCase {
  return {
    name: `matmul ${m}x${n}x${k}`,
    flops: 2 * m * n * k,
    edgetrain: (b) =>
      backendOp(b, "matmul", { a: m * k, b: k * n, out: m * n }, "out", {
        batch: 1,
        m,
        n,
        k,
        transA: false,
        transB: false,
        strideA: 0,
        strideB: 0,
        strideC: 0,
        accumulate: false,
      }),
    tfjs: (p) => p.matmul(m, n, k),
  };
}

function convCases(label: string, a: Conv2dAttrs): KernelCase[] {
  const xs = a.n * a.cin * a.h * a.w, ws = a.cout * (a.cin / a.groups) * a.kh * a.kw;
  const ys = a.n * a.cout * a.outH * a.outW;
  const flops = convFlops(a);
  const shape = `n${a.n} ${a.h}x${a.w} ${a.cin}->${a.cout}${a.strideH > 1 ? ` s${a.strideH}` : ""}`;
  return [
    {
      name: `${label} ${shape}`,
      flops,
      edgetrain: (b) => backendOp(b, "conv2d", { x: xs, w: ws, out: ys }, "out", a),
      tfjs: (p) => p.conv(a, "forward"),
    },
    {
      name: `${label} grad_input ${shape}`,
      flops,
      edgetrain: (b) => backendOp(b, "conv2d_grad_input", { dy: ys, w: ws, out: xs }, "out", a),
      tfjs: (p) => p.conv(a, "grad_input"),
    },
    {
      name: `${label} grad_weight ${shape}`,
      flops,
      edgetrain: (b) => backendOp(b, "conv2d_grad_weight", { x: xs, dy: ys, out: ws }, "out", a),
      tfjs: (p) => p.conv(a, "grad_weight"),
    },
  ];
}

/** The benchmarked shapes; `quick` trims them for a smoke run. */
export function kernelCases(quick = false): KernelCase[] {
  if (quick) {
    return [matmulCase(128, 128, 128), ...convCases("conv3x3", convAttrs(2, 8, 8, 8, 3))];
  }
  return [
    matmulCase(512, 512, 512),
    matmulCase(1024, 1024, 1024),
    ...convCases("conv3x3", convAttrs(32, 32, 32, 32, 3)),
    ...convCases("conv1x1", convAttrs(64, 32, 16, 96, 1)),
    ...convCases("conv1x1", convAttrs(64, 96, 16, 32, 1)),
    ...convCases("depthwise3x3", convAttrs(64, 96, 16, 96, 3, { groups: 96 })),
    ...convCases("depthwise3x3", convAttrs(64, 96, 32, 96, 3, { stride: 2, groups: 96 })),
  ];
}

function attempt<T>(f: () => T): T | { error: string } {
  try {
    return f();
  } catch (e) {
    return { error: (e as Error).message };
  }
}

async function measure(
  make: () => BenchOp,
  flops: number,
  options: TimeOptions,
): Promise<Timing | { error: string }> {
  const op = attempt(make);
  if ("error" in op) return op;
  try {
    return await timeOp(op, flops, options);
  } catch (e) {
    return { error: (e as Error).message };
  } finally {
    op.dispose();
  }
}

/** The kernel section: every case on edgetrain and (when given) on TF.js, one after the other. */
export async function benchKernels(
  b: Backend,
  peer: TfjsPeer | null,
  options: TimeOptions & { quick?: boolean; filter?: string; onRow?: (row: KernelRow) => void } = {},
): Promise<KernelRow[]> {
  const rows: KernelRow[] = [];
  for (const c of kernelCases(options.quick)) {
    if (options.filter && !c.name.includes(options.filter)) continue;
    const edgetrain = await measure(() => c.edgetrain(b), c.flops, options);
    const tfjs = peer ? await measure(() => c.tfjs(peer), c.flops, options) : null;
    const both = tfjs && "gflops" in tfjs && "gflops" in edgetrain ? { et: edgetrain, tf: tfjs } : null;
    const ratio = both ? both.et.gflops / both.tf.gflops : null;
    const cpuRatio = both?.et.cpuMs && both.tf.cpuMs ? both.tf.cpuMs / both.et.cpuMs : null;
    const row = { name: c.name, flops: c.flops, edgetrain, tfjs, ratio, cpuRatio };
    options.onRow?.(row);
    rows.push(row);
  }
  return rows;
}
