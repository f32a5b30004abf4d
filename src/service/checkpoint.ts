/**
 * Checkpoints of an adapted TTA state, written so that a crash at any instant leaves either the previous
 * checkpoint or the new one, never a torn file: write a temp file, fsync it, rename it over the final name,
 * fsync the folder (the rename is only durable once the directory entry is).
 *
 * File layout (`ckpt-<step, 12 digits>.etck`, all integers little-endian):
 *   0   8 bytes   magic "ETCKPT\0\x01" (format version 1)
 *   8   u32       H = header length in bytes
 *   12  H bytes   header, UTF-8 JSON: CheckpointHeader (tensor names and lengths, in data order)
 *   ..  4*L bytes every tensor's float32 values, little-endian, concatenated in header order
 *   end 32 bytes  SHA-256 of every byte before it
 *
 * A file that fails any check (magic, checksum, header, lengths, a NaN or infinite value) is corrupt: it is
 * renamed to `*.bad` with a warning and the next newest is tried (the newest few `.bad` files are kept for a
 * post-mortem, older ones pruned). One written for another model (SHA-256 of the ONNX bytes), another method
 * or other tensors is mismatched: it is left untouched and resume() fails naming both, because a start with
 * the wrong `--model` or `--method` must not cost the right one its adapted state. A non-finite state is never
 * written: the last good checkpoints stay the newest.
 */

export const CHECKPOINT_MAGIC = Uint8Array.from([0x45, 0x54, 0x43, 0x4b, 0x50, 0x54, 0x00, 0x01]);
const NAME = /^ckpt-(\d{12})\.etck$/;

export interface CheckpointHeader {
  format: "edgetrain-checkpoint";
  version: 1;
  /** SHA-256 (hex) of the source ONNX model's bytes. */
  model_sha256: string;
  method: string;
  /** Adaptation steps (batches) taken when the state was saved. */
  step: number;
  created: string;
  /** Service counters to continue from (predictions, updates, resets, ...). */
  counters: Record<string, number>;
  /** [name, number of float32 values] in data order. */
  tensors: [string, number][];
}

export interface Checkpoint {
  header: CheckpointHeader;
  state: Record<string, Float32Array>;
}

/** Why a checkpoint file cannot be used: `corrupt` (damaged) or `mismatch` (another model or method). */
export class CheckpointError extends Error {
  override name = "CheckpointError";
  constructor(message: string, readonly kind: "corrupt" | "mismatch") {
    super(message);
  }
}

/** `.bad` files kept for a post-mortem; older ones are pruned at resume. */
export const KEEP_BAD = 3;

/** The first non-finite value of a state, as `tensor "name" has NaN at value i`; null when all are finite. */
export function nonFinite(state: Record<string, Float32Array>): string | null {
  for (const [name, v] of Object.entries(state)) {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) return `tensor "${name}" has ${v[i]} at value ${i}`;
    }
  }
  return null;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function checkpointName(step: number): string {
  return `ckpt-${String(step).padStart(12, "0")}.etck`;
}

/** Serialises a checkpoint (header fields `tensors` and `format`/`version` are filled in here). */
export async function encodeCheckpoint(
  header: Omit<CheckpointHeader, "tensors" | "format" | "version">,
  state: Record<string, Float32Array>,
): Promise<Uint8Array> {
  const bad = nonFinite(state);
  if (bad) throw new Error(`The state is not finite (${bad}): a poisoned state is never checkpointed`);
  const names = Object.keys(state);
  const full: CheckpointHeader = {
    format: "edgetrain-checkpoint",
    version: 1,
    ...header,
    tensors: names.map((n) => [n, state[n].length]),
  };
  const json = new TextEncoder().encode(JSON.stringify(full));
  const floats = names.reduce((s, n) => s + state[n].length, 0);
  const body = new Uint8Array(12 + json.length + 4 * floats);
  const view = new DataView(body.buffer);
  body.set(CHECKPOINT_MAGIC, 0);
  view.setUint32(8, json.length, true);
  body.set(json, 12);
  let at = 12 + json.length;
  for (const n of names) {
    for (const v of state[n]) {
      view.setFloat32(at, v, true);
      at += 4;
    }
  }
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const out = new Uint8Array(body.length + 32);
  out.set(body, 0);
  out.set(sum, body.length);
  return out;
}

