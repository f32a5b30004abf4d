/**
 * Spool mode: images dropped into a folder are predicted (and adapted on) in name order; each gets one JSON
 * line in the results file and is then moved to `done/` (or to `failed/`, with `NAME.reason` beside it).
 *
 * Exactly once, across crashes: the results line (which names the file) is appended and fsynced before the
 * file is moved. A crash between the two leaves a file that is already recorded; at start-up such files (the
 * results file's tail) are moved without being processed again, and a torn last line is cut off. A file
 * whose name is already in `done/` or `failed/` is a duplicate and goes to `failed/`.
 *
 * Never stalled by one file: whatever happens to a file (unreadable, vanished, undecodable, a symbolic link,
 * a name that is not UTF-8, a failed step) is recorded and the next one goes on; every file that reached an
 * adaptation step is recorded, so none is adapted on twice. Complete files only: writers create `.x.png` or
 * `x.png.tmp` and rename it into place; a file written in place is taken once its size has held still for
 * `settleMs`. Extension and size are checked before a byte is read.
 */
import { type Batcher, BatcherClosedError } from "./batcher.ts";
import type { Prediction } from "./engine.ts";
import { nonFiniteReason } from "./health.ts";
import { InputError, type InputSpec, spoolInput } from "./inputs.ts";
import type { RequestMetrics } from "./metrics.ts";
import { refuseLink, ResultsLog, type ResultsLogOptions, UnsafePathError } from "./results_log.ts";
import {
  alreadyFiled,
  checkFolder,
  fileAway,
  isInProgressName,
  isLossyName,
  refuseBeforeReading,
  SettleTracker,
} from "./spool_files.ts";

export interface SpoolOptions {
  dir: string;
  /** Default `<dir>/results.jsonl`. */
  results?: string;
  resultsLog?: ResultsLogOptions;
  batcher: Batcher<Float32Array, Prediction>;
  /** Counts refused inputs (`process.skipped`, as the HTTP API does). */
  engine: { process: { skipped: number } };
  spec: InputSpec;
  metrics?: RequestMetrics;
  /** Folder poll interval (default 250 ms). */
  pollMs?: number;
  /** A file written in place is taken once unchanged this long (default 1000 ms). */
  settleMs?: number;
  /** Larger files are failed without being read (default 8 MiB). */
  maxFileBytes?: number;
  log?: (message: string) => void;
}

/** Names remembered as recorded in this run (besides done/ and failed/ themselves). */
const RECENT = 10_000;

type Outcome = Record<string, unknown> & { error?: string };

export class Spool {
  readonly results: string;
  readonly log: ResultsLog;
  /** Files recorded since start. */
  processed = 0;
  /** Passes over the folder, and passes that found nothing to do (tests wait on these, not on time). */
  passes = 0;
  idlePasses = 0;
  /** Set when the spool stopped itself (a folder turned into a link); the service goes on without it. */
  halted: string | null = null;
  #recent = new Set<string>();
  /**
   * Files whose outcome is decided (they may have been adapted on) but not yet both recorded and moved, e.g.
   * on a full disk: retried first on every pass, never submitted again.
   */
  #pending = new Map<string, { outcome: Outcome; appended: boolean }>();
  #unaddressable = new Set<string>();
  #settle: SettleTracker;
  #stop = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #log: (m: string) => void;

