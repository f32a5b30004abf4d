/**
 * The in-memory image format every reader produces (`ImageSet`, uint8 NCHW) and the readers themselves:
 * IDX files (see idx.ts) and folders of PNG/JPEG files with an optional labels file.
 *
 * Labels file (`labels.csv` or `labels.txt` inside the folder, or any path given as `labels`):
 * - blank lines and lines starting with `#` are ignored;
 * - either every line is `name,label` (comma, tab or spaces between; a first line whose label is not an
 *   integer, such as `name,label`, is a header and skipped) and names are file names inside the folder,
 * - or every line is one integer label, in the folder's sorted file order (unreadable files included, so a
 *   skipped file drops its own label and no other).
 * Files are sorted by name with plain code-unit order (as `ls` in the C locale and Python's `sorted`), so
 * number them with leading zeros.
 */
import { convertIndexedToRgb, decode as decodePng } from "fast-png";
import jpeg from "jpeg-js";
import { parseIdxLabels, readIdxImages, readMaybeGzip } from "./idx.ts";

/** N images of C x H x W uint8 pixels, stored NCHW; `labels` and `names` have N entries when present. */
export interface ImageSet {
  n: number;
  channels: number;
  height: number;
  width: number;
  pixels: Uint8Array;
  labels?: Int32Array;
  names?: string[];
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
  return out;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47];
const BT601 = [0.299, 0.587, 0.114];

/** Unpacks sub-byte samples (rows padded to whole bytes) and scales them to 0..255. */
function unpackBits(
  data: Uint8Array,
  width: number,
  height: number,
  channels: number,
  depth: number,
): Uint8Array {
  const out = new Uint8Array(width * height * channels);
  const rowBytes = Math.ceil((width * channels * depth) / 8);
  const max = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width * channels; x++) {
      const bit = x * depth;
      const byte = data[y * rowBytes + (bit >> 3)];
      const v = (byte >> (8 - depth - (bit & 7))) & max;
      out[y * width * channels + x] = Math.round((v * 255) / max);
    }
  }
  return out;
}

/** Interleaved HWC samples (with `alpha` trailing channels dropped) to planar CHW. */
function toPlanar(
  hwc: ArrayLike<number>,
  width: number,
  height: number,
  stride: number,
  keep: number,
): DecodedImage {
  const plane = width * height;
  const pixels = new Uint8Array(plane * keep);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < keep; c++) pixels[c * plane + p] = hwc[p * stride + c];
  }
  return { channels: keep, height, width, pixels };
}

function decodePngBytes(bytes: Uint8Array): DecodedImage {
  const png = decodePng(bytes);
  const { width, height } = png;
  if (png.palette) {
    const rgb = convertIndexedToRgb(png);
    const stride = rgb.length / (width * height);
    return toPlanar(rgb, width, height, stride, 3);
  }
  let data: ArrayLike<number> = png.data;
  if (png.depth === 16) data = Uint8Array.from(png.data as Uint16Array, (v) => Math.round(v / 257));
  else if (png.depth < 8) data = unpackBits(png.data as Uint8Array, width, height, png.channels, png.depth);
  // Alpha is dropped rather than composited: datasets store opaque images, and any choice of background
  // would be a guess.
  const colour = png.channels >= 3 ? 3 : 1;
  return toPlanar(data, width, height, png.channels, colour);
}

function decodeJpegBytes(bytes: Uint8Array): DecodedImage {
  const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const rgb = toPlanar(img.data, img.width, img.height, 3, 3);
  // jpeg-js expands one-component (grayscale) JPEGs to R = G = B; fold those back to one channel.
  const plane = img.width * img.height, p = rgb.pixels;
  for (let i = 0; i < plane; i++) {
    if (p[i] !== p[plane + i] || p[i] !== p[2 * plane + i]) return rgb;
  }
  return { channels: 1, height: img.height, width: img.width, pixels: p.slice(0, plane) };
}

