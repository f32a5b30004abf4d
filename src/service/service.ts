/**
 * Wires a running service together: backend, model and method, resume from the newest valid checkpoint,
 * the batcher, the HTTP API, the spool, sd_notify (READY, WATCHDOG, STATUS, STOPPING) and a graceful stop
 * that answers what is queued and writes a final checkpoint. `src/cli/serve.ts` parses flags into
 * ServiceOptions and installs the signal handlers.
 */
import type { PreprocessOptions } from "../data/preprocess.ts";
import { RuntimeGuard } from "../governor/guard.ts";
import type { GuardedBackend } from "../governor/guarded_backend.ts";
import type { ConcreteStore } from "../memory/policy.ts";
import { adaptMethod } from "../methods/registry.ts";
import type { OnnxModule } from "../onnx/import.ts";
import { Batcher } from "./batcher.ts";
import { CheckpointStore, sha256Hex } from "./checkpoint.ts";
import { AdaptEngine, type Prediction } from "./engine.ts";
import { RequestMetrics } from "./metrics.ts";
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
  /** Most requests answered together in one forward. */
  maxChunk: number;
  /** Wait at most this long for more requests to answer together (0: answer as soon as free). */
  flushMs: number;
  checkpointEvery: number;
  keepCheckpoints?: number;
  token: string | null;
  maxBodyBytes: number;
  spool?: string;
  spoolResults?: string;
  collapseGuard?: boolean;
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

export async function startService(o: ServiceOptions): Promise<RunningService> {
  const log = o.log ?? ((m: string) => console.error(`edgetrain serve: ${m}`));
  await Deno.mkdir(o.state, { recursive: true });
  const modelSha256 = await sha256Hex(o.modelBytes);
  const descriptor = adaptMethod(o.method);
  const method = await descriptor.create(o.module, {
    lr: o.lr,
    name: o.modelPath,
    stream: {
      capacity: o.memory,
      every: o.every ?? o.memory,
      statsFrom: o.statsFrom,
      collapseGuard: o.collapseGuard,
    },
  });
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

  const batcher: Batcher<Float32Array, Prediction> = new Batcher({
    batch: o.maxChunk,
    flushMs: o.flushMs,
    run: async (xs) => {
      const out = await engine.step(xs);
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
      batcher,
      engine,
      spec,
      metrics,
      log: (m) => log(`spool: ${m}`),
    })
    : null;
  if (!isLoopback(o.hostname) && o.token === null) {
    log(
      `warning: listening on ${o.hostname} without --token-file: anyone who can reach it can adapt the model`,
    );
  }
  const handler = createHandler({
    engine,
    batcher,
    spec,
    metrics,
    token: o.token,
    maxBodyBytes: o.maxBodyBytes,
    info: () => ({
      listen: url,
      spool: spool ? { dir: o.spool, results: spool.results, processed: spool.processed } : null,
    }),
    log,
  });
  let url = "";
  const listening = Promise.withResolvers<void>();
  const server = Deno.serve({
    hostname: o.hostname,
    port: o.port,
    onListen: (addr) => {
      const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
      url = `http://${host}:${addr.port}`;
      listening.resolve();
    },
    onError: (e) => {
      log(`request failed: ${(e as Error).message}`);
      return new Response(JSON.stringify({ error: "Internal error" }) + "\n", { status: 500 });
    },
  }, handler);
  await listening.promise;
  log(
    `${method.name} on ${o.backend.name}, memory ${o.memory}, store ${o.store}, listening on ${url}`,
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
      await Promise.all([server.shutdown(), batcher.close(), spool?.stop()]);
      await batcher.idle();
      try {
        if (engine.lastCheckpoint?.step !== engine.steps) await engine.checkpoint(reason);
      } catch (e) {
        log(`final checkpoint failed: ${(e as Error).message}`);
      }
      notify?.close();
      guard.dispose();
      method.dispose();
      finished.resolve();
    })();
    return stopping;
  };
  return { url, engine, stop, finished: finished.promise };
}
