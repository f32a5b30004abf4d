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
 * A file that fails any check (magic, checksum, header, lengths) is corrupt; one written for another model
 * (SHA-256 of the ONNX bytes) or another method is mismatched. Both are renamed to `*.bad` with a warning and
 * the next newest is tried: the service starts from the source model rather than crash.
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
  return { header, state };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

/** Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync the folder). */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash) || "/" : ".";
  const tmp = `${dir}/.${path.slice(slash + 1)}.${Deno.pid}.tmp`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    await writeAll(file, bytes);
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, path);
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
    await writeFileAtomic(path, bytes);
    for (const old of (await this.list()).slice(this.keep)) {
      await Deno.remove(old.path).catch(() => {});
    }
    return path;
  }

  /** Reads and checks one file against this store's model and method. */
  async read(path: string): Promise<Checkpoint> {
    const ck = await decodeCheckpoint(await Deno.readFile(path), path);
    const h = ck.header;
    if (h.model_sha256 !== this.options.modelSha256) {
      throw new CheckpointError(
        `Checkpoint "${path}" was written for model sha256 ${h.model_sha256.slice(0, 12)}…, ` +
          `not the served model ${this.options.modelSha256.slice(0, 12)}…`,
        "mismatch",
      );
    }
    if (h.method !== this.options.method) {
      throw new CheckpointError(
        `Checkpoint "${path}" holds a "${h.method}" state, not "${this.options.method}"`,
        "mismatch",
      );
    }
    return ck;
  }

  /**
   * The newest checkpoint that reads back and that `accept` takes (it may throw to refuse, e.g. on tensor
   * names that the method does not have). Each refused file is renamed to `*.bad` with a warning; leftover
   * temp files of interrupted writes are removed. Null when none is usable.
   */
  async resume(accept: (ck: Checkpoint) => Promise<void> | void): Promise<Resumed | null> {
    for await (const e of Deno.readDir(this.dir)) {
      if (e.isFile && e.name.startsWith(".ckpt-") && e.name.endsWith(".tmp")) {
        await Deno.remove(`${this.dir}/${e.name}`).catch(() => {});
      }
    }
    for (const { path } of await this.list()) {
      try {
        const ck = await this.read(path);
        await accept(ck);
        return { ...ck, path };
      } catch (e) {
        const why = e instanceof CheckpointError
          ? e.message
          : `Checkpoint "${path}" cannot be loaded: ${(e as Error).message}`;
        this.#warn(`${why}; set aside as ${path.slice(path.lastIndexOf("/") + 1)}.bad`);
        await Deno.rename(path, `${path}.bad`).catch((r) =>
          this.#warn(`cannot rename "${path}": ${r.message}`)
        );
      }
    }
    return null;
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
