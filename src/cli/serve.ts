/**
 * `edgetrain serve --model M.onnx --method tent|eata|sar|bn|ecotta|auto --state DIR [options]`
 * Continual test-time adaptation as a long-running service: an HTTP API, an optional spool folder,
 * checkpoints in the state folder, sd_notify when started by systemd. See docs/service.md.
 */
import { oneOf, parseBytes, parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openBackend, openModel, PREPROCESS_FLAGS, preprocessFor } from "./common.ts";
import { UsageError } from "./errors.ts";
import { governed } from "./plan.ts";
import { outputShape } from "../data/preprocess.ts";
import { isLoopback, parseListen } from "../service/server.ts";
import { startService } from "../service/service.ts";
import { checkpointedMethod, sha256Hex } from "../service/checkpoint.ts";
import { GuardedBackend } from "../governor/guarded_backend.ts";
import { adaptMethod, methodHelp, names, SERVICE_DEFAULT } from "../methods/registry.ts";
import { BANK_FLAGS, BANK_HELP, checkBankMethod, governBank, parseBankFlags } from "./stream_flags.ts";

export const HELP = `edgetrain serve --model M.onnx --method METHOD --state DIR [options]

  --method METHOD|auto      adaptation method (default ${SERVICE_DEFAULT}; auto: the strongest that fits)
${methodHelp("adapt", "                              ")}
  --state DIR               checkpoints live here; the newest valid one is resumed at start
  --listen HOST:PORT        HTTP address (default 127.0.0.1:8417; port 0 picks a free one)
  --token-file F            require "Authorization: Bearer <contents of F>" on every route but /v1/health
  --spool DIR               also process images dropped into DIR (results in DIR/results.jsonl)
  --results F               spool results file (default DIR/results.jsonl)
  --memory N|auto           memory bank frames = the minibatch of each learning step (default auto: the
                            planner's largest that fits, up to 64); --every K, --stats-from, --stats-momentum,
                            --stats-warmup as for adapt
  --batch N                 most requests answered together (default 16): each is answered by the current
                            model with target statistics, never normalised by the requests beside it
  --budget B | --device P   memory budget or device profile for the planner (default: half the free memory)
  --flush-ms T              wait up to T ms for more requests to answer together (default 0: answer as
                            soon as the model is free; requests arriving meanwhile are answered together)
  --checkpoint-every N      checkpoint every N steps (default 50; also on SIGTERM/SIGINT and reset)
  --keep-checkpoints K      checkpoints kept (default 3)
  --max-body B              largest request body, and largest spool file (default 8MiB)
  --max-pixels N            refuse images that declare more pixels, before decoding (default 16777216)
  --header-timeout-ms T     a request's head must arrive within T ms (default 10000), else 408
  --body-timeout-ms T       its body within T ms more (default 30000), else 408
  --max-connections N       open connections; one more gets 503 (default 64)
  --settle-ms T             spool: take a file written in place once unchanged for T ms (default 1000)
  --results-max-bytes B     spool: rotate the results file at B (default 64MiB)
  --results-keep K          spool: rotated results files kept (default 4)
${BANK_HELP}
  --lr X                    learning rate (default: the method's)
  --no-collapse-guard       keep adapting even when predictions collapse to few classes
  --backend webgpu|wasm|cpu|auto --threads N --mean --std --pad --size --channels   as for adapt

API: POST /v1/predict (image/png, image/jpeg, or application/octet-stream float32 LE with X-Shape: C,H,W),
GET /v1/health, GET /metrics, POST /v1/reset, GET /v1/state, GET /v1/report (an HTML page of the stream).
Needs --unstable-net for sd_notify.`;