/** Parses and verifies a checkpoint; throws CheckpointError("corrupt") on any damage. */
export async function decodeCheckpoint(bytes: Uint8Array, file = "checkpoint"): Promise<Checkpoint> {
  const bad = (why: string) => new CheckpointError(`Checkpoint "${file}" is corrupt: ${why}`, "corrupt");
  if (bytes.length < 12 + 32) throw bad(`${bytes.length} bytes is shorter than the smallest checkpoint`);
  if (!CHECKPOINT_MAGIC.every((b, i) => bytes[i] === b)) {
    throw bad("wrong magic (not an edgetrain checkpoint)");
  }
  const body = bytes.subarray(0, bytes.length - 32);
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body.slice()));
  if (!sum.every((b, i) => bytes[body.length + i] === b)) throw bad("SHA-256 checksum does not match");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = view.getUint32(8, true);
  if (12 + h > body.length) throw bad(`header length ${h} runs past the end of the file`);
  let header: CheckpointHeader;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(12, 12 + h)));
  } catch (e) {
    throw bad(`header is not JSON (${(e as Error).message})`);
  }
  const ok = header?.format === "edgetrain-checkpoint" && header.version === 1 &&
    typeof header.model_sha256 === "string" && typeof header.method === "string" &&
    Number.isInteger(header.step) && Array.isArray(header.tensors) &&
    header.tensors.every((t) =>
      Array.isArray(t) && typeof t[0] === "string" && Number.isInteger(t[1]) && t[1] >= 0
    );
  if (!ok) throw bad("header lacks format, version, model_sha256, method, step or tensors");
  const floats = header.tensors.reduce((s, [, n]) => s + n, 0);
  if (12 + h + 4 * floats !== body.length) {
    throw bad(`header lists ${floats} values but the file holds ${(body.length - 12 - h) / 4}`);
  }
  const state: Record<string, Float32Array> = {};
  let at = 12 + h;
  for (const [name, n] of header.tensors) {
    const t = new Float32Array(n);
    for (let i = 0; i < n; i++, at += 4) t[i] = view.getFloat32(at, true);
    state[name] = t;
  }
  const poisoned = nonFinite(state);
  if (poisoned) throw bad(`values are not finite (${poisoned})`);
  return { header, state };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

export interface AtomicWriteOptions {
  /** Opens the temp file (tests inject a failing one, e.g. /dev/full); default: a new file, mode 0600. */
  openTemp?: (tmp: string) => Promise<Deno.FsFile>;
}

/**
 * Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync the folder). A failure
 * (ENOSPC, EROFS, ...) removes the temp file and says which file could not be written and why.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash) || "/" : ".";
  const tmp = `${dir}/.${path.slice(slash + 1)}.${Deno.pid}.tmp`;
  try {
    // createNew (O_EXCL) never follows a planted symlink; a stale temp of a reused pid is removed first.
    await Deno.remove(tmp).catch(() => {});
    const file = await (options.openTemp?.(tmp) ??
      Deno.open(tmp, { write: true, createNew: true, mode: 0o600 }));
    try {
      await writeAll(file, bytes);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot write "${path}": ${(e as Error).message}`);
  }
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

export interface StoreOptions {
  modelSha256: string;
  method: string;
  /** Checkpoints to keep (newest first); older ones are deleted after a successful write. Default 3. */
  keep?: number;
  warn?: (message: string) => void;
  /** See AtomicWriteOptions (fault injection in tests). */
  openTemp?: AtomicWriteOptions["openTemp"];
}

export interface Resumed extends Checkpoint {
  path: string;
}

/** The checkpoints of one state folder. */
export class CheckpointStore {
  readonly keep: number;
  #warn: (message: string) => void;

  constructor(readonly dir: string, readonly options: StoreOptions) {
    this.keep = options.keep ?? 3;
    this.#warn = options.warn ?? ((m) => console.error(`edgetrain: warning: ${m}`));
  }

  /** Checkpoint files, newest (highest step) first. */
  async list(): Promise<{ path: string; step: number }[]> {
    const out: { path: string; step: number }[] = [];
    for await (const e of Deno.readDir(this.dir)) {
      const m = e.isFile ? NAME.exec(e.name) : null;
      if (m) out.push({ path: `${this.dir}/${e.name}`, step: Number(m[1]) });
    }
    return out.sort((a, b) => b.step - a.step);
  }

  async write(
    step: number,
    state: Record<string, Float32Array>,
    counters: Record<string, number> = {},
  ): Promise<string> {
    const bytes = await encodeCheckpoint({
      model_sha256: this.options.modelSha256,
      method: this.options.method,
      step,
      created: new Date().toISOString(),
      counters,
    }, state);
    const path = `${this.dir}/${checkpointName(step)}`;
    await writeFileAtomic(path, bytes, { openTemp: this.options.openTemp });
    for (const old of (await this.list()).slice(this.keep)) {
      await Deno.remove(old.path).catch(() => {});
    }
    return path;
  }

  /** Reads and checks one file against this store's model and method. */
  async read(path: string): Promise<Checkpoint> {
    const ck = await decodeCheckpoint(await Deno.readFile(path), path);
    const h = ck.header;
    if (h.model_sha256 !== this.options.modelSha256 || h.method !== this.options.method) {
      const other = h.model_sha256 !== this.options.modelSha256
        ? `model sha256 ${h.model_sha256.slice(0, 12)}… with method "${h.method}"`
        : `method "${h.method}"`;
      const mine = h.model_sha256 !== this.options.modelSha256
        ? `model sha256 ${this.options.modelSha256.slice(0, 12)}… with method "${this.options.method}"`
        : `method "${this.options.method}"`;
      throw new CheckpointError(
        `Checkpoint "${path}" was written for ${other}, not for the served ${mine}`,
        "mismatch",
      );
    }
    return ck;
  }

