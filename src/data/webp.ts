/**
 * WebP decoding with libwebp compiled to WebAssembly (npm @cwasm/webp, `WebPDecodeRGBA`: libwebp's defaults,
 * fancy upsampling for lossy files, as PIL's decoder uses). The .wasm is imported as bytes so bundles carry
 * it; an instance that grew past MAX_KEPT_MEMORY, or that trapped, is dropped (WebAssembly memory never
 * shrinks).
 */
import wasmBytes from "@cwasm/webp/webp.wasm" with { type: "bytes" };
import { corrupt } from "./decode_error.ts";
import type { DecodedImage } from "./images.ts";

interface LibWebp {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  WebPDecodeRGBA(src: number, size: number, width: number, height: number): number;
}

const MAX_KEPT_MEMORY = 64 << 20;

let compiled: WebAssembly.Module | null = null;
let live: LibWebp | null = null;

function instance(): LibWebp {
  if (live) return live;
  compiled ??= new WebAssembly.Module(wasmBytes as Uint8Array<ArrayBuffer>);
  const fail = (what: string) => () => {
    throw new Error(`libwebp called ${what}`);
  };
  const inst = new WebAssembly.Instance(compiled, {
    wasi_snapshot_preview1: {
      fd_close: fail("fd_close"),
      fd_seek: fail("fd_seek"),
      fd_write: fail("fd_write"),
    },
  });
  live = inst.exports as unknown as LibWebp;
  return live;
}

/** Decodes WebP bytes (size already checked by the caller) to 3 x H x W uint8 (alpha dropped, as PIL's RGB). */
export function decodeWebpBytes(bytes: Uint8Array): DecodedImage {
  const lib = instance();
  let src = 0, meta = 0, rgba = 0;
  try {
    src = lib.malloc(bytes.length);
    meta = lib.malloc(8);
    if (!src || !meta) throw corrupt(`WebP of ${bytes.length} bytes does not fit the decoder's memory`);
    new Uint8Array(lib.memory.buffer, src, bytes.length).set(bytes);
    rgba = lib.WebPDecodeRGBA(src, bytes.length, meta, meta + 4);
    if (!rgba) throw corrupt("libwebp cannot decode the WebP data (corrupt or truncated)");
    const [width, height] = new Int32Array(lib.memory.buffer, meta, 2);
    const plane = width * height, pixels = new Uint8Array(3 * plane);
    const hwc = new Uint8Array(lib.memory.buffer, rgba, 4 * plane);
    for (let p = 0, q = 0; p < plane; p++, q += 4) {
      pixels[p] = hwc[q];
      pixels[plane + p] = hwc[q + 1];
      pixels[2 * plane + p] = hwc[q + 2];
    }
    return { channels: 3, height, width, pixels };
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      live = null;
      throw corrupt("libwebp found corrupt WebP data");
    }
    throw e;
  } finally {
    if (live === lib) {
      for (const p of [src, meta, rgba]) if (p) lib.free(p);
      if (lib.memory.buffer.byteLength > MAX_KEPT_MEMORY) live = null;
    }
  }
}
