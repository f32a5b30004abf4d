/**
 * `adapt`'s driver of the stream loop (stream.ts) over a sequence of domains: chunks in order (the chunk is
 * how frames arrive: 1 for a camera), inputs that are not finite reported and skipped, protocols (continual,
 * reset each domain), and the report — online error per domain (every answer is given before the method
 * learns from it), learning steps, the memory bank, resets, back-offs, timing and the ledger's peaks.
 */
import type { Backend } from "../backend/backend.ts";
import type { ImageSet } from "../data/images.ts";
import { imageName } from "../data/images.ts";
import { outputShape, preprocessBatch, type PreprocessOptions } from "../data/preprocess.ts";
import type { Backoff } from "../governor/guard.ts";
import { Tensor } from "../tensor.ts";
import {
  AdaptStream,
  type ChunkEvent,
  type StreamObserver,
  type StreamOptions,
  type StreamPosition,
} from "./stream.ts";
import type { TtaMethod } from "./tta.ts";
import { bankOf, type BankSummary } from "./bank/mod.ts";

export type Protocol = "continual" | "reset-each-domain";

export interface Domain {
  /** What the user passed (a path or a corruption name): reported as `images`. */
  name: string;
  set: ImageSet;
}

/** The stream's observers plus what only a run over domains has. */
export interface RunObserver extends StreamObserver {
  /** A domain starts (`n` images). */
  domain?(e: { index: number; name: string; n: number; of: number }): void;
  /** A chunk's online predictions, with the indices of its images in the domain's set (skipped ones left out). */
  predicted?(e: { domain: number; indices: number[]; logits: Float32Array; classes: number }): void;
  /** A chunk was scored against its labels (`rows` includes skipped inputs). */
  scored?(e: { rows: number; wrong: number; labeled: number }): void;
  /** The run ended; `error` is the online error over every labelled input, or null. */
  done?(e: { error: number | null }): void;
}

export interface AdaptOptions extends StreamOptions {
  batch: number;
  protocol?: Protocol;
  preprocess?: PreprocessOptions;
  observers?: RunObserver[];
  /**
   * Start a new ledger window, so peak_bytes is this run's (default true). A run inside another measured
   * one (train's validation) keeps the enclosing window.
   */
  resetPeak?: boolean;
}

export interface DomainReport {
  images: string;
  n: number;
  /** Online error (fraction) when labels exist, else null. */
  error: number | null;
  skipped: number;
  /** With --bank: the adapter slot that answered most of this segment's frames. */
  slot?: number;
}

export interface SkippedInput {
  images: string;
  name: string;
  reason: string;
}

export interface ResetRecord {
  domain: number;
  batch: number;
  reason: string;
}

export interface AdaptReport {
  method: string;
  protocol: Protocol;
  batch: number;
  n: number;
  error: number | null;
  domains: DomainReport[];
  resets: number;
  reset_events: ResetRecord[];
  skipped: number;
  skipped_inputs: SkippedInput[];
  /** Chunks whose learning changed parameters. */
  updates: number;
  /** Learning steps on the memory bank. */
  adaptation_steps: number;
  /** Frames in the memory bank at the end, and the bank's capacity in frames and bytes (ledger "bank"). */
  bank: { size: number; capacity: number; bytes: number } | null;
  /** With --bank, the adapter bank (src/methods/bank/; `bank` above is the memory bank of frames). */
  adapters?: BankSummary;
  mean_entropy: number;
  /** Steady-state time per chunk: the mean over every chunk after the first. */
  ms_per_batch: number;
  /** The first chunk's time (pipeline/shader compilation, lazily created state), reported apart. */
  warmup_ms: number;
  peak_bytes: number;
  peak_saved_bytes: number;
  /** The runtime guard's back-offs, when a guard ran the steps. */
  backoffs?: Backoff[];
}

/** Per-row flags: true where every preprocessed value is finite. */
function finiteRows(x: Float32Array, rows: number): boolean[] {
  const per = x.length / rows;
  const ok: boolean[] = [];
  for (let r = 0; r < rows; r++) {
    let good = true;
    for (let i = r * per; i < (r + 1) * per; i++) {
      if (!Number.isFinite(x[i])) {
        good = false;
        break;
      }
    }
    ok.push(good);
  }
  return ok;
}

/** The rows of x [rows, per] where keep is true. */
function keptRows(x: Float32Array, keep: boolean[]): Float32Array {
  const per = x.length / keep.length;
  const out = new Float32Array(keep.filter(Boolean).length * per);
  let k = 0;
  keep.forEach((good, i) => {
    if (good) out.set(x.subarray(i * per, (i + 1) * per), per * k++);
  });
  return out;
}

/**
 * One chunk through the stream as the driver feeds it: the input tensor lives for the step only. The
 * governor's estimator feeds its chunks through this too (`data` null: the null backend needs no values).
 */
export async function feedChunk(
  stream: AdaptStream,
  backend: Backend,
  data: Float32Array | null,
  shape: number[],
  at?: StreamPosition,
): Promise<ChunkEvent> {
  const input = data ? Tensor.from(backend, data, shape) : Tensor.empty(backend, shape);
  try {
    return await stream.process(input, at);
  } finally {
    input.dispose();
  }
}

