/**
 * The spool's file handling, where hostile folders are met: which names are inputs, what is refused before
 * a byte is read (links, special files, other extensions, sizes over the limit), when a file is complete
 * (the write-then-rename protocol, else a size that has stayed the same for a settle interval), and moves to
 * `done/` and `failed/` that never follow a symbolic link (lstat before, O_EXCL for the reason file).
 */
import { SPOOL_EXTENSIONS, SPOOL_IMAGE_NAME } from "./inputs.ts";
import { UnsafePathError } from "./results_log.ts";

/** Files being written by the documented protocol: hidden names and `*.tmp` / `*.part` are never taken. */
export function isInProgressName(name: string): boolean {
  return name.startsWith(".") || /\.(tmp|part)$/i.test(name);
}

/** A name Deno returned lossily (invalid UTF-8 on disk): it cannot be opened or moved by that name. */
export function isLossyName(name: string): boolean {
  return name.includes("\uFFFD");
}

/** Checks that `path` is a real folder, not a link to one (the spool would write through it). */
export async function checkFolder(path: string, what: string): Promise<void> {
  const st = await Deno.lstat(path);
  if (st.isSymlink) {
    throw new UnsafePathError(
      `${what} "${path}" is a symbolic link: refused (the spool never follows links; make it a real folder)`,
    );
  }
  if (!st.isDirectory) throw new UnsafePathError(`${what} "${path}" is not a folder`);
}

/** Why a file must be failed without reading it, or null when it may be read. */
export function refuseBeforeReading(name: string, st: Deno.FileInfo, maxBytes: number): string | null {
  if (st.isSymlink) return `"${name}" is a symbolic link: refused (the spool never follows links)`;
  if (!st.isFile) return `"${name}" is not a regular file`;
  if (!SPOOL_IMAGE_NAME.test(name)) return `"${name}" is not ${SPOOL_EXTENSIONS}`;
  if (st.size > maxBytes) return `"${name}" is ${st.size} bytes, more than the limit of ${maxBytes}`;
  return null;
}

interface Seen {
  size: number;
  mtime: number;
  since: number;
}

/**
 * Takes a file only once its size and modification time have stayed the same for `settleMs` (a writer that
 * appends in parts, or that was interrupted, is waited for). Writers that rename a finished file into place
 * make this moot, which is why that is the documented protocol.
 */
export class SettleTracker {
  #seen = new Map<string, Seen>();
  constructor(readonly settleMs: number) {}

  /** True when `name` with these stats has been unchanged for the settle interval. */
  settled(name: string, st: Deno.FileInfo, now = performance.now()): boolean {
    const mtime = st.mtime?.getTime() ?? 0;
    const prev = this.#seen.get(name);
    if (!prev || prev.size !== st.size || prev.mtime !== mtime) {
      this.#seen.set(name, { size: st.size, mtime, since: now });
      return this.settleMs <= 0;
    }
    return now - prev.since >= this.settleMs;
  }

  forget(name: string): void {
    this.#seen.delete(name);
  }

  /** Names waiting for their settle interval. */
  waiting(): string[] {
    return [...this.#seen.keys()];
  }

  /** Drops names no longer in the folder. */
  keepOnly(names: Set<string>): void {
    for (const n of this.#seen.keys()) if (!names.has(n)) this.#seen.delete(n);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Whether done/ or failed/ already holds a file of this name (a reused name: a duplicate). */
export async function alreadyFiled(dir: string, name: string): Promise<boolean> {
  return await exists(`${dir}/done/${name}`) || await exists(`${dir}/failed/${name}`);
}

/**
 * Moves `dir/name` into `dir/folder/` (with `NAME.reason` beside it when `reason` is given), under a free
 * name (`name~1`, ...). The folder is checked to be a real folder first, the reason file is created with
 * O_EXCL (so a link planted in its place is never written through), and rename(2) moves a link itself,
 * never its target. Returns the path the file went to.
 */
export async function fileAway(dir: string, folder: "done" | "failed", name: string, reason?: string) {
  await checkFolder(`${dir}/${folder}`, `Spool folder`);
  await Deno.lstat(`${dir}/${name}`); // NotFound before anything is written for a file that is gone
  for (let i = 0;; i++) {
    const target = `${dir}/${folder}/${name}${i ? `~${i}` : ""}`;
    if (await exists(target) || (reason !== undefined && await exists(`${target}.reason`))) continue;
    if (reason !== undefined) {
      try {
        const f = await Deno.open(`${target}.reason`, { write: true, createNew: true, mode: 0o644 });
        try {
          const bytes = new TextEncoder().encode(reason + "\n");
          for (let at = 0; at < bytes.length;) at += await f.write(bytes.subarray(at));
        } finally {
          f.close();
        }
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists) continue;
        throw e;
      }
    }
    await Deno.rename(`${dir}/${name}`, target);
    return target;
  }
}
