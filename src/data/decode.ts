/**
 * The one entry point for turning untrusted image bytes into pixels, for the CLI readers, the spool and the
 * HTTP API alike: read the header, refuse what is too large (or not the size the caller needs) before a pixel
 * is decoded, then decode with a decoder that works in memory bounded by the declared size.
 *
 *   decodeImageChecked(bytes, { maxPixels, name, expectSize }) -> { channels, height, width, pixels }
 *   decodeForModel(bytes, { preprocess, input: [C, H, W] }, { name }) -> the same, resized/cropped as the
 *     CLI's readers do (the service's entry point)
 *
 * Every failure is an ImageDecodeError: `kind` ("unsupported" | "corrupt" | "too-large" | "size-mismatch")
 * and a one-line message.
 */
import { ImageDecodeError } from "./decode_error.ts";
import { decodeBmpBytes } from "./bmp.ts";
import { applyGeometry, type SizeSpec } from "./geometry.ts";
import { type ImageProbe, probeImage } from "./image_probe.ts";
import type { DecodedImage } from "./images.ts";
import { decodeJpegBytes } from "./jpeg.ts";
import { decodePngBytes } from "./png.ts";
import { decodeWebpBytes } from "./webp.ts";

/** 2^26 = 67,108,864 pixels (8192 x 8192): above any camera frame an edge model sees, far below a bomb. */
export const DEFAULT_MAX_PIXELS = 1 << 26;
/** Progressive JPEGs have ~10 scans; thousands of tiny scans make libjpeg-turbo spin (a CPU bomb). */
export const MAX_JPEG_SCANS = 500;

export interface DecodeOptions {
  /** Refuse images that declare more than this many pixels (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** Refuse images that do not declare exactly [height, width] (e.g. the model input when nothing resizes). */
  expectSize?: [number, number];
  /** The file or request the bytes came from, named in error messages. */
  name?: string;
}

/** Throws ImageDecodeError when the declared size breaks the limits of `options`; cheap, decodes nothing. */
export function checkDeclaredSize(probe: ImageProbe, options: DecodeOptions = {}): void {
  const { width, height, format } = probe;
  const max = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (width <= 0 || height <= 0) {
    throw new ImageDecodeError(
      "corrupt",
      `${format.toUpperCase()} declares an empty ${width}x${height} image`,
    );
  }
  if (width * height > max) {
    throw new ImageDecodeError(
      "too-large",
      `${format.toUpperCase()} declares ${width}x${height} = ${
        width * height
      } pixels, over the limit of ${max} ` +
        `(--max-pixels); refused before decoding`,
    );
  }
  const want = options.expectSize;
  if (want && (height !== want[0] || width !== want[1])) {
    throw new ImageDecodeError(
      "size-mismatch",
      `image is ${height}x${width} (HxW) but ${want[0]}x${want[1]} is needed`,
    );
  }
  if (probe.scans !== undefined && probe.scans > MAX_JPEG_SCANS) {
    throw new ImageDecodeError(
      "corrupt",
      `JPEG has ${probe.scans} scans, over the limit of ${MAX_JPEG_SCANS}`,
    );
  }
}

/** Reads the header, checks the declared size, then decodes PNG, JPEG, WebP or BMP to C x H x W uint8. */
export function decodeImageChecked(bytes: Uint8Array, options: DecodeOptions = {}): DecodedImage {
  try {
    const probe = probeImage(bytes);
    checkDeclaredSize(probe, options);
    const img = probe.format === "png"
      ? decodePngBytes(bytes)
      : probe.format === "jpeg"
      ? decodeJpegBytes(bytes)
      : probe.format === "webp"
      ? decodeWebpBytes(bytes)
      : decodeBmpBytes(bytes);
    if (img.width !== probe.width || img.height !== probe.height) {
      throw new ImageDecodeError(
        "corrupt",
        `decoded ${img.width}x${img.height} but the header declares ${probe.width}x${probe.height}`,
      );
    }
    return img;
  } catch (e) {
    if (e instanceof ImageDecodeError) throw e.named(options.name);
    throw new ImageDecodeError("corrupt", `cannot decode (${(e as Error).message})`, options.name);
  }
}

/** What the model needs, for decodeForModel: read-time steps and the input the float steps must reach. */
export interface ModelInputSpec {
  /** resize, centerCrop, maxPixels, pad, size: the keys of PreprocessOptions that decide the decoded size. */
  preprocess: { resize?: SizeSpec; centerCrop?: SizeSpec; maxPixels?: number; pad?: number; size?: unknown };
  /** [C, H, W] of the model input, when known. */
  input?: [number, number, number];
}

/**
 * One request's or spool file's image, ready for preprocessBatch: decoded under the pixel cap and, when
 * nothing resizes (no resize, center crop or size), refused from its header unless it is exactly the model's
 * H x W less the padding; then resized and cropped as the CLI does when it reads a folder.
 */
export function decodeForModel(
  bytes: Uint8Array,
  spec: ModelInputSpec,
  options: { name?: string } = {},
): DecodedImage {
  const pre = spec.preprocess;
  const pad = pre.pad ?? 0;
  const resizes = pre.resize !== undefined || pre.centerCrop !== undefined || pre.size !== undefined;
  const expectSize: [number, number] | undefined = spec.input && !resizes
    ? [spec.input[1] - 2 * pad, spec.input[2] - 2 * pad]
    : undefined;
  const img = decodeImageChecked(bytes, { maxPixels: pre.maxPixels, name: options.name, expectSize });
  return applyGeometry(img, { resize: pre.resize, centerCrop: pre.centerCrop });
}
