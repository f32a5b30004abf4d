/**
 * IDX files (the MNIST container): a 4-byte magic `00 00 <dtype> <ndim>`, ndim big-endian uint32 sizes, then
 * the data in C order. Images are `0x00000803` (uint8, N x H x W), labels `0x00000801` (uint8, N). Files may be
 * gzipped; we look at the 1f 8b header rather than the name because people rename them both ways.
 */
import type { ImageSet } from "./images.ts";

export const IDX_IMAGES_MAGIC = 0x00000803;
export const IDX_LABELS_MAGIC = 0x00000801;

const DTYPES: Record<number, string> = {
  0x08: "uint8",
  0x09: "int8",
  0x0b: "int16",
  0x0c: "int32",
  0x0d: "float32",
  0x0e: "float64",
};

const hex8 = (v: number) => "0x" + (v >>> 0).toString(16).padStart(8, "0");
const hex2 = (v: number) => "0x" + v.toString(16).padStart(2, "0");

/** True when the bytes start with the gzip member header (RFC 1952: 1f 8b). */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

async function pipeBytes(
  bytes: Uint8Array,
  stream: CompressionStream | DecompressionStream,
): Promise<Uint8Array> {
  const out = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(out).arrayBuffer());
}

/** Decompressed bytes allowed by default: 2 GiB (60,000 MNIST digits are 47 MB). */
export const DEFAULT_MAX_IDX_BYTES = 2 ** 31;
/** Deflate cannot expand data by more than ~1032:1; a header declaring more than that is a lie. */
const MAX_DEFLATE_RATIO = 1032;
/** Compressed bytes fed per step: at most ~8 MiB come out of one step, whatever the stream holds. */
const FEED = 8 << 10;

/**
 * The total size an IDX file declares in its first bytes: a number once the header is complete, null while
 * more bytes are needed, undefined when the bytes are not an IDX header (e.g. a gzipped text labels file).
 */
export function idxDeclaredSize(head: Uint8Array): number | null | undefined {
  if (head.length < 4) return null;
  if (head[0] !== 0 || head[1] !== 0) return undefined;
  const ndim = head[3], header = 4 + 4 * ndim;
  if (head.length < header) return null;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let size = 1;
  for (let i = 0; i < ndim; i++) size *= view.getUint32(4 + 4 * i, false);
  return header + size;
}

export interface GunzipOptions {
  /** Refuse to inflate past this many bytes (default DEFAULT_MAX_IDX_BYTES). */
  maxBytes?: number;
  /** The size the stream declares in its first bytes (see idxDeclaredSize); output stops there. */
  declaredSize?: (head: Uint8Array) => number | null | undefined;
}

/**
 * Gunzips `bytes` in bounded memory: compressed input goes in small slices, a declared size (when the content
 * has one) is checked against the cap and against what the compressed size could possibly hold before any
 * large allocation, and inflation stops as soon as the output passes the declared or allowed size. `name`
 * is named in errors.
 */
