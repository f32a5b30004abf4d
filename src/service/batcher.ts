/**
 * Turns single requests into adaptation batches. Items queue until `batch` of them are waiting (a full
 * batch runs at once) or the oldest has waited `flushMs` (the partial batch runs), and exactly one batch or
 * exclusive task (reset, checkpoint, state digest) runs at a time: the adapted state is never touched by two
 * things at once. Batches are taken when they start, not when they are scheduled, so items that arrive while
 * a step runs fill the next batch instead of waiting behind a half-empty one.
 */

/** Submitting after close(): the service is shutting down. */
export class BatcherClosedError extends Error {
  override name = "BatcherClosedError";
}

export interface BatcherOptions<I, O> {
  batch: number;
  /** Longest wait of the oldest queued item before a partial batch runs. */
  flushMs: number;
  /** Processes one batch; must return one output per item, in order. */
  run: (items: I[]) => Promise<O[]>;
}

interface Pending<I, O> {
  item: I;
  at: number;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

interface Task {
  fn: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class Batcher<I, O> {
  readonly batch: number;
  readonly flushMs: number;
  #run: (items: I[]) => Promise<O[]>;
  #queue: Pending<I, O>[] = [];
  #tasks: Task[] = [];
  #busy = false;
  #closing = false;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #idle: (() => void)[] = [];
  /** performance.now() when the running batch or task started; null when idle. */
  #since: number | null = null;

  constructor(options: BatcherOptions<I, O>) {
    if (!(Number.isInteger(options.batch) && options.batch >= 1)) {
      throw new Error(`Batcher(): batch must be a positive integer, got ${options.batch}`);
    }
    if (!(options.flushMs >= 0)) throw new Error(`Batcher(): flushMs must be >= 0, got ${options.flushMs}`);
    this.batch = options.batch;
    this.flushMs = options.flushMs;
    this.#run = options.run;
  }

  /** Items waiting for a batch. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Milliseconds the current batch or task has been running (0 when idle): the watchdog's hang check. */
  busyMs(): number {
    return this.#since === null ? 0 : performance.now() - this.#since;
  }

  submit(item: I): Promise<O> {
    if (this.#closing) return Promise.reject(new BatcherClosedError("The service is shutting down"));
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ item, at: performance.now(), resolve, reject });
      this.#kick();
    });
  }

  /** Runs `fn` alone, after the batch in progress and before the next one. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#tasks.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.#kick();
    });
  }

  /** Stops accepting items, runs what is queued (partial batches included) and resolves when idle. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#kick();
    await this.idle();
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (!this.#busy && this.#queue.length === 0 && this.#tasks.length === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  #ready(): boolean {
    if (this.#tasks.length) return true;
    const n = this.#queue.length;
    if (n === 0) return false;
    return n >= this.batch || this.#closing || performance.now() - this.#queue[0].at >= this.flushMs;
  }

  #kick(): void {
    if (this.#busy) return;
    if (!this.#ready()) {
      this.#arm();
      return;
    }
    this.#busy = true;
    this.#loop().finally(() => {
      this.#busy = false;
      this.#since = null;
      if (this.#ready()) this.#kick();
      else {
        this.#arm();
        if (this.#queue.length === 0 && this.#tasks.length === 0) this.#idle.splice(0).forEach((r) => r());
      }
    });
  }

  /** A timer for the oldest item's flush deadline. */
  #arm(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#queue.length === 0) return;
    // Timers longer than 2^31 - 1 ms fire at once (HTML timer rules), so clamp: a huge flushMs means "never".
    const wait = Math.min(2 ** 31 - 1, Math.max(0, this.#queue[0].at + this.flushMs - performance.now()));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#kick();
    }, wait);
  }

  async #loop(): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    while (this.#ready()) {
      this.#since = performance.now();
      const task = this.#tasks.shift();
      if (task) {
        try {
          task.resolve(await task.fn());
        } catch (e) {
          task.reject(e);
        }
        continue;
      }
      const taken = this.#queue.splice(0, this.batch);
      try {
        const out = await this.#run(taken.map((p) => p.item));
        if (out.length !== taken.length) {
          throw new Error(`Batcher: run() returned ${out.length} outputs for ${taken.length} items`);
        }
        taken.forEach((p, i) => p.resolve(out[i]));
      } catch (e) {
        taken.forEach((p) => p.reject(e));
      }
    }
  }
}