  constructor(readonly options: SpoolOptions) {
    this.results = options.results ?? `${options.dir}/results.jsonl`;
    this.#log = options.log ?? ((m) => console.error(`edgetrain serve: spool: ${m}`));
    this.log = new ResultsLog(this.results, { log: this.#log, ...options.resultsLog });
    this.#settle = new SettleTracker(options.settleMs ?? 1000);
  }

  /** Names seen but not yet settled (still being written, or waiting their interval). */
  get settling(): string[] {
    return this.#settle.waiting();
  }

  /** Checks the folders, recovers from a previous run, then polls the folder until stop(). */
  async start(): Promise<void> {
    const dir = this.options.dir;
    await checkFolder(dir, "Spool folder");
    for (const sub of ["done", "failed"]) {
      await Deno.mkdir(`${dir}/${sub}`).catch((e) => {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      });
      await checkFolder(`${dir}/${sub}`, "Spool folder");
    }
    await refuseLink(this.results, "Results file");
    const recorded = new Map((await this.log.recover()).map((r) => [r.file, r]));
    for (const name of await this.#names()) {
      const rec = recorded.get(name);
      if (rec) await this.#finish(name, rec.error);
    }
    for (const name of recorded.keys()) this.#remember(name);
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    this.#wake?.();
    await this.#loop;
  }

  async #names(): Promise<string[]> {
    const names: string[] = [];
    const resultsDir = this.results.slice(0, this.results.lastIndexOf("/"));
    for await (const e of Deno.readDir(this.options.dir)) {
      if (e.isDirectory || isInProgressName(e.name)) continue;
      if (resultsDir === this.options.dir && this.log.isRotatedName(e.name)) continue;
      names.push(e.name);
    }
    return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  #remember(name: string): void {
    this.#recent.delete(name);
    this.#recent.add(name);
    if (this.#recent.size > RECENT) this.#recent.delete(this.#recent.values().next().value!);
  }

  async #finish(name: string, error?: string): Promise<void> {
    const folder = error === undefined ? "done" : "failed";
    if (this.#unaddressable.has(name)) return; // recorded; it cannot be moved, and is skipped from now on
    try {
      await fileAway(this.options.dir, folder, name, error);
      this.options.metrics?.spooled(folder);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // NotFound: moved or removed by someone else
    }
  }

  /** Appends the line (once) and moves the file of a decided outcome; throws to retry on the next pass. */
  async #flush(name: string): Promise<void> {
    const p = this.#pending.get(name)!;
    if (!p.appended) {
      await this.log.append({ file: name, ...p.outcome, time: new Date().toISOString() });
      p.appended = true;
      this.#remember(name);
      this.processed++;
    }
    await this.#finish(name, p.outcome.error);
    this.#pending.delete(name);
  }

  async #run(): Promise<void> {
    const poll = this.options.pollMs ?? 250;
    let failures = 0, lastError = "";
    while (!this.#stop) {
      let did = 0;
      try {
        did = await this.#pass();
        failures = 0;
        lastError = "";
      } catch (e) {
        if (e instanceof UnsafePathError) {
          // A folder or file that turned into a link is refused for good, not retried four times a second.
          this.halted = e.message;
          this.#log(`stopped: ${this.halted}`);
          return;
        }
        if (!(e instanceof BatcherClosedError)) {
          // A full disk, too many open files: logged once, retried with back-off.
          failures++;
          if ((e as Error).message !== lastError) {
            this.#log(`pass failed (retrying): ${(e as Error).message}`);
          }
          lastError = (e as Error).message;
        }
      }
      this.passes++;
      if (did === 0) this.idlePasses++;
      if (did === 0 && !this.#stop) {
        const wait = Math.min(5000, poll * 2 ** Math.min(failures, 5));
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    }
  }

  /**
   * The folder's names in order, each refused (with why) or ready, up to the first file still being
   * written: files are handled in name order, and one still changing holds back only what follows it, for
   * as long as it changes.
   */
  async #triage(): Promise<{ name: string; refused?: string }[]> {
    const names = await this.#names();
    this.#settle.keepOnly(new Set(names));
    const items: { name: string; refused?: string }[] = [];
    let held = false;
    const maxBytes = this.options.maxFileBytes ?? 8 * 2 ** 20;
    for (const name of names) {
      if (this.#unaddressable.has(name) || this.#pending.has(name)) continue;
      let st: Deno.FileInfo;
      try {
        st = await Deno.lstat(`${this.options.dir}/${name}`);
      } catch (e) {
        if (held) continue;
        if (isLossyName(name)) {
          this.#unaddressable.add(name);
          if (this.#recent.has(name)) continue; // recorded by an earlier run (the results file's tail)
          this.#log(
            `"${name}": the file name is not valid UTF-8, so it cannot be opened or moved; rename it`,
          );
          items.push({
            name,
            refused:
              `the file name is not valid UTF-8 (shown with U+FFFD): it cannot be opened or moved; rename it`,
          });
        } else if (!(e instanceof Deno.errors.NotFound)) {
          items.push({ name, refused: `cannot be examined: ${(e as Error).message}` });
        }
        continue; // NotFound: vanished since the listing, nothing to record
      }
      const refused = refuseBeforeReading(name, st, maxBytes) ??
        (this.#recent.has(name) || await alreadyFiled(this.options.dir, name)
          ? `duplicate: a file named "${name}" was already processed`
          : null);
      // Every file's settle clock runs from when it is first seen, including those behind a changing one.
      const settled = refused !== null || this.#settle.settled(name, st);
      if (!settled) held = true;
      else if (!held) items.push(refused ? { name, refused } : { name });
    }
    return items;
  }

  /** Reads and decodes one settled file; null when it vanished or changed since it settled. */
  async #prepare(name: string): Promise<Float32Array | Outcome | null> {
    const path = `${this.options.dir}/${name}`;
    let bytes: Uint8Array;
    try {
      const st = await Deno.lstat(path);
      const refused = refuseBeforeReading(name, st, this.options.maxFileBytes ?? 8 * 2 ** 20);
      if (refused) return this.#skip(refused);
      bytes = await Deno.readFile(path);
      if (bytes.length !== st.size) return null; // still being written after all: settle again
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      return this.#skip(`cannot be read: ${(e as Error).message}`);
    }
    try {
      return spoolInput(name, bytes, this.options.spec);
    } catch (e) {
      return this.#skip(e instanceof InputError ? e.message : `cannot be decoded: ${(e as Error).message}`);
    }
  }

