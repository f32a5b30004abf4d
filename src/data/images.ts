/**
 * The in-memory image format every reader produces (`ImageSet`, uint8 NCHW) and `loadImages`, which reads what
 * `--images` names: an IDX file (idx.ts), a folder of images, flat or in torchvision's ImageFolder layout
 * (folder.ts), or a single image file. Images are decoded by decodeImageChecked (decode.ts: PNG, JPEG, WebP,
 * BMP, with a pixel cap checked before decoding) and brought to one size by the optional Resize/CenterCrop
 * geometry (geometry.ts). Labels files are described in labels.ts.
 */
import { decodeImageChecked } from "./decode.ts";
import { readImageFolder } from "./folder.ts";
import type { FolderOptions } from "./folder.ts";
import { applyGeometry, type Geometry } from "./geometry.ts";
import { readIdxImages } from "./idx.ts";
import { readLabels } from "./labels.ts";

/** N images of C x H x W uint8 pixels, stored NCHW; `labels` and `names` have N entries when present. */
export interface ImageSet {
  n: number;
  channels: number;
  height: number;
  width: number;
  pixels: Uint8Array;
  labels?: Int32Array;
  names?: string[];
  /** The labels file (or class folder root) the labels came from, for error messages. */
  labelsFrom?: string;
  /** Where label i sits in `labelsFrom`: "line 7", "index 7", "class folder \"cat\"". */
  labelWhere?: (i: number) => string;
  /** Class names by label (ImageFolder sub-folders, or names used as labels). */
  classes?: string[];
}

/** One file that could not be read, with why. */
export interface ItemError {
  name: string;
  message: string;
}

/** A decoded image: C x H x W uint8. */
export interface DecodedImage {
  channels: number;
  height: number;
  width: number;
  pixels: Uint8Array;
}

/** The name errors should use for image `i`: its file name when known, else `image #i`. */
export function imageName(set: ImageSet, i: number): string {
  return set.names?.[i] ?? `image #${i}`;
}

/** A new ImageSet holding copies of the images at `indices`, in that order. */
export function subset(set: ImageSet, indices: ArrayLike<number>): ImageSet {
  const size = set.channels * set.height * set.width;
  const pixels = new Uint8Array(indices.length * size);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!(i >= 0 && i < set.n)) throw new Error(`subset(): index ${i} is outside 0..${set.n - 1}`);
    pixels.set(set.pixels.subarray(i * size, (i + 1) * size), k * size);
  }
  const out: ImageSet = {
    n: indices.length,
    channels: set.channels,
    height: set.height,
    width: set.width,
    pixels,
  };
  if (set.labels) out.labels = Int32Array.from(indices, (i) => set.labels![i]);
  if (set.names) out.names = Array.from(indices, (i) => set.names![i]);
  if (set.labelWhere) {
    const where = set.labelWhere, from = Array.from(indices);
    out.labelWhere = (k) => where(from[k]);
  }
  if (set.labelsFrom !== undefined) out.labelsFrom = set.labelsFrom;
  if (set.classes) out.classes = set.classes;
  return out;
}

const BT601 = [0.299, 0.587, 0.114];

/**
 * Decodes PNG, JPEG, WebP or BMP bytes (by signature) to C x H x W uint8 with C = 1 (gray) or 3 (RGB), under
 * the default pixel cap; decodeImageChecked (decode.ts) takes the cap, a required size and a name.
 */
export function decodeImage(bytes: Uint8Array): DecodedImage {
  return decodeImageChecked(bytes);
}

/** Converts a decoded image to `channels` (1: BT.601 luma, as PIL's "L"; 3: gray replicated). */
export function convertChannels(img: DecodedImage, channels: number): DecodedImage {
  if (img.channels === channels) return img;
  const plane = img.width * img.height;
  const out = new Uint8Array(plane * channels);
  if (channels === 3 && img.channels === 1) {
    for (let c = 0; c < 3; c++) out.set(img.pixels, c * plane);
  } else if (channels === 1 && img.channels === 3) {
    const p = img.pixels;
    for (let i = 0; i < plane; i++) {
      out[i] = Math.round(BT601[0] * p[i] + BT601[1] * p[plane + i] + BT601[2] * p[2 * plane + i]);
    }
  } else {
    throw new Error(`convertChannels(): cannot convert ${img.channels} channels to ${channels}`);
  }
  return { channels, height: img.height, width: img.width, pixels: out };
}

