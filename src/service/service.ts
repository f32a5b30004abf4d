/**
 * Wires a running service together: backend, model and method, resume from the newest valid checkpoint,
 * the batcher, the HTTP API, the spool, sd_notify (READY, WATCHDOG, STATUS, STOPPING) and a graceful stop
 * that answers what is queued, writes the final checkpoint and only then drops clients that are still
 * sending (so that slow clients cannot push the stop past the unit's TimeoutStopSec and cost the
 * checkpoint). `src/cli/serve.ts` parses flags into ServiceOptions and installs the signal handlers.
 */
import type { PreprocessOptions } from "../data/preprocess.ts";
import { RuntimeGuard } from "../governor/guard.ts";
import type { GuardedBackend } from "../governor/guarded_backend.ts";
import type { ConcreteStore } from "../memory/policy.ts";
import { adaptMethod } from "../methods/registry.ts";
import { type BankSettings, withBank } from "../methods/bank/mod.ts";
import type { OnnxModule } from "../onnx/import.ts";
import { Batcher } from "./batcher.ts";
import { CheckpointStore, sha256Hex } from "./checkpoint.ts";
import { AdaptEngine, type Prediction } from "./engine.ts";
import { Health } from "./health.ts";
import { HttpServer } from "./http1.ts";
import { RequestMetrics } from "./metrics.ts";
import type { ResultsLogOptions } from "./results_log.ts";
import { SdNotify } from "./sd_notify.ts";
import { createHandler, isLoopback } from "./server.ts";
import { Spool } from "./spool.ts";

export interface ServiceOptions {
  /** The model's backend, decorated so the runtime guard can undo a step that ran out of memory. */
  backend: GuardedBackend;
  module: OnnxModule;
  modelPath: string;
  /** The ONNX file's bytes, for the source model hash that checkpoints are tied to. */
  modelBytes: Uint8Array;
  shape: [number, number, number];
  preprocess: PreprocessOptions;
  /** A concrete method (the planner resolves "auto" before this). */
  method: string;
  /** Saved-activation store for backward (the planner's choice). */
  store: ConcreteStore;
  /** The predicted peak of a (batch, store): the guard skips back-offs that would not lower it. */
  peakOf?: (batch: number, store: ConcreteStore) => Promise<number>;
  lr?: number;
  state: string;
  hostname: string;
  port: number;
  /** The learning minibatch: the memory bank's frames (the planner's batch). */
  memory: number;
  /** Learn after this many new frames (default: memory). */
  every?: number;
  statsFrom?: "bank" | "stream";
  /** The target statistics' settled momentum (streaming.ts DEFAULT_MOMENTUM). */
  statsMomentum?: number;
  /** The 1/n warm-up of the statistics after a reset (streaming.ts; default off). */
  statsWarmup?: boolean;
  /** Most requests answered together in one forward. */
  maxChunk: number;
  /** Wait at most this long for more requests to answer together (0: answer as soon as free). */
  flushMs: number;
  checkpointEvery: number;
  keepCheckpoints?: number;
  token: string | null;
  maxBodyBytes: number;
  /** Deadlines for a request's head and body, and the open-connection cap (http1.ts defaults). */
  headerTimeoutMs?: number;
  bodyTimeoutMs?: number;
  maxConnections?: number;
  spool?: string;
  spoolResults?: string;
  /** Spool: how long a file written in place must hold still before it is taken (default 1000 ms). */
  spoolSettleMs?: number;
  /** Spool: rotation of the results file. */
  spoolResultsLog?: ResultsLogOptions;
  collapseGuard?: boolean;
  /** The adapter bank (--bank), with its slot count resolved. */
  bank?: BankSettings;
  log?: (message: string) => void;
}

export interface RunningService {
  url: string;
  engine: AdaptEngine;
  /** Graceful stop (idempotent): refuse new work, answer queued work, checkpoint, notify STOPPING. */
  stop(reason?: string): Promise<void>;
  /** Resolves once stopped. */
  finished: Promise<void>;
}

/** Creates `dir` if needed and proves it writable now, rather than at the first checkpoint. */
export async function checkWritable(dir: string, what: string): Promise<void> {
  const probe = `${dir}/.edgetrain-write-probe-${Deno.pid}`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(probe, new Uint8Array(1), { createNew: true, mode: 0o600 });
    await Deno.remove(probe);
  } catch (e) {
    throw new Error(`${what} "${dir}" is not writable: ${(e as Error).message}`);
  }
}