  #skip(error: string): Outcome {
    this.options.engine.process.skipped++;
    return { error };
  }

  /** One pass over the folder, a batch-sized window at a time so that batches fill; returns files handled. */
  async #pass(): Promise<number> {
    let handled = 0;
    for (const name of [...this.#pending.keys()]) {
      await this.#flush(name);
      handled++;
    }
    const items = await this.#triage();
    const window = this.options.batcher.batch;
    for (let i = 0; i < items.length && !this.#stop; i += window) {
      const chunk = items.slice(i, i + window);
      const prepared = await Promise.all(
        chunk.map((it) => it.refused !== undefined ? this.#skip(it.refused) : this.#prepare(it.name)),
      );
      const jobs = prepared.map(async (p): Promise<Outcome | null> => {
        if (p === null || !(p instanceof Float32Array)) return p;
        const prediction = await this.options.batcher.submit(p);
        const bad = nonFiniteReason(prediction);
        return bad ? { error: bad, step: prediction.step } : { ...prediction };
      });
      const settled = await Promise.allSettled(jobs);
      // Every outcome is decided before any is written: a write that fails (a full disk) leaves them all
      // pending, to be recorded on a later pass, never adapted on again. Only inputs the batcher refused
      // (shutdown) stay in the folder for the next start. Recorded in name order.
      for (const [k, s] of settled.entries()) {
        const name = chunk[k].name;
        this.#settle.forget(name);
        if (s.status === "fulfilled" && s.value !== null) {
          this.#pending.set(name, { outcome: s.value, appended: false });
        } else if (s.status === "rejected" && !(s.reason instanceof BatcherClosedError)) {
          this.#log(`"${name}": ${(s.reason as Error).message}`);
          const outcome = { error: `adaptation step failed: ${(s.reason as Error).message}` };
          this.#pending.set(name, { outcome, appended: false });
        }
      }
      for (const { name } of chunk) {
        if (!this.#pending.has(name)) continue;
        await this.#flush(name);
        handled++;
      }
    }
    return handled;
  }
}
