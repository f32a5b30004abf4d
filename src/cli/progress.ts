/**
 * A progress bar on stderr for long work. On a terminal it redraws one line; elsewhere (CI logs, systemd
 * journal) it prints a line at most every few seconds so logs stay readable. `EDGETRAIN_PROGRESS=0` silences it.
 */
const encoder = new TextEncoder();

export interface ProgressOptions {
  label: string;
  total: number;
  /** Minimum ms between redraws on a terminal (non-terminals use 5 s). */
  intervalMs?: number;
}

export class Progress {
  #label: string;
  #total: number;
  #done = 0;
  #start = performance.now();
  #last = 0;
  #interval: number;
  #tty: boolean;
  #enabled: boolean;
  #suffix = "";

  constructor(options: ProgressOptions) {
    this.#label = options.label;
    this.#total = Math.max(options.total, 0);
    this.#tty = Deno.stderr.isTerminal();
    this.#interval = options.intervalMs ?? (this.#tty ? 100 : 5000);
    this.#enabled = Deno.env.get("EDGETRAIN_PROGRESS") !== "0";
  }

  /** Advance by `n` and set the text shown after the bar (e.g. "err 12.3%"). */
  tick(n = 1, suffix?: string): void {
    this.#done += n;
    if (suffix !== undefined) this.#suffix = suffix;
    const now = performance.now();
    if (now - this.#last >= this.#interval || this.#done >= this.#total) {
      this.#last = now;
      this.#draw(false);
    }
  }

  label(label: string): void {
    this.#label = label;
  }

  done(suffix?: string): void {
    if (suffix !== undefined) this.#suffix = suffix;
    this.#draw(true);
  }

  #draw(final: boolean): void {
    if (!this.#enabled) return;
    const frac = this.#total ? Math.min(this.#done / this.#total, 1) : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const secs = (performance.now() - this.#start) / 1000;
    const eta = frac > 0 && frac < 1 ? ` eta ${Math.round(secs / frac - secs)}s` : "";
    const bar = `${"#".repeat(filled)}${"-".repeat(width - filled)}`;
    const text = `${this.#label} [${bar}] ${this.#done}/${this.#total} ${secs.toFixed(1)}s${eta}` +
      (this.#suffix ? ` ${this.#suffix}` : "");
    const line = this.#tty ? `\r\x1b[2K${text}${final ? "\n" : ""}` : `${text}\n`;
    Deno.stderr.writeSync(encoder.encode(line));
  }
}

/**
 * A progress bar over a run of domains (an observer of src/methods/run.ts): the bar counts inputs, the label
 * names the domain, the suffix shows the online error so far.
 */
export function progressObserver(label: string, total: number) {
  const bar = new Progress({ label, total });
  let wrong = 0, labeled = 0;
  const err = (digits: number) => labeled ? `err ${(100 * wrong / labeled).toFixed(digits)}%` : "";
  return {
    domain(e: { index: number; name: string; of: number }) {
      bar.label(`${label} ${e.index + 1}/${e.of} ${e.name}`);
    },
    scored(e: { rows: number; wrong: number; labeled: number }) {
      wrong += e.wrong;
      labeled += e.labeled;
      bar.tick(e.rows, err(1));
    },
    done() {
      bar.done(err(2));
    },
  };
}
