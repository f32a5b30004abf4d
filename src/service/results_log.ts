/**
 * The spool's results file (`results.jsonl`): one JSON line per processed file, appended and fsynced before
 * the file is moved, so that a crash between the two is recoverable. It is rotated by size (`results.jsonl`
 * -> `.1` -> `.2` ..., the oldest beyond `keep` deleted) so that it never grows without bound, and at start
 * only its tail is read: the file moved last is at most one line from the end (each line's file is moved
 * before the next line is written), so the tail is all that crash recovery needs, whatever the file's size.
 */

export interface ResultsLogOptions {
  /** Rotate before an append would take the file past this many bytes (default 64 MiB). */
  maxBytes?: number;
  /** Rotated files kept (`.1` .. `.keep`; default 4). */
  keep?: number;
  /** Bytes read from the end at start (default 256 KiB). */
  tailBytes?: number;
  log?: (message: string) => void;
}

export const RESULTS_DEFAULTS = { maxBytes: 64 * 2 ** 20, keep: 4, tailBytes: 256 * 1024 };

export interface ResultRecord {
  file: string;
  error?: string;
}

/** A path the spool must not use (a symbolic link, not a folder): the spool stops rather than retry it. */
export class UnsafePathError extends Error {
  override name = "UnsafePathError";
}

/** A path that must be a regular file (or absent), never a symbolic link: the service never follows one. */
export async function refuseLink(path: string, what: string): Promise<Deno.FileInfo | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  if (st.isSymlink) {
    throw new UnsafePathError(
      `${what} "${path}" is a symbolic link: refused (the spool never follows links)`,
    );
  }
  if (!st.isFile) throw new UnsafePathError(`${what} "${path}" is not a regular file`);
  return st;
}

export class ResultsLog {
  readonly maxBytes: number;
  readonly keep: number;
  #size = 0;
  #log: (m: string) => void;

  constructor(readonly path: string, readonly options: ResultsLogOptions = {}) {
    this.maxBytes = options.maxBytes ?? RESULTS_DEFAULTS.maxBytes;
    this.keep = options.keep ?? RESULTS_DEFAULTS.keep;
    this.#log = options.log ?? ((m) => console.error(`edgetrain serve: spool: ${m}`));
  }

  /** The rotated files' names (`results.jsonl.1` ...): the spool must not take them for inputs. */
  isRotatedName(name: string): boolean {
    const base = this.path.slice(this.path.lastIndexOf("/") + 1);
    return name === base || (name.startsWith(`${base}.`) && /^\d+$/.test(name.slice(base.length + 1)));
  }

  /**
   * Reads the records of the file's tail; cuts a torn last line (a crash mid-append) off in place. Rotates
   * at once when the file is already past its size limit (one written before rotation existed).
   */
  async recover(): Promise<ResultRecord[]> {
    const st = await refuseLink(this.path, "Results file");
    if (!st) return [];
    const file = await Deno.open(this.path, { read: true, write: true });
    let text: string;
    try {
      const want = Math.min(st.size, this.options.tailBytes ?? RESULTS_DEFAULTS.tailBytes);
      await file.seek(st.size - want, Deno.SeekMode.Start);
      const buf = new Uint8Array(want);
      for (let at = 0; at < want;) {
        const n = await file.read(buf.subarray(at));
        if (n === null) break;
        at += n;
      }
      text = new TextDecoder().decode(buf);
      const end = buf.lastIndexOf(10) + 1;
      this.#size = st.size;
      if (end < want) {
        this.#log(`results file "${this.path}" ends in a torn line (crash mid-append); cutting it off`);
        this.#size = st.size - (want - end);
        await file.truncate(this.#size);
        await file.sync();
        text = new TextDecoder().decode(buf.subarray(0, end));
      }
      // The first line of a partial tail is cut anywhere: drop it unless the tail is the whole file.
      if (want < st.size) text = text.slice(text.indexOf("\n") + 1);
    } finally {
      file.close();
    }
    const records: ResultRecord[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        const r = JSON.parse(line) as ResultRecord;
        if (typeof r.file === "string") records.push(r);
      } catch {
        this.#log(`results file "${this.path}": skipping a line that is not JSON`);
      }
    }
    if (this.#size >= this.maxBytes) await this.#rotate();
    return records;
  }

  /** Appends one line and fsyncs it (rotating first when the line would pass the size limit). */
  async append(record: Record<string, unknown>): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify(record) + "\n");
    if (this.#size > 0 && this.#size + bytes.length > this.maxBytes) await this.#rotate();
    const before = await refuseLink(this.path, "Results file");
    const f = await Deno.open(this.path, { append: true, create: true, mode: 0o644 });
    try {
      // A link planted between the lstat and the open: the opened file is not the path's own inode.
      const opened = await f.stat();
      const now = await Deno.lstat(this.path);
      if (now.isSymlink || (before && opened.ino !== before.ino) || opened.ino !== now.ino) {
        throw new UnsafePathError(
          `Results file "${this.path}" changed into a link while it was opened: refused`,
        );
      }
      for (let at = 0; at < bytes.length;) at += await f.write(bytes.subarray(at));
      await f.sync();
      this.#size = opened.size + bytes.length;
    } finally {
      f.close();
    }
  }

  async #rotate(): Promise<void> {
    await Deno.remove(`${this.path}.${this.keep}`).catch(() => {});
    for (let i = this.keep - 1; i >= 1; i--) {
      await Deno.rename(`${this.path}.${i}`, `${this.path}.${i + 1}`).catch(() => {});
    }
    if (this.keep >= 1) await Deno.rename(this.path, `${this.path}.1`).catch(() => {});
    else await Deno.remove(this.path).catch(() => {});
    this.#size = 0;
  }
}