/** A copy of `set` with every image converted to `channels` (see convertChannels). */
export function setChannels(set: ImageSet, channels: number): ImageSet {
  if (set.channels === channels) return set;
  const inSize = set.channels * set.height * set.width, outSize = channels * set.height * set.width;
  const pixels = new Uint8Array(set.n * outSize);
  for (let i = 0; i < set.n; i++) {
    const img = { channels: set.channels, height: set.height, width: set.width };
    const one = convertChannels(
      { ...img, pixels: set.pixels.subarray(i * inSize, (i + 1) * inSize) },
      channels,
    );
    pixels.set(one.pixels, i * outSize);
  }
  return { ...set, channels, pixels };
}

export type { FolderOptions };

export interface LoadOptions extends FolderOptions {
  /** Skip unreadable files of a folder (each reported through `onSkip`) instead of failing. */
  skipUnreadable?: boolean;
  onSkip?: (error: ItemError) => void;
}

/** A copy of `set` with every image passed through the Resize/CenterCrop geometry. */
export function setGeometry(set: ImageSet, g: Geometry): ImageSet {
  if (g.resize === undefined && g.centerCrop === undefined) return set;
  const size = set.channels * set.height * set.width;
  let out: Uint8Array | null = null, height = 0, width = 0;
  for (let i = 0; i < set.n; i++) {
    const img = applyGeometry({
      channels: set.channels,
      height: set.height,
      width: set.width,
      pixels: set.pixels.subarray(i * size, (i + 1) * size),
    }, g);
    if (!out) {
      ({ height, width } = img);
      out = new Uint8Array(set.n * img.pixels.length);
    }
    out.set(img.pixels, i * img.pixels.length);
  }
  return { ...set, height, width, pixels: out ?? new Uint8Array(0) };
}

const SINGLE_IMAGE = /\.(png|jpe?g|webp|bmp|gif|tiff?|ppm|pgm|pbm|pnm|heic|heif|avif)$/i;

async function attachLabels(set: ImageSet, path: string, options: LoadOptions): Promise<ImageSet> {
  if (options.labels === undefined) return set;
  const labels = await readLabels(options.labels, { classes: options.classes });
  if (labels.labels.length !== set.n) {
    throw new Error(
      `Labels file "${options.labels}" has ${labels.labels.length} labels but "${path}" has ${set.n} images`,
    );
  }
  set.labels = labels.labels;
  set.labelsFrom = options.labels;
  set.labelWhere = labels.where;
  if (labels.classes) set.classes = labels.classes;
  return set;
}

/**
 * Loads `path`: a folder of images (flat or ImageFolder), a single image file, or an IDX file (gzipped or
 * not), with optional labels, geometry and channel conversion.
 */
export async function loadImages(path: string, options: LoadOptions = {}): Promise<ImageSet> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    throw new Error(`Cannot read images "${path}": no such file or folder`);
  }
  if (info.isDirectory) {
    const { set, errors } = await readImageFolder(path, options);
    if (errors.length > 0 && !options.skipUnreadable) {
      throw new Error(`${errors[0].message} (${errors.length} of ${errors.length + set.n} files unreadable)`);
    }
    errors.forEach((e) => options.onSkip?.(e));
    if (set.n === 0) {
      throw new Error(
        `Cannot read images "${path}": no readable image in the folder (${errors[0]?.message})`,
      );
    }
    return set;
  }
  const head = new Uint8Array(4);
  const file = await Deno.open(path);
  const got = await file.read(head).finally(() => file.close());
  const idx = got === 4 && head[0] === 0 && head[1] === 0;
  const gz = got !== null && got >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  if (!idx && !gz && (SINGLE_IMAGE.test(path) || got === null || got < 4 || head[0] !== 0)) {
    const img = applyGeometry(
      decodeImageChecked(await Deno.readFile(path), { name: path, maxPixels: options.maxPixels }),
      options.geometry ?? {},
    );
    const channels = options.channels === 3 || options.channels === 1 ? options.channels : img.channels;
    const one = convertChannels(img, channels);
    const set: ImageSet = { n: 1, ...one, names: [path.split("/").pop()!] };
    return await attachLabels(set, path, options);
  }
  let set = setGeometry(await readIdxImages(path), options.geometry ?? {});
  if (options.channels === 3) set = setChannels(set, 3);
  return await attachLabels(set, path, options);
}
