/**
 * Seeded, bounded fuzzing of the parsers that meet untrusted bytes: images (PNG, JPEG, WebP, BMP) through the
 * data decoder and through the service's request decoding, IDX (gzipped or not) through the bounded gunzip and
 * the IDX parser, ONNX through decodeModel and importOnnx, checkpoints through decodeCheckpoint, and request
 * heads through the service's HTTP/1.1 parser.
 *
 *   deno task fuzz [--seed 1] [--count 5000] [--formats png,jpeg,webp,bmp,idx,onnx,checkpoint,http] [--out DIR] [--json]
 *
 * Each input is a seed file (fixtures/, or made here) with 1 to 4 mutations: bit flips, bytes set to edge
 * values, 16/32-bit fields set to huge sizes, ranges deleted, duplicated or spliced, truncation; half of the
 * PNG and checkpoint inputs get their CRCs or SHA-256 recomputed so that mutations reach past the checksums.
 * An input is bounded by its size (at most 256 KiB) and the parsers' own caps, so every run ends; the tool
 * (never a test) also reports the slowest input and the process's peak RSS.
 *
 * A crash is anything thrown that is not the parser's own error: for images an ImageDecodeError (the data
 * decoder) or an InputError (the service), for IDX an Error naming the IDX file, for ONNX an Error that is not
 * a TypeError/RangeError/ReferenceError (a bug escaping the decoder), for checkpoints a CheckpointError, for
 * request heads an HttpError.
 * Crashing inputs are written to --out (default fuzz-crashes/) to replay.
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu.ts";
import { decodeImageChecked } from "../src/data/decode.ts";
import { ImageDecodeError } from "../src/data/decode_error.ts";
import {
  encodeIdxImages,
  encodeIdxLabels,
  gunzip,
  gzip,
  idxDeclaredSize,
  isGzip,
  parseIdxImages,
  parseIdxLabels,
} from "../src/data/idx.ts";
import { importOnnx } from "../src/onnx/import.ts";
import { decodeModel } from "../src/onnx/model.ts";
import { Rng } from "../src/random.ts";
import { CheckpointError, decodeCheckpoint, encodeCheckpoint } from "../src/service/checkpoint.ts";
import { framing, HttpError, parseHead } from "../src/service/http1_wire.ts";
import { decodeInput, InputError, type InputSpec } from "../src/service/inputs.ts";

export const FORMATS = ["png", "jpeg", "webp", "bmp", "idx", "onnx", "checkpoint", "http"] as const;
export type Format = typeof FORMATS[number];

const MAX_INPUT = 256 * 1024;
const ROOT = new URL("../", import.meta.url);

export interface FuzzReport {
  seed: number;
  inputs: number;
  byFormat: Record<string, number>;
  /** Inputs the parsers accepted, by format (the rest were refused with their own errors). */
  accepted: Record<string, number>;
  crashes: { format: string; index: number; error: string; file?: string }[];
  /**
   * Image inputs that a decoder refused through decodeImageChecked's catch-all ("cannot decode (...)"): an
   * internal error (e.g. a RangeError) the user sees as one line. Not crashes; reported for the decoders.
   */
  masked: Record<string, number>;
  slowest_ms: number;
  peak_rss_bytes: number;
}

async function files(dir: string, pattern: RegExp): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  const names: string[] = [];
  for await (const e of Deno.readDir(new URL(dir, ROOT))) {
    if (e.isFile && pattern.test(e.name)) names.push(e.name);
  }
  for (const n of names.sort()) out.push(await Deno.readFile(new URL(`${dir}/${n}`, ROOT)));
  return out;
}

/** The unmutated inputs of each format. */
export async function seeds(): Promise<Record<Format, Uint8Array[]>> {
  const golden = "fixtures/data/goldens";
  const pixels = new Uint8Array(4 * 8 * 8).map((_, i) => (i * 37) & 255);
  const idx = encodeIdxImages({ n: 4, channels: 1, height: 8, width: 8, pixels });
  const labels = encodeIdxLabels([1, 2, 3, 4]);
  const state = {
    "model.bn.weight": Float32Array.of(1, 0.5, -2),
    "optimizer.0.m": new Float32Array(5).fill(0.1),
  };
  const header = {
    model_sha256: "ab".repeat(32),
    method: "tent",
    step: 3,
    created: "2024-01-01T00:00:00Z",
    counters: {},
  };
  return {
    png: [...await files(golden, /\.png$/), ...await files("fixtures/data/images", /^0[0-2].*\.png$/)],
    jpeg: await files(golden, /\.jpg$/),
    webp: await files(golden, /\.webp$/),
    bmp: await files(golden, /\.bmp$/),
    idx: [idx, labels, await gzip(idx), await gzip(labels)],
    onnx: [await Deno.readFile(new URL("fixtures/models/small_cnn_preserve.onnx", ROOT))],
    checkpoint: [await encodeCheckpoint(header, state)],
    http: [
      "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:8417\r\nContent-Type: image/png\r\nContent-Length: 812\r\n\r\n",
      "POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
      "GET /v1/state?digest=1 HTTP/1.0\r\nAuthorization: Bearer abc\r\nConnection: keep-alive\r\n\r\n",
    ].map((t) => new TextEncoder().encode(t)),
  };
}

