/**
 * Spool mode: images dropped into a folder are predicted (and adapted on) in name order; each gets one JSON
 * line in the results file and is then moved to `done/` (or to `failed/`, with `NAME.reason` beside it).
 *
 * Exactly once, across crashes: the results line (which names the file) is appended and fsynced before the
 * file is moved. A crash between the two leaves a file that is already recorded; at start-up such files are
 * moved without being processed again, and a torn last line (crash mid-append) is cut off. A file whose name
 * is already recorded and that appears later is a duplicate and goes to `failed/`. Writers should create
 * files under a hidden name (".x.png") and rename them into place: hidden files are ignored.
 */
import { writeFileAtomic } from "./checkpoint.ts";
import { type Batcher, BatcherClosedError } from "./batcher.ts";
import type { AdaptEngine, Prediction } from "./engine.ts";
import { InputError, type InputSpec, spoolInput } from "./inputs.ts";
import type { RequestMetrics } from "./metrics.ts";

export interface SpoolOptions {
  dir: string;
  /** Default `<dir>/results.jsonl`. */
  results?: string;
  batcher: Batcher<Float32Array, Prediction>;
  engine: AdaptEngine;
  spec: InputSpec;
  metrics?: RequestMetrics;
  /** Folder poll interval (default 250 ms). */
  pollMs?: number;
  log?: (message: string) => void;
}

interface Record_ {
  file: string;
  error?: string;
}

export class Spool {
  readonly results: string;
  #recorded = new Map<string, Record_>();
  #stop = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #log: (m: string) => void;
  processed = 0;

  constructor(readonly options: SpoolOptions) {
    this.results = options.results ?? `${options.dir}/results.jsonl`;
    this.#log = options.log ?? ((m) => console.error(`edgetrain serve: spool: ${m}`));
  }

  /** Recovers from a previous run, then polls the folder until stop(). */
  async start(): Promise<void> {
    await Deno.mkdir(`${this.options.dir}/done`, { recursive: true });
    await Deno.mkdir(`${this.options.dir}/failed`, { recursive: true });
    await this.#readResults();
    for (const name of await this.#listInputs()) {
      const rec = this.#recorded.get(name);
      if (rec) await this.#finish(name, rec.error);
    }
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    this.#wake?.();
    await this.#loop;
  }

  /** Reads the names already recorded; cuts a torn last line left by a crash mid-append. */
  async #readResults(): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(this.results);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    const text = new TextDecoder().decode(bytes);
    const end = text.lastIndexOf("\n") + 1;
    if (end < text.length) {
      this.#log(`results file "${this.results}" ends in a torn line (crash mid-append); cutting it off`);
      await writeFileAtomic(this.results, new TextEncoder().encode(text.slice(0, end)));
    }
    for (const line of text.slice(0, end).split("\n")) {
      if (!line.trim()) continue;
      try {
        const r = JSON.parse(line) as Record_;
        if (typeof r.file === "string") this.#recorded.set(r.file, r);
      } catch {
        this.#log(`results file "${this.results}": skipping a line that is not JSON`);
      }
    }
  }

  async #listInputs(): Promise<string[]> {
    const resultsName = this.results.startsWith(`${this.options.dir}/`)
      ? this.results.slice(this.options.dir.length + 1)
      : null;
    const names: string[] = [];
    for await (const e of Deno.readDir(this.options.dir)) {
      if (!e.isFile || e.name.startsWith(".") || e.name === resultsName) continue;
      names.push(e.name);
    }
    return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async #append(record: Record<string, unknown>): Promise<void> {
    const f = await Deno.open(this.results, { append: true, create: true });
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(record) + "\n");
      for (let at = 0; at < bytes.length;) at += await f.write(bytes.subarray(at));
      await f.sync();
    } finally {
      f.close();
    }
  }

  async #target(folder: string, name: string): Promise<string> {
    let path = `${this.options.dir}/${folder}/${name}`;
    for (let i = 1;; i++) {
      try {
        await Deno.lstat(path);
      } catch {
        return path;
      }
      path = `${this.options.dir}/${folder}/${name}~${i}`;
    }
  }

  /** Moves a recorded file to done/ or failed/ (writing its reason). */
  async #finish(name: string, error?: string): Promise<void> {
    const folder = error === undefined ? "done" : "failed";
    const target = await this.#target(folder, name);
    if (error !== undefined) await Deno.writeTextFile(`${target}.reason`, error + "\n");
    await Deno.rename(`${this.options.dir}/${name}`, target);
    this.options.metrics?.spooled(folder);
  }

  async #record(name: string, result: Record<string, unknown> & { error?: string }): Promise<void> {
    await this.#append({ file: name, ...result, time: new Date().toISOString() });
    this.#recorded.set(name, { file: name, error: result.error });
    await this.#finish(name, result.error);
    this.processed++;
  }

  async #run(): Promise<void> {
    const poll = this.options.pollMs ?? 250;
    while (!this.#stop) {
      let did = 0;
      try {
        did = await this.#pass();
      } catch (e) {
        if (!(e instanceof BatcherClosedError)) this.#log(`pass failed: ${(e as Error).message}`);
      }
      if (did === 0 && !this.#stop) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, poll);
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    }
  }

  /** One pass over the folder, a batch-sized window at a time so that batches fill; returns files handled. */
  async #pass(): Promise<number> {
    const names = await this.#listInputs();
    const window = this.options.batcher.batch;
    let handled = 0;
    for (let i = 0; i < names.length && !this.#stop; i += window) {
      const chunk = names.slice(i, i + window);
      const jobs = chunk.map(async (name): Promise<Record<string, unknown> & { error?: string }> => {
        if (this.#recorded.has(name)) {
          return { error: `duplicate: a file named "${name}" was already processed` };
        }
        let x: Float32Array;
        try {
          x = spoolInput(name, await Deno.readFile(`${this.options.dir}/${name}`), this.options.spec);
        } catch (e) {
          if (e instanceof InputError) {
            this.options.engine.process.skipped++;
            return { error: e.message };
          }
          throw e;
        }
        const p = await this.options.batcher.submit(x);
        return { ...p };
      });
      const settled = await Promise.allSettled(jobs);
      // Record in name order, and stop at the first file that could not be processed (shutdown, a failed
      // step): it stays in the folder for the next pass or the next start.
      for (const [k, s] of settled.entries()) {
        if (s.status === "rejected") {
          if (!(s.reason instanceof BatcherClosedError)) {
            this.#log(`"${chunk[k]}": ${(s.reason as Error).message}`);
          }
          return handled;
        }
        await this.#record(chunk[k], s.value);
        handled++;
      }
    }
    return handled;
  }
}