export async function startService(o: ServiceOptions): Promise<RunningService> {
  const log = o.log ?? ((m: string) => console.error(`edgetrain serve: ${m}`));
  if (!isLoopback(o.hostname) && o.token === null) {
    throw new Error(`Listening on ${o.hostname} without a token is refused: give --token-file`);
  }
  await checkWritable(o.state, "State folder");
  if (o.spool) await checkWritable(o.spool, "Spool folder");
  const modelSha256 = await sha256Hex(o.modelBytes);
  const descriptor = adaptMethod(o.method);
  const method = await descriptor.create(
    o.module,
    withBank({
      lr: o.lr,
      name: o.modelPath,
      stream: {
        capacity: o.memory,
        every: o.every ?? o.memory,
        statsFrom: o.statsFrom,
        momentum: o.statsMomentum,
        warmup: o.statsWarmup,
        collapseGuard: o.collapseGuard,
      },
    }, o.bank),
  );
  const guard = new RuntimeGuard(o.backend, {
    batch: o.memory,
    store: o.store,
    backward: descriptor.backward,
    peakOf: o.peakOf,
  });
  const store = new CheckpointStore(o.state, {
    modelSha256,
    method: method.name,
    keep: o.keepCheckpoints,
    warn: (m) => log(`warning: ${m}`),
  });
  const engine = new AdaptEngine({
    backend: o.backend,
    method,
    shape: o.shape,
    modelPath: o.modelPath,
    modelSha256,
    store,
    checkpointEvery: o.checkpointEvery,
    guard,
    log,
  });
  const resumed = await engine.resume();
  log(
    resumed
      ? `resumed "${method.name}" at step ${resumed.step} from ${resumed.path}`
      : `no usable checkpoint in "${o.state}": starting "${method.name}" from the source model`,
  );

  const health = new Health();
  const batcher: Batcher<Float32Array, Prediction> = new Batcher({
    batch: o.maxChunk,
    flushMs: o.flushMs,
    run: async (xs) => {
      const out = await engine.step(xs);
      health.observe(out);
      if (engine.checkpointDue()) {
        // After this batch's replies, before the next batch: the replies do not wait for the disk.
        batcher.exclusive(() => engine.checkpoint("periodic")).catch((e) => {
          engine.process.errors++;
          log(`checkpoint at step ${engine.steps} failed: ${(e as Error).message}`);
        });
      }
      return out;
    },
  });
  const metrics = new RequestMetrics();
  const spec = { shape: o.shape, preprocess: o.preprocess };
  const spool = o.spool
    ? new Spool({
      dir: o.spool,
      results: o.spoolResults,
      resultsLog: o.spoolResultsLog,
      settleMs: o.spoolSettleMs,
      maxFileBytes: o.maxBodyBytes,
      batcher,
      engine,
      spec,
      metrics,
      log: (m) => log(`spool: ${m}`),
    })
    : null;
  const handler = createHandler({
    engine,
    batcher,
    spec,
    metrics,
    health,
    token: o.token,
    maxBodyBytes: o.maxBodyBytes,
    info: () => ({
      listen: url,
      connections: server.connections,
      spool: spool
        ? { dir: o.spool, results: spool.results, processed: spool.processed, halted: spool.halted }
        : null,
    }),
    log,
  });
  const server = new HttpServer({
    hostname: o.hostname,
    port: o.port,
    headerTimeoutMs: o.headerTimeoutMs,
    bodyTimeoutMs: o.bodyTimeoutMs,
    maxConnections: o.maxConnections,
    onError: (e) => log(`request failed: ${(e as Error).message}`),
  }, handler);
  const host = server.addr.hostname.includes(":") ? `[${server.addr.hostname}]` : server.addr.hostname;
  const url = `http://${host}:${server.addr.port}`;
  log(
    `${method.name} on ${o.backend.name}, memory ${o.memory}, store ${o.store}` +
      (o.bank ? `, adapter bank ${o.bank.adapter} of ${o.bank.slots} slots` : "") + `, listening on ${url}`,
  );
  await spool?.start();

  const notify = await SdNotify.open({ socketDir: o.state, warn: (m) => log(`warning: ${m}`) });
  const status = () =>
    `${method.name}: step ${engine.steps}, ${engine.process.predictions} predictions since start, ` +
    `last checkpoint ${engine.lastCheckpoint ? `step ${engine.lastCheckpoint.step}` : "none"}`;
  await notify?.send({ READY: 1, STATUS: status(), MAINPID: Deno.pid });
  let watchdog: ReturnType<typeof setInterval> | undefined;
  if (notify?.watchdogMs) {
    const limit = notify.watchdogMs * 2;
    const timer = setInterval(() => {
      // A step stuck longer than WatchdogSec (a hung device) stops the pings, so systemd restarts us.
      if (batcher.busyMs() < limit) notify.send({ WATCHDOG: 1, STATUS: status() });
    }, notify.watchdogMs);
    Deno.unrefTimer(timer);
    watchdog = timer;
  }

  let stopping: Promise<void> | null = null;
  const finished = Promise.withResolvers<void>();
  const stop = (reason = "stop requested"): Promise<void> => {
    stopping ??= (async () => {
      log(`stopping (${reason}): answering queued requests and writing a checkpoint`);
      await notify?.send({ STOPPING: 1, STATUS: `stopping: ${reason}` });
      if (watchdog !== undefined) clearInterval(watchdog);
      // No new connections; requests already read are answered; the checkpoint comes before anything that
      // waits on a client.
      server.drain();
      await Promise.all([batcher.close(), spool?.stop()]);
      await batcher.idle();
      try {
        if (engine.lastCheckpoint?.step !== engine.steps) await engine.checkpoint(reason);
      } catch (e) {
        const kept = engine.lastCheckpoint ? `step ${engine.lastCheckpoint.step}` : "none";
        log(
          `final checkpoint at step ${engine.steps} failed: ${(e as Error).message} (newest kept: ${kept})`,
        );
      }
      await server.close();
      notify?.close();
      guard.dispose();
      method.dispose();
      finished.resolve();
    })();
    return stopping;
  };
  return { url, engine, stop, finished: finished.promise };
}