const EDGE_U32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 46000, 65535 * 65535];

/** One mutated copy of `base` (`other` for splices), at most MAX_INPUT bytes. */
export function mutate(rng: Rng, base: Uint8Array, other: Uint8Array): Uint8Array {
  let b: Uint8Array = base.slice();
  const n = 1 + rng.int(4);
  for (let k = 0; k < n; k++) {
    const at = b.length ? rng.int(b.length) : 0;
    switch (rng.int(8)) {
      case 0: // bit flips
        for (let i = 0, m = 1 + rng.int(8); i < m && b.length; i++) b[rng.int(b.length)] ^= 1 << rng.int(8);
        break;
      case 1: // a byte to an edge value
        if (b.length) b[at] = [0, 1, 0x7f, 0x80, 0xfe, 0xff][rng.int(6)];
        break;
      case 2: // a 16- or 32-bit field (sizes, lengths) to a huge or zero value, either byte order
        if (b.length >= 4) {
          const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
          const pos = rng.int(b.length - 3), val = EDGE_U32[rng.int(EDGE_U32.length)] >>> 0;
          if (rng.int(2)) v.setUint32(pos, val, rng.int(2) === 0);
          else v.setUint16(pos, val & 0xffff, rng.int(2) === 0);
        }
        break;
      case 3: // delete a range
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(64))));
        break;
      case 4: { // duplicate a range
        const len = 1 + rng.int(256);
        b = concat(b.subarray(0, at), b.subarray(at, at + len), b.subarray(at));
        break;
      }
      case 5: // truncate
        b = b.subarray(0, rng.int(b.length + 1)).slice();
        break;
      case 6: { // splice in a piece of another input of the format
        const from = rng.int(Math.max(1, other.length));
        b = concat(b.subarray(0, at), other.subarray(from, from + 1 + rng.int(512)), b.subarray(at));
        break;
      }
      default: // random bytes appended or inserted
        b = concat(
          b.subarray(0, at),
          crypto.getRandomValues(new Uint8Array(1 + rng.int(32))),
          b.subarray(at),
        );
    }
  }
  return b.length > MAX_INPUT ? b.subarray(0, MAX_INPUT).slice() : b;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Recomputes every PNG chunk's CRC that lies within the bytes (so that mutations reach the decoder). */
export function fixPngCrcs(b: Uint8Array): Uint8Array {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 8; at + 12 <= b.length;) {
    const len = v.getUint32(at);
    if (at + 12 + len > b.length) break;
    let c = 0xffffffff;
    for (let i = at + 4; i < at + 8 + len; i++) c = CRC[(c ^ b[i]) & 0xff] ^ (c >>> 8);
    v.setUint32(at + 8 + len, (c ^ 0xffffffff) >>> 0);
    at += 12 + len;
  }
  return b;
}

async function fixSha(b: Uint8Array): Promise<Uint8Array> {
  if (b.length < 32) return b;
  const body = b.slice(0, b.length - 32);
  b.set(new Uint8Array(await crypto.subtle.digest("SHA-256", body)), b.length - 32);
  return b;
}

const SPEC: InputSpec = { shape: [1, 32, 32], preprocess: { pad: 2, maxPixels: 1 << 20 } };
const MEDIA: Record<string, string> = {
  png: "image/png",
  jpeg: "image/jpeg",
  webp: "image/webp",
  bmp: "image/bmp",
};
const BUG = (e: unknown) =>
  !(e instanceof Error) || e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError;

