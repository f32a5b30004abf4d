/**
 * The adaptation loop over a stream of domains: batches in order, online predictions (made before each
 * batch's update), per-domain errors, protocols (continual, episodic, reset each domain), the collapse guard,
 * skipped inputs, and the ledger's measured peaks.
 */
import type { Backend } from "../backend/backend.ts";
import type { ImageSet } from "../data/images.ts";
import { imageName } from "../data/images.ts";
import { outputShape, preprocessBatch, type PreprocessOptions } from "../data/preprocess.ts";
import { Progress } from "../cli/progress.ts";
import { Tensor } from "../tensor.ts";
import { CollapseGuard } from "./collapse.ts";
import { logitStats, type StepResult, type TtaMethod } from "./tta.ts";

export type Protocol = "continual" | "episodic" | "reset-each-domain";

export interface Domain {
  /** What the user passed (a path or a corruption name): reported as `images`. */
  name: string;
  set: ImageSet;
}

export interface AdaptOptions {
  batch: number;
  protocol?: Protocol;
  preprocess?: PreprocessOptions;
  /** Collapse guard on (default) or off. */
  collapseGuard?: boolean;
  progress?: boolean;
  /** Called after every batch (the service and benches observe the run). */
  onBatch?: (info: { domain: number; batch: number; predictions: Int32Array; entropy: number }) => void;
  /**
   * Runs each step instead of method.step (the governor's runtime guard, src/governor/guard.ts: backs off to
   * a smaller batch or store on OutOfMemoryError without losing adapted state); its back-offs are reported.
   */
  guard?: { run(method: TtaMethod, x: Tensor): Promise<StepResult>; readonly backoffs: readonly unknown[] };
}

export interface DomainReport {
  images: string;
  n: number;
  /** Online error (fraction) when labels exist, else null. */
  error: number | null;
  skipped: number;
}

export interface SkippedInput {
  images: string;
  name: string;
  reason: string;
}

export interface ResetEvent {
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
  reset_events: ResetEvent[];
  skipped: number;
  skipped_inputs: SkippedInput[];
  updates: number;
  mean_entropy: number;
  ms_per_batch: number;
  peak_bytes: number;
  peak_saved_bytes: number;
  /** The runtime guard's back-offs, when a guard ran the steps. */
  backoffs?: readonly unknown[];
}

/** Indices of images whose preprocessed values are all finite; the others are reported and skipped. */
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
  const total = domains.reduce((s, d) => s + d.set.n, 0);
  const progress = options.progress === false ? null : new Progress({ label: method.name, total });
  backend.ledger.resetPeak();
  let guard: CollapseGuard | null = null;
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
    mean_entropy: 0,
    ms_per_batch: 0,
    peak_bytes: 0,
    peak_saved_bytes: 0,
  };
  let wrongAll = 0, labeledAll = 0, batches = 0, ms = 0, entropySum = 0;
  for (const [d, domain] of domains.entries()) {
    const { set } = domain;
    if (protocol === "reset-each-domain" && d > 0) method.reset();
    progress?.label(`${method.name} ${d + 1}/${domains.length} ${domain.name}`);
    let wrong = 0, labeled = 0, n = 0, skipped = 0;
    const shape = outputShape(set, options.preprocess);
    for (let start = 0, b = 0; start < set.n; start += batch, b++) {
      const idx = Array.from({ length: Math.min(batch, set.n - start) }, (_, i) => start + i);
      let x = preprocessBatch(set, idx, options.preprocess);
      const ok = finiteRows(x, idx.length);
      const keepIdx = idx.filter((_, i) => ok[i]);
      for (const [i, good] of ok.entries()) {
        if (good) continue;
        const name = imageName(set, idx[i]);
        report.skipped_inputs.push({
          images: domain.name,
          name,
          reason: "NaN or infinite value after preprocessing",
        });
        skipped++;
      }
      if (keepIdx.length < idx.length) {
        if (!keepIdx.length) {
          progress?.tick(idx.length);
          continue;
        }
        const per = x.length / idx.length;
        const kept = new Float32Array(keepIdx.length * per);
        let k = 0;
        for (const [i, good] of ok.entries()) {
          if (good) kept.set(x.subarray(i * per, (i + 1) * per), per * k++);
        }
        x = kept;
      }
      if (protocol === "episodic") method.reset();
      const t0 = performance.now();
      const input = Tensor.from(backend, x, [keepIdx.length, shape.channels, shape.height, shape.width]);
      const result = options.guard ? await options.guard.run(method, input) : await method.step(input);
      input.dispose();
      ms += performance.now() - t0;
      batches++;
      const stats = logitStats(result.logits, result.classes);
      guard ??= new CollapseGuard(result.classes);
      entropySum += result.entropy * keepIdx.length;
      if (result.updated) report.updates++;
      if (result.reset) {
        report.resets++;
        report.reset_events.push({ domain: d, batch: b, reason: result.resetReason ?? "reset" });
        guard.clear();
      } else if (options.collapseGuard !== false && protocol !== "episodic" && method.name !== "source") {
        const reason = guard.observe(stats.predictions);
        if (reason) {
          method.reset();
          report.resets++;
          report.reset_events.push({ domain: d, batch: b, reason });
        }
      }
      if (set.labels) {
        keepIdx.forEach((i, k) => {
          if (stats.predictions[k] !== set.labels![i]) wrong++;
        });
        labeled += keepIdx.length;
      }
      n += keepIdx.length;
      options.onBatch?.({ domain: d, batch: b, predictions: stats.predictions, entropy: result.entropy });
      progress?.tick(idx.length, labeled ? `err ${(100 * wrong / labeled).toFixed(1)}%` : "");
    }
    report.domains.push({ images: domain.name, n, error: labeled ? wrong / labeled : null, skipped });
    report.n += n;
    report.skipped += skipped;
    wrongAll += wrong;
    labeledAll += labeled;
  }
  progress?.done(labeledAll ? `err ${(100 * wrongAll / labeledAll).toFixed(2)}%` : "");
  const snap = backend.ledger.snapshot();
  report.error = labeledAll ? wrongAll / labeledAll : null;
  report.mean_entropy = report.n ? entropySum / report.n : 0;
  report.ms_per_batch = batches ? ms / batches : 0;
  report.peak_bytes = snap.peakBytes;
  report.peak_saved_bytes = snap.peak.saved;
  if (options.guard) report.backoffs = options.guard.backoffs;
  return report;
}
