/**
 * `edgetrain adapt --model M.onnx --images I1 [--images I2 ...] [--labels L1 ...] --method METHOD`
 * Test-time adaptation over a stream of domains as a camera delivers it (chunks of --batch frames, in
 * --order), with online error, learning steps, the memory bank, resets and the ledger's measured peaks.
 */
import { dirname } from "node:path";
import { oneOf, parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openJob, PREPROCESS_FLAGS } from "./common.ts";
import { UsageError } from "./errors.ts";
import { adaptMethod, methodHelp, names, SERVICE_DEFAULT } from "../methods/registry.ts";
import { type Protocol, runAdaptation } from "../methods/run.ts";
import { loadImages } from "../data/images.ts";
import { exportModule } from "../onnx/export.ts";
import { decodeCheckpoint, encodeCheckpoint, sha256Hex, writeFileAtomic } from "../service/checkpoint.ts";
import { outputShape } from "../data/preprocess.ts";
import { withStore } from "../memory/policy.ts";
import { RuntimeGuard } from "../governor/guard.ts";
import { GuardedBackend } from "../governor/guarded_backend.ts";
import { governed, GOVERNOR_FLAGS } from "./plan.ts";
import { memoryReport } from "./memory.ts";
import { sampleRss } from "../devices/footprint.ts";
import { progressObserver } from "./progress.ts";
import { predictionsObserver, predictionsWriter } from "./predict.ts";
import { predictionsFormat } from "../data/predictions_out.ts";
import {
  BANK_FLAGS,
  BANK_HELP,
  checkBankMethod,
  governBank,
  orderStreams,
  parseBankFlags,
  parseStreamFlags,
  STREAM_FLAGS,
  STREAM_HELP,
  streamSettings,
} from "./stream_flags.ts";
import { bankOf, withBank } from "../methods/bank/mod.ts";
import { Timeline } from "../report/timeline.ts";
import { writeRunReport } from "../report/run_report.ts";

export const HELP =
  `edgetrain adapt --model M.onnx --images I1 [--images I2 ...] [--labels L1 ...] --method METHOD [options]

  --method METHOD|auto      (default ${SERVICE_DEFAULT}; auto: the strongest that fits the budget)
${methodHelp("adapt", "                              ")}
${STREAM_HELP}
${BANK_HELP}
  --store fp32|fp16|int8|int4|mask|auto   how saved activations are kept (default auto: fp32, or the most
                            faithful store that fits when the governor plans)
  --budget B | --device NAME|auto   plan method/batch/store to fit B (256MiB, 1.5GiB) or a device profile's
                            usable memory (devices/*.json); auto: half the available system memory
  --lr X                    learning rate (default: the method's reference default)
  --reset-each-domain       reset at the start of every --images stream
  --no-collapse-guard       keep adapting even when predictions collapse to few classes
  --backend webgpu|wasm|cpu|auto --threads N --mean --std --pad --size --channels
  --export A.onnx           write the adapted model as ONNX
  --save-state FILE         write the adapted state (model, optimizer, method counters; the checkpoint
                            format of \`serve\`, checksummed, written atomically)
  --load-state FILE         continue from a saved state of the same model and method
  --report R.html           a self-contained page with the stream as a timeline (error, entropy, drift,
                            active slot, memory) for someone who did not run it
  --out P.jsonl|P.csv       one row per image: its online prediction (top-k classes with probabilities)
  --top-k K --logits --classes FILE   as for predict
  --json                    print one JSON object on stdout`;