export default async function serve(args: string[]): Promise<number> {
  const flags = parseFlags("serve", args, {
    model: { type: "string" },
    method: { type: "string", default: SERVICE_DEFAULT },
    state: { type: "string" },
    listen: { type: "string", default: "127.0.0.1:8417" },
    "token-file": { type: "string" },
    spool: { type: "string" },
    results: { type: "string" },
    batch: { type: "string", default: "16" },
    memory: { type: "string", default: "auto" },
    every: { type: "string" },
    "stats-from": { type: "string", default: "bank" },
    "stats-momentum": { type: "string" },
    "stats-warmup": { type: "boolean", default: false },
    budget: { type: "string" },
    device: { type: "string" },
    "flush-ms": { type: "string", default: "0" },
    "checkpoint-every": { type: "string", default: "50" },
    "keep-checkpoints": { type: "string", default: "3" },
    "max-body": { type: "string", default: "8MiB" },
    "header-timeout-ms": { type: "string", default: "10000" },
    "body-timeout-ms": { type: "string", default: "30000" },
    "max-connections": { type: "string", default: "64" },
    "settle-ms": { type: "string", default: "1000" },
    "results-max-bytes": { type: "string", default: "64MiB" },
    "results-keep": { type: "string", default: "4" },
    lr: { type: "string" },
    "no-collapse-guard": { type: "boolean", default: false },
    ...BANK_FLAGS,
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
    ...PREPROCESS_FLAGS,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.state) throw new UsageError("--state DIR is required (checkpoints are written there)");
  if (flags.budget !== undefined && flags.device !== undefined) {
    throw new UsageError("--budget and --device exclude each other");
  }
  const { hostname, port } = (() => {
    try {
      return parseListen(flags.listen!);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  })();
  // Refused before anything is loaded: anyone who can reach such an address could adapt the model.
  if (!isLoopback(hostname) && !flags["token-file"]) {
    throw new UsageError(
      `--listen ${flags.listen} is not a loopback address: give --token-file (serving without a token is refused)`,
    );
  }
  const limits = {
    headerTimeoutMs: parseNumber("header-timeout-ms", flags["header-timeout-ms"], { min: 1 })!,
    bodyTimeoutMs: parseNumber("body-timeout-ms", flags["body-timeout-ms"], { min: 1 })!,
    maxConnections: parseNumber("max-connections", flags["max-connections"], { integer: true, min: 1 })!,
  };
  let token: string | null = null;
  if (flags["token-file"]) {
    const file = flags["token-file"];
    token = (await Deno.readTextFile(file)).trim();
    if (!token) throw new UsageError(`--token-file "${file}" is empty`);
    const mode = (await Deno.stat(file)).mode;
    if (mode !== null && (mode & 0o077) !== 0) {
      console.error(
        `edgetrain serve: warning: token file "${file}" is readable by other users (chmod 600 it)`,
      );
    }
  }
  const backend = new GuardedBackend(await openBackend(flags));
  const model = await openModel(backend, flags.model);
  const modelBytes = await Deno.readFile(model.path);
  const pre = await preprocessFor(model.path, flags);
  let shape = model.inputShape;
  if (!shape) {
    if (pre.size === undefined || pre.channels === undefined) {
      throw new UsageError(`Model "${model.path}" has no fixed input shape: give --size and --channels`);
    }
    const s = outputShape({ channels: pre.channels, height: 1, width: 1 }, pre);
    shape = [s.channels, s.height, s.width];
  }
  // The planner picks the method (auto) and the batch (auto, the default) for the budget, as adapt does; but an
  // auto service that has already adapted keeps its method (a new pick would set the checkpoints aside).
  let method = flags.method!;
  if (method === "auto") {
    const kept = await checkpointedMethod(flags.state, await sha256Hex(modelBytes));
    if (kept) {
      console.error(`edgetrain serve: --method auto: keeping "${kept}", the method of the newest checkpoint`);
      method = kept;
    }
  }
  const maxChunk = parseNumber("batch", flags.batch, { integer: true, min: 1 })!;
  const bankFlags = parseBankFlags(flags);
  // Before planning: a named method that cannot use the bank fails with the reason, not as "nothing fits".
  if (names("adapt").includes(method)) checkBankMethod(bankFlags, adaptMethod(method));
  oneOf("stats-from", flags["stats-from"], ["bank", "stream"]);
  const statsFrom = flags["stats-from"] as "bank" | "stream";
  const gov = await governed({
    task: "adapt",
    method,
    batch: flags.memory!,
    chunk: maxChunk,
    statsFrom,
    store: "auto",
    budget: flags.budget,
    device: flags.device,
    model,
    input: shape,
    backend,
    guard: true,
    bank: bankFlags ? { ...bankFlags.settings, slots: bankFlags.slots ?? 2 } : undefined,
  });
  checkBankMethod(bankFlags, adaptMethod(gov.method));
  const bank = bankFlags ? await governBank(bankFlags, gov, backend, { chunk: maxChunk, statsFrom }) : null;
  if (bank?.plan) console.error(`edgetrain serve: adapter bank: ${bank.plan.reason}`);
  if (gov.plan) {
    console.error(`edgetrain serve: plan: ${gov.plan.reason} (budget from ${gov.plan.budget_source})`);
  }
  const service = await startService({
    backend,
    module: model.module,
    modelPath: model.path,
    modelBytes,
    shape,
    preprocess: pre,
    method: gov.method,
    store: gov.store,
    peakOf: async (b, st) =>
      (await gov.estimator.estimate({
        method: gov.method,
        batch: b,
        chunk: maxChunk,
        statsFrom,
        store: st,
        guard: true,
        bank: bank?.settings,
      })).peak_bytes,
    lr: parseNumber("lr", flags.lr, { min: 0 }),
    state: flags.state,
    hostname,
    port,
    memory: gov.batch,
    statsMomentum: parseNumber("stats-momentum", flags["stats-momentum"], { min: 0, max: 1 }),
    statsWarmup: flags["stats-warmup"] === true,
    every: parseNumber("every", flags.every, { integer: true, min: 1 }),
    statsFrom,
    maxChunk,
    flushMs: parseNumber("flush-ms", flags["flush-ms"], { min: 0 })!,
    checkpointEvery: parseNumber("checkpoint-every", flags["checkpoint-every"], { integer: true, min: 0 })!,
    keepCheckpoints: parseNumber("keep-checkpoints", flags["keep-checkpoints"], { integer: true, min: 1 })!,
    token,
    maxBodyBytes: parseBytes("max-body", flags["max-body"]!),
    ...limits,
    spool: flags.spool,
    spoolResults: flags.results,
    spoolSettleMs: parseNumber("settle-ms", flags["settle-ms"], { min: 0 }),
    spoolResultsLog: {
      maxBytes: parseBytes("results-max-bytes", flags["results-max-bytes"]!),
      keep: parseNumber("results-keep", flags["results-keep"], { integer: true, min: 0 }),
    },
    collapseGuard: !flags["no-collapse-guard"],
    bank: bank?.settings,
  });
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const handlers = signals.map((sig) => {
    const h = () => service.stop(sig);
    Deno.addSignalListener(sig, h);
    return h;
  });
  await service.finished;
  signals.forEach((sig, i) => Deno.removeSignalListener(sig, handlers[i]));
  backend.dispose();
  return 0;
}
