/**
 * What the service accepts as one input, turned into the model's C x H x W float32 input:
 * - `image/png`, `image/jpeg`, `image/webp`, `image/bmp`: the header is read first and an image that declares
 *   more than the pixel cap (`--max-pixels`, 2^24 by default here), or, when nothing resizes, not exactly the
 *   model's size, is refused before a pixel is decoded (src/data/decode.ts decodes in memory bounded by the
 *   declared size); then it is preprocessed exactly as `adapt` does (pad, resize, channels, mean/std from the
 *   flags or the model's sidecar);
 * - `application/octet-stream` or `application/x-edgetrain-tensor`: the model input itself, C*H*W float32
 *   values in little-endian byte order, already preprocessed; an `X-Shape: C,H,W` (or `1,C,H,W`) header is
 *   optional and, when given, must match the model.
 * Every failure is an InputError carrying the HTTP status and a one-line reason; nothing here touches the
 * adapted state.
 */
import { decodeForModel } from "../data/decode.ts";
import { ImageDecodeError, type ImageErrorKind } from "../data/decode_error.ts";
import type { ImageSet } from "../data/images.ts";
import { outputShape, preprocessBatch, type PreprocessOptions } from "../data/preprocess.ts";

export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/bmp"] as const;

/**
 * The service's pixel cap unless --max-pixels says otherwise: 2^24 = 16.8 MP (4096 x 4096), a quarter of the
 * CLI's, because a long-running service decodes one request after another under a memory cap.
 */
export const SERVE_MAX_PIXELS = 1 << 24;

const DECODE_STATUS: Record<ImageErrorKind, 400 | 413 | 415 | 422> = {
  corrupt: 400,
  "too-large": 413,
  unsupported: 400,
  "size-mismatch": 422,
};
export const TENSOR_TYPES = ["application/octet-stream", "application/x-edgetrain-tensor"] as const;

export class InputError extends Error {
  override name = "InputError";
  /** 400 malformed, 413 too large, 415 unsupported type, 422 well-formed but unusable (size, NaN). */
  constructor(readonly status: 400 | 413 | 415 | 422, message: string, readonly skipped = false) {
    super(message);
  }
}

export interface InputSpec {
  /** [C, H, W] of the model input. */
  shape: [number, number, number];
  preprocess: PreprocessOptions;
}

function mediaType(contentType: string | null): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

function checkFinite(x: Float32Array, what: string): Float32Array {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) {
      throw new InputError(422, `${what} has ${x[i]} at value ${i} (NaN or infinite input is skipped)`, true);
    }
  }
  return x;
}

/**
 * Decodes an image (refused from its header when too large or, with nothing resizing, the wrong size) and
 * preprocesses it to the model input. `name` (a spool file) is named in the errors.
 */
export function imageInput(bytes: Uint8Array, spec: InputSpec, name?: string): Float32Array {
  let img;
  try {
    const preprocess = { ...spec.preprocess, maxPixels: spec.preprocess.maxPixels ?? SERVE_MAX_PIXELS };
    img = decodeForModel(bytes, { preprocess, input: spec.shape }, { name });
  } catch (e) {
    if (e instanceof ImageDecodeError) {
      const pad = spec.preprocess.pad ? ` after --pad ${spec.preprocess.pad}` : "";
      const why = e.kind === "size-mismatch"
        ? `${e.reason} (the model expects ${spec.shape.join("x")}${pad}); refused before decoding`
        : e.reason;
      throw new InputError(
        DECODE_STATUS[e.kind],
        `${name ? `Cannot decode "${name}"` : "Cannot decode the image"}: ${why}`,
      );
    }
    throw new InputError(400, `Cannot decode the image: ${(e as Error).message}`);
  }
  const [c, h, w] = spec.shape;
  const set: ImageSet = {
    n: 1,
    channels: img.channels,
    height: img.height,
    width: img.width,
    pixels: img.pixels,
  };
  const pre = { ...spec.preprocess, channels: spec.preprocess.channels ?? c };
  const out = outputShape(set, pre);
  if (out.channels !== c || out.height !== h || out.width !== w) {
    throw new InputError(
      422,
      `Image is ${img.channels}x${img.height}x${img.width} and preprocesses to ${out.channels}x${out.height}x${out.width}, ` +
        `but the model expects ${c}x${h}x${w}`,
    );
  }
  try {
    return checkFinite(preprocessBatch(set, [0], pre), "The preprocessed image");
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(422, (e as Error).message, true);
  }
}

/** Reads a raw little-endian float32 model input, checking the optional X-Shape header. */
export function tensorInput(bytes: Uint8Array, xShape: string | null, spec: InputSpec): Float32Array {
  const [c, h, w] = spec.shape;
  const want = c * h * w;
  if (xShape !== null) {
    const dims = xShape.split(",").map((s) => s.trim());
    const nums = dims.map(Number);
    if (dims.some((d) => !/^\d+$/.test(d))) {
      throw new InputError(
        400,
        `X-Shape "${xShape}" is not a comma-separated list of sizes such as ${c},${h},${w}`,
      );
    }
    const chw = nums.length === 4 && nums[0] === 1 ? nums.slice(1) : nums;
    if (chw.length !== 3 || chw[0] !== c || chw[1] !== h || chw[2] !== w) {
      throw new InputError(422, `X-Shape ${xShape} does not match the model input ${c},${h},${w}`);
    }
  }
  if (bytes.length !== 4 * want) {
    throw new InputError(
      422,
      `A raw tensor body must hold ${want} float32 values (${
        4 * want
      } bytes for ${c}x${h}x${w}), got ${bytes.length} bytes`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const x = new Float32Array(want);
  for (let i = 0; i < want; i++) x[i] = view.getFloat32(4 * i, true);
  return checkFinite(x, "The tensor");
}

/** Dispatches on the media type of a request body. */
export function decodeInput(
  bytes: Uint8Array,
  contentType: string | null,
  xShape: string | null,
  spec: InputSpec,
): Float32Array {
  const type = mediaType(contentType);
  if (bytes.length === 0) throw new InputError(400, "The request body is empty");
  if (
    (IMAGE_TYPES as readonly string[]).includes(type) || type === "image/jpg" || type === "image/x-ms-bmp"
  ) {
    return imageInput(bytes, spec);
  }
  if ((TENSOR_TYPES as readonly string[]).includes(type)) return tensorInput(bytes, xShape, spec);
  throw new InputError(
    415,
    `Content-Type "${contentType ?? ""}" is not supported (use ${
      [...IMAGE_TYPES, ...TENSOR_TYPES].join(", ")
    })`,
  );
}

/** Spool files: images by extension (the only kind a folder can carry without a header). */
export function spoolInput(name: string, bytes: Uint8Array, spec: InputSpec): Float32Array {
  if (!SPOOL_IMAGE_NAME.test(name)) throw new InputError(415, `"${name}" is not ${SPOOL_EXTENSIONS}`);
  if (bytes.length === 0) throw new InputError(400, `"${name}" is empty`);
  return imageInput(bytes, spec, name);
}

/** The extensions the spool takes (a folder carries no Content-Type). */
export const SPOOL_IMAGE_NAME = /\.(png|jpe?g|webp|bmp)$/i;
export const SPOOL_EXTENSIONS = "a .png, .jpg, .jpeg, .webp or .bmp file";