/** Decodes PNG or JPEG bytes (by signature) to C x H x W uint8 with C = 1 (gray) or 3 (RGB). */
export function decodeImage(bytes: Uint8Array): DecodedImage {
  if (PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return decodePngBytes(bytes);
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return decodeJpegBytes(bytes);
  throw new Error("not a PNG or JPEG file (unknown signature)");
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

/** Labels from a labels file: either by file name or as a list in sorted file order. */
export type ParsedLabels = { byName: Map<string, number> } | { list: number[] };

/** Parses the text of a labels file (format in the module comment); `file` names it in errors. */
export function parseLabelsText(text: string, file: string): ParsedLabels {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  const pairs = lines.map((l) => l.split(/\s*[,\t]\s*|\s+/));
  const isInt = (s: string) => /^[+-]?\d+$/.test(s);
  if (pairs.length > 0 && pairs.every((p) => p.length === 1)) {
    return {
      list: pairs.map(([v], i) => {
        if (!isInt(v)) throw new Error(`Labels file "${file}": line ${i + 1} "${v}" is not an integer label`);
        return Number(v);
      }),
    };
  }
  const byName = new Map<string, number>();
  pairs.forEach((p, i) => {
    if (i === 0 && p.length === 2 && !isInt(p[1])) return; // header such as "name,label"
    if (p.length !== 2 || !isInt(p[1])) {
      throw new Error(`Labels file "${file}": line "${lines[i]}" is not "name,label" with an integer label`);
    }
    byName.set(p[0], Number(p[1]));
  });
  return { byName };
}

export interface FolderOptions {
  /** Labels file; defaults to `labels.csv` or `labels.txt` inside the folder when one exists. */
  labels?: string;
  /** Output channels: "auto" (default) gives 1 when every image is gray, else 3. */
  channels?: 1 | 3 | "auto";
}

const IMAGE_EXT = /\.(png|jpe?g)$/i;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads every PNG/JPEG file of `dir` (sorted by name). A file that cannot be decoded, or whose size differs
 * from the first readable image, goes to `errors` instead of failing the whole folder.
 */
export async function readImageFolder(
  dir: string,
  options: FolderOptions = {},
): Promise<{ set: ImageSet; errors: ItemError[] }> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if ((e.isFile || e.isSymlink) && !e.name.startsWith(".") && IMAGE_EXT.test(e.name)) files.push(e.name);
  }
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (files.length === 0) {
    throw new Error(`Cannot read images "${dir}": the folder has no .png/.jpg/.jpeg files`);
  }

  let labelsPath = options.labels;
  if (labelsPath === undefined) {
    for (const f of ["labels.csv", "labels.txt"]) {
      if (await exists(`${dir}/${f}`)) labelsPath = `${dir}/${f}`;
    }
  }
  const parsed = labelsPath === undefined
    ? undefined
    : parseLabelsText(await Deno.readTextFile(labelsPath), labelsPath);
  if (parsed && "list" in parsed && parsed.list.length !== files.length) {
    throw new Error(
      `Labels file "${labelsPath}" has ${parsed.list.length} labels but "${dir}" has ${files.length} image files`,
    );
  }

  const errors: ItemError[] = [];
  const decoded: { name: string; img: DecodedImage; label?: number }[] = [];
  for (const [i, name] of files.entries()) {
    let img: DecodedImage;
    try {
      img = decodeImage(await Deno.readFile(`${dir}/${name}`));
    } catch (e) {
      errors.push({ name, message: `Cannot read image "${dir}/${name}": ${(e as Error).message}` });
      continue;
    }
    const first = decoded[0]?.img;
    if (first && (img.height !== first.height || img.width !== first.width)) {
      errors.push({
        name,
        message: `Cannot read image "${dir}/${name}": size ${img.height}x${img.width} differs from ` +
          `${first.height}x${first.width} of "${decoded[0].name}"`,
      });
      continue;
    }
    let label: number | undefined;
    if (parsed && "list" in parsed) label = parsed.list[i];
    if (parsed && "byName" in parsed) {
      label = parsed.byName.get(name);
      if (label === undefined) {
        throw new Error(`Labels file "${labelsPath}" has no label for image "${name}"`);
      }
    }
    decoded.push({ name, img, label });
  }

  const channels = options.channels === undefined || options.channels === "auto"
    ? (decoded.every((d) => d.img.channels === 1) ? 1 : 3)
    : options.channels;
  const height = decoded[0]?.img.height ?? 0, width = decoded[0]?.img.width ?? 0;
  const size = channels * height * width;
  const pixels = new Uint8Array(decoded.length * size);
  decoded.forEach((d, k) => pixels.set(convertChannels(d.img, channels).pixels, k * size));
  const set: ImageSet = {
    n: decoded.length,
    channels,
    height,
    width,
    pixels,
    names: decoded.map((d) => d.name),
  };
  if (parsed) set.labels = Int32Array.from(decoded, (d) => d.label!);
  return { set, errors };
}

/** Reads labels from an IDX labels file (gzipped or not) or a text labels file in list form. */
export async function readLabels(path: string): Promise<Int32Array> {
  const bytes = await readMaybeGzip(path);
  if (bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0) return parseIdxLabels(bytes, path);
  const parsed = parseLabelsText(new TextDecoder().decode(bytes), path);
  if (!("list" in parsed)) {
    throw new Error(
      `Labels file "${path}" gives labels by name, which needs a folder of images, not an IDX file`,
    );
  }
  return Int32Array.from(parsed.list);
}

export interface LoadOptions extends FolderOptions {
  /** Skip unreadable files of a folder (each reported through `onSkip`) instead of failing. */
  skipUnreadable?: boolean;
  onSkip?: (error: ItemError) => void;
}

/** Loads images from an IDX file (gzipped or not) or a folder of PNG/JPEG files, with optional labels. */
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
    if (set.n === 0) throw new Error(`Cannot read images "${path}": no readable image in the folder`);
    return set;
  }
  const set = await readIdxImages(path);
  if (options.channels === 3) Object.assign(set, setChannels(set, 3));
  if (options.labels !== undefined) {
    const labels = await readLabels(options.labels);
    if (labels.length !== set.n) {
      throw new Error(
        `Labels file "${options.labels}" has ${labels.length} labels but "${path}" has ${set.n} images`,
      );
    }
    set.labels = labels;
  }
  return set;
}