  /**
   * The newest checkpoint that reads back and that `accept` takes (it may throw to refuse, e.g. on tensor
   * names that the method does not have). A corrupt file (damaged, torn, non-finite) is renamed to `*.bad`
   * with a warning and the next one is tried; a file of another model, method or tensor layout is left
   * untouched and this throws a CheckpointError("mismatch") naming both. Null when none is left. Temp files
   * of interrupted writes are removed, and `.bad` files beyond the newest KEEP_BAD are pruned.
   */
  async resume(accept: (ck: Checkpoint) => Promise<void> | void): Promise<Resumed | null> {
    for await (const e of Deno.readDir(this.dir)) {
      if (e.isFile && e.name.startsWith(".ckpt-") && e.name.endsWith(".tmp")) {
        await Deno.remove(`${this.dir}/${e.name}`).catch(() => {});
      }
    }
    try {
      for (const { path } of await this.list()) {
        let ck: Checkpoint;
        try {
          ck = await this.read(path);
        } catch (e) {
          if (e instanceof CheckpointError && e.kind === "mismatch") throw this.#mismatch(e.message);
          const why = e instanceof CheckpointError
            ? e.message
            : `Checkpoint "${path}" cannot be read: ${(e as Error).message}`;
          await this.#setAside(path, why);
          continue;
        }
        try {
          await accept(ck);
        } catch (e) {
          // Readable and intact but not this method's layout: another configuration's state, kept.
          throw this.#mismatch(
            `Checkpoint "${path}" does not fit the method's state: ${(e as Error).message}`,
          );
        }
        return { ...ck, path };
      }
      return null;
    } finally {
      await this.#pruneBad();
    }
  }

  #mismatch(why: string): CheckpointError {
    return new CheckpointError(
      `${why}. The checkpoints in "${this.dir}" are left untouched: start with the --model and --method ` +
        `they were written for, or give another --state (or move them away) to start afresh`,
      "mismatch",
    );
  }

  async #setAside(path: string, why: string): Promise<void> {
    this.#warn(`${why}; set aside as ${path.slice(path.lastIndexOf("/") + 1)}.bad`);
    await Deno.rename(path, `${path}.bad`).catch((r) => this.#warn(`cannot rename "${path}": ${r.message}`));
    // The rename is what makes it "set aside": its mtime orders it among the .bad files to prune.
    const now = new Date();
    await Deno.utime(`${path}.bad`, now, now).catch(() => {});
  }

  async #pruneBad(): Promise<void> {
    const bad: { path: string; mtime: number }[] = [];
    for await (const e of Deno.readDir(this.dir)) {
      if (!e.isFile || !e.name.endsWith(".etck.bad")) continue;
      const path = `${this.dir}/${e.name}`;
      const st = await Deno.lstat(path).catch(() => null);
      if (st) bad.push({ path, mtime: st.mtime?.getTime() ?? 0 });
    }
    bad.sort((a, b) => b.mtime - a.mtime || (a.path < b.path ? 1 : -1));
    for (const { path } of bad.slice(KEEP_BAD)) await Deno.remove(path).catch(() => {});
  }
}

/**
 * The method of the newest intact checkpoint for this model in `dir`, without touching any file: with
 * `--method auto` a restarted service keeps the method it has adapted, whatever the planner would pick now.
 */
export async function checkpointedMethod(dir: string, modelSha256: string): Promise<string | null> {
  const store = new CheckpointStore(dir, { modelSha256, method: "" });
  let list: { path: string; step: number }[];
  try {
    list = await store.list();
  } catch {
    return null;
  }
  for (const { path } of list) {
    try {
      const { header } = await decodeCheckpoint(await Deno.readFile(path), path);
      if (header.model_sha256 === modelSha256) return header.method;
    } catch {
      // corrupt: resume() will set it aside
    }
  }
  return null;
}

/**
 * Checks a checkpoint against the method's current state before loading it: every current tensor must be
 * there with the same length. Extra tensors are allowed (optimizer slots exist only after the first
 * update; the method's loadState rejects names it does not know).
 */
export function checkSameTensors(ck: Checkpoint, current: Record<string, Float32Array>): void {
  const missing = Object.keys(current).filter((n) => !(n in ck.state));
  if (missing.length) {
    throw new CheckpointError(
      `tensors differ from the method's state (missing: ${missing.slice(0, 3).join(", ")}${
        missing.length > 3 ? ", ..." : ""
      })`,
      "mismatch",
    );
  }
  for (const [n, v] of Object.entries(current)) {
    if (ck.state[n].length !== v.length) {
      throw new CheckpointError(
        `tensor "${n}" has ${ck.state[n].length} values, the method's has ${v.length}`,
        "mismatch",
      );
    }
  }
}
