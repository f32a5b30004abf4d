/**
 * JPEG decoding with libjpeg-turbo compiled to WebAssembly (npm @cwasm/jpeg-turbo, its TurboJPEG API), so the
 * pixels are the ones PIL gives: the same library with its defaults, the accurate integer IDCT (JDCT_ISLOW)
 * and fancy (triangular) chroma upsampling. A pure-JS decoder (jpeg-js) differs by 3 levels on average and
 * flips predictions.
 *
 * The .wasm is imported as bytes (`with { type: "bytes" }`), so `deno bundle` and `deno compile` carry it
 * inside the one file. libjpeg reports fatal errors through longjmp, which this build cannot resume: the
 * import throws, the instance is dropped (its heap may hold half a decompressor) and the next call makes a
 * fresh one. An instance whose memory grew past MAX_KEPT_MEMORY for a large image is dropped too, because
 * WebAssembly memory never shrinks.
 */
import wasmBytes from "@cwasm/jpeg-turbo/jpeg-turbo.wasm" with { type: "bytes" };
import { corrupt, unsupported } from "./decode_error.ts";
import type { DecodedImage } from "./images.ts";

interface TurboJpeg {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  tjInitDecompress(): number;
  tjDecompressHeader3(
    handle: number,
    src: number,
    size: number,
    width: number,
    height: number,
    subsamp: number,
    colorspace: number,
  ): number;
  tjDecompress2(
    handle: number,
    src: number,
    size: number,
    dst: number,
    width: number,
    pitch: number,
    height: number,
    pixelFormat: number,
    flags: number,
  ): number;
  tjDestroy(handle: number): number;
}

const TJPF_RGB = 0, TJPF_GRAY = 6;
const TJCS_GRAY = 2, TJCS_CMYK = 3, TJCS_YCCK = 4;
const MAX_KEPT_MEMORY = 64 << 20;

class LibjpegAbort extends Error {}

let compiled: WebAssembly.Module | null = null;
let live: TurboJpeg | null = null;

function instance(): TurboJpeg {
  if (live) return live;
  compiled ??= new WebAssembly.Module(wasmBytes as Uint8Array<ArrayBuffer>);
  const fail = (what: string) => () => {
    throw new LibjpegAbort(what);
  };
  const inst = new WebAssembly.Instance(compiled, {
    env: { setjmp: () => 0, longjmp: fail("libjpeg error") },
    wasi_snapshot_preview1: {
      proc_exit: fail("proc_exit"),
      environ_sizes_get: () => 0,
      environ_get: fail("environ_get"),
      fd_close: fail("fd_close"),
      fd_seek: fail("fd_seek"),
      fd_write: fail("fd_write"),
    },
  });
  live = inst.exports as unknown as TurboJpeg;
  return live;
}

/** Decodes JPEG bytes (size already checked by the caller) to C x H x W uint8: C = 1 for gray, else 3. */
export function decodeJpegBytes(bytes: Uint8Array): DecodedImage {
  const tj = instance();
  let src = 0, meta = 0, dst = 0, handle = 0;
  try {
    src = tj.malloc(bytes.length);
    meta = tj.malloc(16);
    if (!src || !meta) throw corrupt(`JPEG of ${bytes.length} bytes does not fit the decoder's memory`);
    new Uint8Array(tj.memory.buffer, src, bytes.length).set(bytes);
    handle = tj.tjInitDecompress();
    if (!handle) throw corrupt("libjpeg-turbo could not start a decompressor");
    if (tj.tjDecompressHeader3(handle, src, bytes.length, meta, meta + 4, meta + 8, meta + 12) !== 0) {
      throw corrupt("libjpeg-turbo cannot read the JPEG header");
    }
    const [width, height, , colorspace] = new Int32Array(tj.memory.buffer, meta, 4);
    if (colorspace === TJCS_CMYK || colorspace === TJCS_YCCK) {
      throw unsupported("CMYK JPEG is not supported (save it as RGB)");
    }
    const channels = colorspace === TJCS_GRAY ? 1 : 3;
    dst = tj.malloc(width * height * channels);
    if (!dst) throw corrupt(`JPEG of ${width}x${height} does not fit the decoder's memory`);
    const format = channels === 1 ? TJPF_GRAY : TJPF_RGB;
    if (tj.tjDecompress2(handle, src, bytes.length, dst, width, width * channels, height, format, 0) !== 0) {
      throw corrupt("libjpeg-turbo cannot decode the JPEG data");
    }
    const hwc = new Uint8Array(tj.memory.buffer, dst, width * height * channels);
    const plane = width * height, pixels = new Uint8Array(plane * channels);
    if (channels === 1) pixels.set(hwc);
    else {
      for (let p = 0, q = 0; p < plane; p++, q += 3) {
        pixels[p] = hwc[q];
        pixels[plane + p] = hwc[q + 1];
        pixels[2 * plane + p] = hwc[q + 2];
      }
    }
    return { channels, height, width, pixels };
  } catch (e) {
    if (e instanceof LibjpegAbort || e instanceof WebAssembly.RuntimeError) {
      live = null;
      throw corrupt("libjpeg-turbo found corrupt or truncated JPEG data");
    }
    throw e;
  } finally {
    if (live === tj) {
      if (handle) tj.tjDestroy(handle);
      for (const p of [src, meta, dst]) if (p) tj.free(p);
      if (tj.memory.buffer.byteLength > MAX_KEPT_MEMORY) live = null;
    }
  }
}