/** Feeds one input to the real parsers of its format; returns whether it was accepted, throws on a crash. */
async function parse(format: Format, bytes: Uint8Array, cpu: CpuBackend, masked: (why: string) => void) {
  if (format in MEDIA) {
    let accepted = true;
    try {
      decodeImageChecked(bytes, { maxPixels: 1 << 20 });
    } catch (e) {
      if (!(e instanceof ImageDecodeError)) throw e;
      if (/^cannot decode \(/.test(e.reason)) masked(e.reason);
      accepted = false;
    }
    try {
      decodeInput(bytes, MEDIA[format], null, SPEC);
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
    }
    return accepted;
  }
  if (format === "idx") {
    try {
      const raw = isGzip(bytes)
        ? await gunzip(bytes, "fuzz", { maxBytes: 64 << 20, declaredSize: idxDeclaredSize })
        : bytes;
      if (raw[3] === 1) parseIdxLabels(raw, "fuzz");
      else parseIdxImages(raw, "fuzz");
      return true;
    } catch (e) {
      if (BUG(e) || !/^Cannot read IDX file "fuzz"/.test((e as Error).message)) throw e;
      return false;
    }
  }
  if (format === "http") {
    try {
      framing(parseHead(bytes).headers);
      return true;
    } catch (e) {
      if (!(e instanceof HttpError)) throw e;
      return false;
    }
  }
  if (format === "onnx") {
    try {
      importOnnx(cpu, decodeModel(bytes)).dispose?.();
      return true;
    } catch (e) {
      if (BUG(e)) throw e;
      return false;
    }
  }
  try {
    await decodeCheckpoint(bytes, "fuzz");
    return true;
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    return false;
  }
}

export interface FuzzOptions {
  seed?: number;
  /** Inputs in all, spread evenly over the formats. */
  count?: number;
  formats?: readonly Format[];
  /** Folder for crashing inputs (none written when absent). */
  out?: string;
  onProgress?: (done: number) => void;
}

export async function runFuzz(options: FuzzOptions = {}): Promise<FuzzReport> {
  const seed = options.seed ?? 1;
  const formats = options.formats ?? FORMATS;
  const count = options.count ?? 5000;
  const rng = new Rng(seed);
  const pool = await seeds();
  const cpu = new CpuBackend();
  const report: FuzzReport = {
    seed,
    inputs: 0,
    byFormat: {},
    accepted: {},
    crashes: [],
    masked: {},
    slowest_ms: 0,
    peak_rss_bytes: 0,
  };
  try {
    for (let i = 0; i < count; i++) {
      const format = formats[i % formats.length];
      const list = pool[format];
      let bytes = mutate(rng, list[rng.int(list.length)], list[rng.int(list.length)]);
      if (rng.int(2)) {
        bytes = format === "png" ? fixPngCrcs(bytes) : format === "checkpoint" ? await fixSha(bytes) : bytes;
      }
      const t0 = performance.now();
      try {
        const accepted = await parse(format, bytes, cpu, (why) => {
          const key = `${format}: ${why.replace(/\d+/g, "N").slice(0, 100)}`;
          report.masked[key] = (report.masked[key] ?? 0) + 1;
        });
        if (accepted) report.accepted[format] = (report.accepted[format] ?? 0) + 1;
      } catch (e) {
        const crash: FuzzReport["crashes"][number] = {
          format,
          index: i,
          error: `${(e as Error)?.name}: ${(e as Error)?.message ?? String(e)}`.split("\n")[0],
        };
        if (options.out) {
          await Deno.mkdir(options.out, { recursive: true });
          crash.file = `${options.out}/${format}-seed${seed}-${i}.bin`;
          await Deno.writeFile(crash.file, bytes);
        }
        report.crashes.push(crash);
      }
      report.slowest_ms = Math.max(report.slowest_ms, performance.now() - t0);
      report.inputs++;
      report.byFormat[format] = (report.byFormat[format] ?? 0) + 1;
      if (i % 100 === 0) {
        report.peak_rss_bytes = Math.max(report.peak_rss_bytes, Deno.memoryUsage().rss);
        options.onProgress?.(i);
      }
    }
  } finally {
    cpu.dispose();
  }
  report.peak_rss_bytes = Math.max(report.peak_rss_bytes, Deno.memoryUsage().rss);
  return report;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string", default: "1" },
      count: { type: "string", default: "5000" },
      formats: { type: "string", default: FORMATS.join(",") },
      out: { type: "string", default: "fuzz-crashes" },
      json: { type: "boolean", default: false },
    },
  });
  const formats = values.formats!.split(",").map((f) => f.trim()) as Format[];
  for (const f of formats) {
    if (!FORMATS.includes(f)) throw new Error(`--formats: unknown "${f}" (known: ${FORMATS.join(", ")})`);
  }
  const count = Number(values.count);
  const report = await runFuzz({
    seed: Number(values.seed),
    count,
    formats,
    out: values.out,
    onProgress: (i) => !values.json && Deno.stderr.writeSync(new TextEncoder().encode(`\r${i}/${count}`)),
  });
  if (values.json) console.log(JSON.stringify(report));
  else {
    console.error("");
    console.log(
      `fuzz seed ${report.seed}: ${report.inputs} inputs (${
        Object.entries(report.byFormat).map(([f, n]) => `${f} ${n}, ${report.accepted[f] ?? 0} accepted`)
          .join("; ")
      }), ` +
        `${report.crashes.length} crashes; slowest input ${report.slowest_ms.toFixed(0)} ms, ` +
        `peak RSS ${(report.peak_rss_bytes / 2 ** 20).toFixed(0)} MiB`,
    );
    for (const [why, n] of Object.entries(report.masked)) {
      console.log(`  caught by the decoder's catch-all, ${n}x: ${why}`);
    }
    for (const c of report.crashes.slice(0, 20)) {
      console.log(`  ${c.format} #${c.index}: ${c.error}${c.file ? ` (${c.file})` : ""}`);
    }
  }
  Deno.exit(report.crashes.length ? 1 : 0);
}