export async function runAdaptation(
  backend: Backend,
  method: TtaMethod,
  domains: Domain[],
  options: AdaptOptions,
): Promise<AdaptReport> {
  const protocol = options.protocol ?? "continual";
  const batch = options.batch;
  if (!(Number.isInteger(batch) && batch >= 1)) {
    throw new Error(`adapt: batch must be a positive integer, got ${batch}`);
  }
  const observers = options.observers ?? [];
  const report: AdaptReport = {
    method: method.name,
    protocol,
    batch,
    n: 0,
    error: null,
    domains: [],
    resets: 0,
    reset_events: [],
    skipped: 0,
    skipped_inputs: [],
    updates: 0,
    adaptation_steps: 0,
    bank: null,
    mean_entropy: 0,
    ms_per_batch: 0,
    warmup_ms: 0,
    peak_bytes: 0,
    peak_saved_bytes: 0,
  };
  const times: number[] = [];
  let entropySum = 0;
  /** Frames each adapter slot answered, per domain. */
  const slotFrames: Map<number, number>[] = domains.map(() => new Map());
  const stream = new AdaptStream(method, options);
  stream.observe({
    chunk: (e: ChunkEvent) => {
      times.push(e.ms);
      const tally = e.adapters && slotFrames[e.domain];
      tally?.set(e.adapters!.active, (tally.get(e.adapters!.active) ?? 0) + e.rows);
      entropySum += e.result.entropy * e.rows;
      if (e.result.updated) report.updates++;
      report.adaptation_steps += e.result.learned ?? 0;
      if (e.result.bank) report.bank = { ...e.result.bank };
    },
    reset: (e) => {
      // Protocol resets are the run's schedule, not events of the adaptation.
      if (e.cause === "protocol") return;
      report.resets++;
      report.reset_events.push({ domain: e.domain, batch: e.chunk, reason: e.reason });
    },
  });
  for (const o of observers) stream.observe(o);
  if (options.resetPeak !== false) backend.ledger.resetPeak();
  let wrongAll = 0, labeledAll = 0;
  for (const [d, domain] of domains.entries()) {
    const { set } = domain;
    if (protocol === "reset-each-domain" && d > 0) stream.reset("protocol", `domain ${domain.name}`);
    for (const o of observers) o.domain?.({ index: d, name: domain.name, n: set.n, of: domains.length });
    let wrong = 0, labeled = 0, n = 0, skipped = 0;
    const shape = outputShape(set, options.preprocess);
    for (let start = 0, b = 0; start < set.n; start += batch, b++) {
      const idx = Array.from({ length: Math.min(batch, set.n - start) }, (_, i) => start + i);
      const raw = preprocessBatch(set, idx, options.preprocess);
      const ok = finiteRows(raw, idx.length);
      const keepIdx = idx.filter((_, i) => ok[i]);
      ok.forEach((good, i) => {
        if (good) return;
        report.skipped_inputs.push({
          images: domain.name,
          name: imageName(set, idx[i]),
          reason: "NaN or infinite value after preprocessing",
        });
        skipped++;
      });
      let chunkWrong = 0;
      if (keepIdx.length) {
        const x = keepIdx.length < idx.length ? keptRows(raw, ok) : raw;
        const dims = [keepIdx.length, shape.channels, shape.height, shape.width];
        const event = await feedChunk(stream, backend, x, dims, { domain: d, chunk: b });
        for (const o of observers) {
          o.predicted?.({
            domain: d,
            indices: keepIdx,
            logits: event.result.logits,
            classes: event.result.classes,
          });
        }
        if (set.labels) {
          keepIdx.forEach((i, k) => {
            if (event.stats.predictions[k] !== set.labels![i]) chunkWrong++;
          });
          labeled += keepIdx.length;
        }
        n += keepIdx.length;
      }
      wrong += chunkWrong;
      for (const o of observers) {
        o.scored?.({ rows: idx.length, wrong: chunkWrong, labeled: set.labels ? keepIdx.length : 0 });
      }
    }
    const slot = [...slotFrames[d]].reduce<[number, number] | null>(
      (a, b) => (!a || b[1] > a[1] ? b : a),
      null,
    );
    report.domains.push({
      images: domain.name,
      n,
      error: labeled ? wrong / labeled : null,
      skipped,
      ...(slot ? { slot: slot[0] } : {}),
    });
    report.n += n;
    report.skipped += skipped;
    wrongAll += wrong;
    labeledAll += labeled;
  }
  const snap = backend.ledger.snapshot();
  report.error = labeledAll ? wrongAll / labeledAll : null;
  report.mean_entropy = report.n ? entropySum / report.n : 0;
  report.warmup_ms = times[0] ?? 0;
  const steady = times.length > 1 ? times.slice(1) : times;
  report.ms_per_batch = steady.length ? steady.reduce((s, t) => s + t, 0) / steady.length : 0;
  report.peak_bytes = snap.peakBytes;
  report.peak_saved_bytes = snap.peak.saved;
  if (options.guard) report.backoffs = options.guard.backoffs;
  const bank = bankOf(method);
  if (bank) report.adapters = bank.summary();
  for (const o of observers) o.done?.({ error: report.error });
  return report;
}
