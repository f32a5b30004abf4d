/**
 * The one error every image decoder throws: a kind a caller can map (an HTTP status, skip or stop) and a
 * one-line reason. `message` names the file when the caller gave a name.
 */

/**
 * - `unsupported`: a format or variant we do not decode (TIFF, CMYK JPEG, animated WebP, RLE BMP);
 * - `corrupt`: bad signature, CRC, header or truncated data;
 * - `too-large`: declared dimensions over the pixel cap (refused before any pixel is decoded);
 * - `size-mismatch`: declared dimensions differ from the size the caller requires.
 */
export type ImageErrorKind = "unsupported" | "corrupt" | "too-large" | "size-mismatch";

export class ImageDecodeError extends Error {
  override name = "ImageDecodeError";

  constructor(readonly kind: ImageErrorKind, readonly reason: string, readonly file?: string) {
    super(file === undefined ? reason : `Cannot read image "${file}": ${reason}`);
  }

  /** The same error naming `file` (decoders below the dispatcher do not know the name). */
  named(file: string | undefined): ImageDecodeError {
    return file === undefined || this.file !== undefined
      ? this
      : new ImageDecodeError(this.kind, this.reason, file);
  }
}

export function corrupt(reason: string): ImageDecodeError {
  return new ImageDecodeError("corrupt", reason);
}

export function unsupported(reason: string): ImageDecodeError {
  return new ImageDecodeError("unsupported", reason);
}