export async function gunzip(
  bytes: Uint8Array,
  name = "<bytes>",
  options: GunzipOptions = {},
): Promise<Uint8Array> {
  const cap = options.maxBytes ?? DEFAULT_MAX_IDX_BYTES;
  const fail = (why: string) => new Error(`Cannot read IDX file "${name}": ${why}`);
  let offset = 0;
  const source = new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(ctrl) {
      if (offset >= bytes.length) return ctrl.close();
      ctrl.enqueue(bytes.slice(offset, offset + FEED));
      offset += FEED;
    },
  });
  const reader = source.pipeThrough(new DecompressionStream("gzip")).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0, declared: number | null | undefined = null, out: Uint8Array | null = null;
  try {
    while (true) {
      let step: ReadableStreamReadResult<Uint8Array>;
      try {
        step = await reader.read();
      } catch (e) {
        throw fail(`gzip data is corrupt or truncated (${(e as Error).message})`);
      }
      if (step.done) break;
      const chunk = step.value;
      if (out) {
        if (total + chunk.length > out.length) {
          throw fail(
            `gzip data inflates past the ${out.length} bytes its IDX header declares (trailing data)`,
          );
        }
        out.set(chunk, total);
        total += chunk.length;
        continue;
      }
      chunks.push(chunk);
      total += chunk.length;
      if (total > cap) throw fail(`gzip data inflates past the limit of ${cap} bytes`);
      if (declared === null && options.declaredSize) {
        const head = chunks.length === 1 ? chunk : concat(chunks, total);
        declared = options.declaredSize(head);
        if (typeof declared === "number") {
          if (declared > cap) throw fail(`header declares ${declared} bytes, over the limit of ${cap} bytes`);
          if (declared > bytes.length * MAX_DEFLATE_RATIO + 1024) {
            throw fail(
              `header declares ${declared} bytes, more than ${bytes.length} gzip bytes can hold (truncated or corrupt)`,
            );
          }
          if (total > declared) {
            throw fail(
              `gzip data inflates past the ${declared} bytes its IDX header declares (trailing data)`,
            );
          }
          out = new Uint8Array(declared);
          out.set(head.subarray(0, total));
          chunks.length = 0;
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  // A short stream keeps its real length: the IDX parser reports it as truncated against the header.
  return out ? out.subarray(0, total) : concat(chunks, total);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  return pipeBytes(bytes, new CompressionStream("gzip"));
}

/**
 * Reads a file and gunzips it when it carries the gzip header, in bounded memory (see gunzip); an IDX file's
 * declared size bounds the output.
 */
export async function readMaybeGzip(path: string, options: GunzipOptions = {}): Promise<Uint8Array> {
  const cap = options.maxBytes ?? DEFAULT_MAX_IDX_BYTES;
  let bytes: Uint8Array;
  try {
    const size = (await Deno.stat(path)).size;
    if (size > cap) throw new Error(`${size} bytes is over the limit of ${cap} bytes`);
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`Cannot read IDX file "${path}": no such file`);
    throw new Error(`Cannot read IDX file "${path}": ${(e as Error).message}`);
  }
  return isGzip(bytes) ? await gunzip(bytes, path, { declaredSize: idxDeclaredSize, ...options }) : bytes;
}

/** Parses the header of an IDX buffer that must have `magic`; returns its dimensions and where data starts. */
function parseHeader(bytes: Uint8Array, name: string, magic: number, what: string): number[] {
  if (bytes.length < 4) {
    throw new Error(`Cannot read IDX file "${name}": ${bytes.length} bytes is too short for an IDX header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const got = view.getUint32(0, false);
  const dtype = bytes[2], ndim = bytes[3];
  const wantNdim = magic & 0xff;
  if (bytes[0] !== 0 || bytes[1] !== 0 || ndim !== wantNdim || !(dtype in DTYPES)) {
    throw new Error(`Cannot read IDX file "${name}": magic ${hex8(got)} is not ${hex8(magic)} (${what})`);
  }
  if (dtype !== 0x08) {
    throw new Error(
      `Cannot read IDX file "${name}": dtype ${hex2(dtype)} (${DTYPES[dtype]}) is not supported, ` +
        `only ${hex2(0x08)} (uint8)`,
    );
  }
  const header = 4 + 4 * ndim;
  if (bytes.length < header) {
    throw new Error(
      `Cannot read IDX file "${name}": truncated header, expected ${header} bytes but the file has ${bytes.length}`,
    );
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const expected = header + dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== expected) {
    const kind = bytes.length < expected ? "truncated data" : "trailing data";
    throw new Error(
      `Cannot read IDX file "${name}": ${kind}, expected ${expected} bytes ` +
        `(${header} header + ${dims.join(" x ")} uint8) but the file has ${bytes.length}`,
    );
  }
  return dims;
}

/** Parses (already gunzipped) IDX image bytes into a one-channel ImageSet. */
export function parseIdxImages(
  bytes: Uint8Array,
  name = "<bytes>",
  options: { owned?: boolean } = {},
): ImageSet {
  const [n, height, width] = parseHeader(bytes, name, IDX_IMAGES_MAGIC, "images");
  // Copy unless the caller hands the buffer over: it may be a view into a larger one we must not keep alive
  // or alias. readIdxImages owns its buffer, so a large file is not held twice.
  const end = 16 + n * height * width;
  const pixels = options.owned ? bytes.subarray(16, end) : bytes.slice(16, end);
  return { n, channels: 1, height, width, pixels };
}

/** Parses (already gunzipped) IDX label bytes. */
export function parseIdxLabels(bytes: Uint8Array, name = "<bytes>"): Int32Array {
  const [n] = parseHeader(bytes, name, IDX_LABELS_MAGIC, "labels");
  return Int32Array.from(bytes.subarray(8, 8 + n));
}

export async function readIdxImages(path: string): Promise<ImageSet> {
  return parseIdxImages(await readMaybeGzip(path), path, { owned: true });
}

export async function readIdxLabels(path: string): Promise<Int32Array> {
  return parseIdxLabels(await readMaybeGzip(path), path);
}

function header(magic: number, dims: number[], dataBytes: number): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + dataBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, false);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  return out;
}

/** Encodes a one-channel ImageSet as IDX image bytes (uncompressed). */
export function encodeIdxImages(set: ImageSet): Uint8Array {
  if (set.channels !== 1) {
    throw new Error(
      `encodeIdxImages(): IDX images hold one channel but the set has ${set.channels} ` +
        `([${set.n}, ${set.channels}, ${set.height}, ${set.width}])`,
    );
  }
  const size = set.n * set.height * set.width;
  if (set.pixels.length !== size) {
    throw new Error(
      `encodeIdxImages(): pixels has ${set.pixels.length} values but [${set.n}, 1, ${set.height}, ${set.width}] needs ${size}`,
    );
  }
  const out = header(IDX_IMAGES_MAGIC, [set.n, set.height, set.width], size);
  out.set(set.pixels, 16);
  return out;
}

/** Encodes labels 0..255 as IDX label bytes (uncompressed). */
export function encodeIdxLabels(labels: ArrayLike<number>): Uint8Array {
  const out = header(IDX_LABELS_MAGIC, [labels.length], labels.length);
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i];
    if (!Number.isInteger(v) || v < 0 || v > 255) {
      throw new Error(`encodeIdxLabels(): label ${v} at index ${i} does not fit IDX uint8 (0..255)`);
    }
    out[8 + i] = v;
  }
  return out;
}

export interface IdxWriteOptions {
  /** Gzip the file; defaults to true when the path ends in ".gz". */
  gzip?: boolean;
}

async function writeMaybeGzip(path: string, bytes: Uint8Array, options: IdxWriteOptions): Promise<void> {
  const compress = options.gzip ?? path.endsWith(".gz");
  await Deno.writeFile(path, compress ? await gzip(bytes) : bytes);
}

export function writeIdxImages(path: string, set: ImageSet, options: IdxWriteOptions = {}): Promise<void> {
  return writeMaybeGzip(path, encodeIdxImages(set), options);
}

export function writeIdxLabels(
  path: string,
  labels: ArrayLike<number>,
  options: IdxWriteOptions = {},
): Promise<void> {
  return writeMaybeGzip(path, encodeIdxLabels(labels), options);
}