export default async function adapt(args: string[]): Promise<number> {
  const flags = parseFlags("adapt", args, {
    model: { type: "string" },
    images: { type: "string", multiple: true },
    labels: { type: "string", multiple: true },
    method: { type: "string", default: SERVICE_DEFAULT },
    ...STREAM_FLAGS,
    ...BANK_FLAGS,
    report: { type: "string" },
    store: { type: "string", default: "auto" },
    ...GOVERNOR_FLAGS,
    lr: { type: "string" },
    episodic: { type: "boolean", default: false },
    "reset-each-domain": { type: "boolean", default: false },
    "no-collapse-guard": { type: "boolean", default: false },
    "warmup-images": { type: "string" },
    "warmup-labels": { type: "string" },
    export: { type: "string" },
    "save-state": { type: "string" },
    "load-state": { type: "string" },
    out: { type: "string" },
    "top-k": { type: "string", default: "5" },
    logits: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
    ...PREPROCESS_FLAGS,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  oneOf("method", flags.method, [...names("adapt"), "auto"]);
  if (flags.episodic) {
    throw new UsageError(
      "--episodic was removed: answers never normalise by the statistics of their own chunk, so a reset " +
        "before every chunk would answer as the source model (--method source); see docs/streaming.md",
    );
  }
  if (flags["save-state"]) {
    // Checked now: a missing folder would otherwise fail only after the whole run.
    const folder = dirname(flags["save-state"]), st = await Deno.stat(folder).catch(() => null);
    const why = !st ? "does not exist" : !st.isDirectory ? "is not a folder" : null;
    if (why) throw new UsageError(`--save-state "${flags["save-state"]}": folder "${folder}" ${why}`);
  }
  const protocol: Protocol = flags["reset-each-domain"] ? "reset-each-domain" : "continual";
  const streamFlags = parseStreamFlags(flags);
  const bankFlags = parseBankFlags(flags);
  if (bankFlags && protocol === "reset-each-domain") {
    throw new UsageError(
      "--reset-each-domain empties the adapter bank at every --images: the bank finds each domain itself, use one or the other",
    );
  }
  // Before planning: a named method that cannot use the bank fails with the reason, not as "nothing fits".
  if (flags.method !== "auto") checkBankMethod(bankFlags, adaptMethod(flags.method!));
  const lr = parseNumber("lr", flags.lr, { min: 0 });
  const topK = parseNumber("top-k", flags["top-k"], { integer: true, min: 1 })!;
  if (flags.out !== undefined) predictionsFormat(flags.out); // a typo fails before any work
  const job = await openJob("adapt", flags, { decorate: (b) => new GuardedBackend(b) });
  const { skipped, model, preprocess: pre } = job;
  const streams = orderStreams(job.streams, streamFlags);
  const backend = job.backend as GuardedBackend;
  const warmup = flags["warmup-images"]
    ? { set: await loadImages(flags["warmup-images"], { labels: flags["warmup-labels"] }), preprocess: pre }
    : undefined;
  const shape = outputShape(streams[0].set, pre);
  const gov = await governed({
    task: "adapt",
    method: flags.method!,
    batch: flags.memory!,
    chunk: streamFlags.chunk,
    statsFrom: streamFlags.statsFrom,
    store: flags.store!,
    budget: flags.budget,
    device: flags.device,
    model,
    input: [shape.channels, shape.height, shape.width],
    backend,
    guard: true,
    warmup: warmup !== undefined,
    samples: streams.reduce((n, s) => n + s.set.n, 0),
    bank: bankFlags ? { ...bankFlags.settings, slots: bankFlags.slots ?? 2 } : undefined,
  });
  const { batch, store } = gov;
  const descriptor = adaptMethod(gov.method);
  checkBankMethod(bankFlags, descriptor);
  const bank = bankFlags
    ? await governBank(bankFlags, gov, backend, {
      chunk: streamFlags.chunk,
      statsFrom: streamFlags.statsFrom,
    })
    : null;
  if (bank?.plan) {
    // The run keeps the slots the governor found room for: its prediction is that run's.
    gov.estimate = bank.plan.estimate;
    gov.predicted_peak_bytes = bank.plan.estimate.peak_bytes;
  }
  const m = await descriptor.create(
    model.module,
    withBank({
      lr,
      warmup,
      name: model.path,
      stream: streamSettings(streamFlags, batch, !flags["no-collapse-guard"]),
    }, bank?.settings),
  );
  const modelSha = flags["save-state"] || flags["load-state"]
    ? await sha256Hex(await Deno.readFile(model.path))
    : "";
  let stepsBefore = 0;
  if (flags["load-state"]) {
    const file = flags["load-state"];
    const ck = await decodeCheckpoint(await Deno.readFile(file), file);
    if (ck.header.model_sha256 !== modelSha || ck.header.method !== gov.method) {
      throw new Error(
        `State "${file}" was saved for method ${ck.header.method} on another model or method ` +
          `(this run: ${gov.method} on "${model.path}")`,
      );
    }
    m.loadState(ck.state);
    stepsBefore = ck.header.step;
  }
  const guard = new RuntimeGuard(backend, {
    batch,
    store,
    backward: descriptor.backward,
    peakOf: async (b, s) =>
      (await gov.estimator.estimate({
        method: gov.method,
        batch: b,
        chunk: streamFlags.chunk,
        statsFrom: streamFlags.statsFrom,
        store: s,
        guard: true,
        bank: bank?.settings,
      })).peak_bytes,
  });
  const total = streams.reduce((n, s) => n + s.set.n, 0);
  const writer = flags.out === undefined
    ? null
    : predictionsWriter(flags.out, { topK, logits: flags.logits! }, job);
  const timeline = flags.report ? new Timeline(backend.ledger) : null;
  const report = await withStore(store, () =>
    runAdaptation(backend, m, streams, {
      batch: streamFlags.chunk,
      protocol,
      preprocess: pre,
      observers: [
        progressObserver(m.name, total),
        { chunk: sampleRss },
        ...(writer ? [predictionsObserver(writer, streams)] : []),
        ...(timeline ? [timeline.observer()] : []),
      ],
      guard,
    }));
  guard.dispose();
  writer?.close();
  if (timeline) {
    await writeRunReport(flags.report!, timeline.data(), report, {
      model: model.path,
      backend: backend.name,
      chunk: streamFlags.chunk,
      memory: batch,
      threshold: bankOf(m)?.selector.threshold ?? null,
    });
  }
  if (flags["save-state"]) {
    const bytes = await encodeCheckpoint({
      model_sha256: modelSha,
      method: gov.method,
      step: stepsBefore + report.updates,
      created: new Date().toISOString(),
      counters: { images: report.n },
    }, await m.state());
    await writeFileAtomic(flags["save-state"], bytes);
  }
  if (flags.export) {
    // With a bank: the active slot, its adapters folded into the weights (a plain model of the same graph).
    const write = async () =>
      await Deno.writeFile(
        flags.export!,
        await exportModule(model.onnx, model.module, { producerName: "edgetrain" }),
      );
    const banked = bankOf(m);
    await (banked ? banked.folded(write) : write());
  }
  // The bank's total against the governor's: the plan has every slot holding a state.
  const adapters = report.adapters && {
    ...report.adapters,
    slots_from: bank?.plan ? `governor: ${bank.plan.reason}` : "--bank-slots",
    predicted_bytes: bank?.plan?.predicted_bytes ?? gov.estimate?.peak_by_category.adapters ?? null,
  };
  const out = {
    model: model.path,
    backend: backend.name,
    ...report,
    skipped: report.skipped + skipped.length,
    skipped_inputs: [...skipped, ...report.skipped_inputs],
    ...(writer ? { out: writer.path, rows: writer.rows } : {}),
    ...(adapters ? { adapters } : {}),
    memory: batch,
    store,
    predicted_peak_bytes: gov.predicted_peak_bytes,
    ...memoryReport(gov, backend),
    ...(gov.plan
      ? {
        budget_bytes: gov.plan.budget_bytes,
        budget_source: gov.plan.budget_source,
        plan: { reason: gov.plan.reason, alternatives: gov.plan.alternatives },
      }
      : {}),
  };
  if (flags.json) console.log(JSON.stringify(out));
  else {
    console.log(
      `method ${out.method} (${protocol}), chunks of ${streamFlags.chunk}, memory ${batch}, store ${store}, ` +
        `backend ${out.backend}`,
    );
    if (gov.plan) console.log(`plan: ${gov.plan.reason} (budget from ${gov.plan.budget_source})`);
    for (const d of out.domains) {
      console.log(
        `  ${d.images}: ${d.n} images${d.error !== null ? `, error ${(100 * d.error).toFixed(2)}%` : ""}` +
          (d.slot !== undefined ? `, slot ${d.slot}` : ""),
      );
    }
    console.log(
      `total: ${out.n} images${
        out.error !== null ? `, online error ${(100 * out.error).toFixed(2)}%` : ""
      }, ` +
        `${out.resets} resets, ${out.skipped} skipped, ${out.ms_per_batch.toFixed(1)} ms/batch, ` +
        `peak ${out.peak_bytes} B (saved activations ${out.peak_saved_bytes} B)` +
        (out.predicted_peak_bytes !== null ? `, predicted ${out.predicted_peak_bytes} B` : ""),
    );
    console.log(
      `process: peak ${out.process_peak_bytes} B resident (${out.process_peak_source})` +
        (out.predicted_process_peak_bytes !== null
          ? `, predicted ${out.predicted_process_peak_bytes} B`
          : ""),
    );
    const a = adapters;
    if (a) {
      console.log(
        `adapter bank (${a.adapter}): ${a.open} of ${a.slots} slots open (${a.slots_from}), ${a.switches} ` +
          `switches, ${a.opened} opened, ${a.merged} merged, ${a.evicted} evicted, ${a.bytes} B stored` +
          (a.predicted_bytes !== null ? ` (planned ${a.predicted_bytes} B with every slot open)` : ""),
      );
    }
    for (const b of guard.backoffs) {
      console.log(
        `  back-off after ${b.step} steps: batch ${b.from.batch} ${b.from.store} -> ${b.to.batch} ${b.to.store}`,
      );
    }
  }
  m.dispose();
  backend.dispose();
  return 0;
}
