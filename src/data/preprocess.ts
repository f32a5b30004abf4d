/**
 * Turns uint8 images into the float NCHW input a model expects, in this order (the order matters: padding
 * with raw 0 before normalising is what torchvision's `Pad` then `Normalize` does, so the border becomes
 * -mean/std, not 0):
 *   1. scale pixels to [0, 1];
 *   2. pad `pad` pixels of value 0 on every side;
 *   3. resize to `size` with bilinear interpolation, half-pixel centres and no antialiasing
 *      (PyTorch `F.interpolate(mode="bilinear", align_corners=False)`; a number means a square size);
 *   4. convert channels: 1 -> N replicates the gray plane, 3 -> 1 takes BT.601 luma;
 *   5. (x - mean[c]) / std[c], a single value applying to every channel.
 * `resize`, `centerCrop` (torchvision's Resize/CenterCrop on uint8 images, geometry.ts) and `maxPixels` (the
 * decode cap) act when images are read, before all of this; the functions here take sets they already shaped.
 */
import type { SizeSpec } from "./geometry.ts";
import { imageName, type ImageSet } from "./images.ts";

export interface PreprocessOptions {
  mean?: number[];
  std?: number[];
  pad?: number;
  size?: [number, number] | number;
  channels?: number;
  /** Applied when images are read: torchvision Resize (shorter side, or [H, W]). */
  resize?: SizeSpec;
  /** Applied when images are read, after resize: torchvision CenterCrop. */
  centerCrop?: SizeSpec;
  /** Pixel cap per image file, checked on its header before decoding. */
  maxPixels?: number;
}

/** The C x H x W one image becomes. */
export interface ImageShape {
  channels: number;
  height: number;
  width: number;
}

type Dims = Pick<ImageSet, "channels" | "height" | "width">;

/** Checks `options` against images of `dims` and returns the output shape; throws a clear error if invalid. */
export function outputShape(dims: Dims, options: PreprocessOptions = {}): ImageShape {
  const pad = options.pad ?? 0;
  if (!Number.isInteger(pad) || pad < 0) {
    throw new Error(`preprocess(): pad ${pad} is not a non-negative integer`);
  }
  const size = options.size === undefined
    ? [dims.height + 2 * pad, dims.width + 2 * pad]
    : typeof options.size === "number"
    ? [options.size, options.size]
    : options.size;
  if (size.length !== 2 || !size.every((s) => Number.isInteger(s) && s >= 1)) {
    throw new Error(`preprocess(): size [${size.join(", ")}] is not two positive integers [height, width]`);
  }
  const channels = options.channels ?? dims.channels;
  if (!Number.isInteger(channels) || channels < 1) {
    throw new Error(`preprocess(): channels ${channels} is not a positive integer`);
  }
  if (channels !== dims.channels && dims.channels !== 1 && !(dims.channels === 3 && channels === 1)) {
    throw new Error(`preprocess(): images have ${dims.channels} channels but the model wants ${channels}`);
  }
  for (const key of ["mean", "std"] as const) {
    const list = options[key];
    if (list === undefined) continue;
    if (list.length !== 1 && list.length !== channels) {
      throw new Error(
        `preprocess(): ${key} has ${list.length} values [${list.join(", ")}] but the model input has ` +
          `${channels} channels (give 1 or ${channels})`,
      );
    }
    list.forEach((v, c) => {
      if (!Number.isFinite(v)) throw new Error(`preprocess(): ${key}[${c}] is ${v}, not a finite number`);
      if (key === "std" && v === 0) {
        throw new Error(`preprocess(): std[${c}] is 0, which would divide by zero`);
      }
    });
  }
  return { channels, height: size[0], width: size[1] };
}

/** Source index pairs and weights for one axis of a half-pixel bilinear resize. */
function axisTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w1: Float32Array } {
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize), w1 = new Float32Array(outSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const src = Math.max(0, (o + 0.5) * scale - 0.5);
    const lo = Math.min(Math.floor(src), inSize - 1);
    i0[o] = lo;
    i1[o] = Math.min(lo + 1, inSize - 1);
    w1[o] = src - lo;
  }
  return { i0, i1, w1 };
}

interface Plan {
  dims: Dims;
  out: ImageShape;
  pad: number;
  ys: ReturnType<typeof axisTaps>;
  xs: ReturnType<typeof axisTaps>;
  mean: number[];
  std: number[];
}

function plan(dims: Dims, options: PreprocessOptions): Plan {
  const out = outputShape(dims, options);
  const pad = options.pad ?? 0;
  const ph = dims.height + 2 * pad, pw = dims.width + 2 * pad;
  const per = (list: number[] | undefined, dflt: number) =>
    Array.from(
      { length: out.channels },
      (_, c) => list === undefined ? dflt : list.length === 1 ? list[0] : list[c],
    );
  return {
    dims,
    out,
    pad,
    ys: axisTaps(ph, out.height),
    xs: axisTaps(pw, out.width),
    mean: per(options.mean, 0),
    std: per(options.std, 1),
  };
}

/** Writes image `i` of `set` into `dst` at `offset` (C x H x W floats); returns the number of floats written. */
function runImage(set: ImageSet, i: number, p: Plan, dst: Float32Array, offset: number): number {
  const { height: H, width: W, channels: C } = set;
  const ph = H + 2 * p.pad, pw = W + 2 * p.pad;
  const oh = p.out.height, ow = p.out.width, plane = oh * ow;
  const resized = new Float32Array(C * plane);
  const padded = new Float32Array(ph * pw);
  const base = i * C * H * W;
  for (let c = 0; c < C; c++) {
    // Steps 1-2: the padded plane in [0, 1]; the border stays 0 (raw value 0).
    for (let y = 0; y < H; y++) {
      const src = base + (c * H + y) * W, row = (y + p.pad) * pw + p.pad;
      for (let x = 0; x < W; x++) padded[row + x] = set.pixels[src + x] / 255;
    }
    // Step 3: bilinear (an identity when sizes match: every weight is 0).
    const { i0: y0, i1: y1, w1: wy } = p.ys, { i0: x0, i1: x1, w1: wx } = p.xs;
    for (let y = 0; y < oh; y++) {
      const r0 = y0[y] * pw, r1 = y1[y] * pw, fy = wy[y];
      for (let x = 0; x < ow; x++) {
        const fx = wx[x];
        const top = padded[r0 + x0[x]] * (1 - fx) + padded[r0 + x1[x]] * fx;
        const bottom = padded[r1 + x0[x]] * (1 - fx) + padded[r1 + x1[x]] * fx;
        resized[c * plane + y * ow + x] = top * (1 - fy) + bottom * fy;
      }
    }
  }
  // Steps 4-5.
  const OC = p.out.channels;
  for (let c = 0; c < OC; c++) {
    const m = p.mean[c], s = p.std[c], o = offset + c * plane;
    if (OC === C || C === 1) {
      const src = (C === 1 ? 0 : c) * plane;
      for (let k = 0; k < plane; k++) dst[o + k] = (resized[src + k] - m) / s;
    } else {
      for (let k = 0; k < plane; k++) {
        const luma = 0.299 * resized[k] + 0.587 * resized[plane + k] + 0.114 * resized[2 * plane + k];
        dst[o + k] = (luma - m) / s;
      }
    }
  }
  for (let k = offset; k < offset + OC * plane; k++) {
    if (!Number.isFinite(dst[k])) {
      throw new Error(
        `preprocess(): image "${imageName(set, i)}" has ${dst[k]} after preprocessing ` +
          `(mean [${p.mean.join(", ")}], std [${p.std.join(", ")}])`,
      );
    }
  }
  return OC * plane;
}

/** Preprocesses the images at `indices` into one Float32Array, NCHW with N = indices.length. */
export function preprocessBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  options: PreprocessOptions = {},
): Float32Array {
  const p = plan(set, options);
  const size = p.out.channels * p.out.height * p.out.width;
  const out = new Float32Array(indices.length * size);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!(i >= 0 && i < set.n)) throw new Error(`preprocess(): index ${i} is outside 0..${set.n - 1}`);
    runImage(set, i, p, out, k * size);
  }
  return out;
}

/** Preprocesses every image of `set`: Float32Array NCHW. */
export function preprocess(set: ImageSet, options: PreprocessOptions = {}): Float32Array {
  return preprocessBatch(set, Array.from({ length: set.n }, (_, i) => i), options);
}

/** Parses a CLI number list: "0.1307" or "0.485,0.456,0.406" (spaces allowed). */
export function parseNumberList(flag: string, text: string): number[] {
  const parts = text.split(",").map((s) => s.trim());
  const values = parts.map(Number);
  if (parts.some((s) => s === "") || values.some((v) => !Number.isFinite(v))) {
    throw new Error(`--${flag} "${text}" is not a number or a comma-separated list of numbers`);
  }
  return values;
}

function parseInt_(flag: string, text: string): number {
  const v = Number(text.trim());
  if (text.trim() === "" || !Number.isInteger(v)) throw new Error(`--${flag} "${text}" is not an integer`);
  return v;
}

/** CLI flag values as strings (absent flags undefined). */
export interface PreprocessArgs {
  mean?: string;
  std?: string;
  pad?: string;
  size?: string;
  channels?: string;
  resize?: string;
  centerCrop?: string;
  maxPixels?: string;
}

/** "224" (one number) or "224x160" / "224,160" (height x width), each a positive integer. */
function parseSizeSpec(flag: string, text: string): SizeSpec {
  const parts = text.split(/[,x]/i);
  const nums = parts.map((s) => parseInt_(flag, s));
  if (parts.length > 2 || nums.some((v) => v < 1)) {
    throw new Error(`--${flag} "${text}" is not N or HxW with positive integers`);
  }
  return nums.length === 1 ? nums[0] : [nums[0], nums[1]];
}

/** Parses `--mean`, `--std`, `--pad`, `--size` ("32", "32,32" or "32x32" as height x width), `--channels`. */
export function parsePreprocessArgs(args: PreprocessArgs): PreprocessOptions {
  const out: PreprocessOptions = {};
  if (args.mean !== undefined) out.mean = parseNumberList("mean", args.mean);
  if (args.std !== undefined) out.std = parseNumberList("std", args.std);
  if (args.pad !== undefined) out.pad = parseInt_("pad", args.pad);
  if (args.channels !== undefined) out.channels = parseInt_("channels", args.channels);
  if (args.size !== undefined) {
    const parts = args.size.split(/[,x]/i);
    if (parts.length > 2) throw new Error(`--size "${args.size}" is not N, H,W or HxW`);
    const [h, w] = parts.map((s) => parseInt_("size", s));
    out.size = w === undefined ? h : [h, w];
  }
  if (args.resize !== undefined) out.resize = parseSizeSpec("resize", args.resize);
  if (args.centerCrop !== undefined) out.centerCrop = parseSizeSpec("center-crop", args.centerCrop);
  if (args.maxPixels !== undefined) {
    out.maxPixels = parseInt_("max-pixels", args.maxPixels);
    if (out.maxPixels < 1) throw new Error(`--max-pixels "${args.maxPixels}" is not a positive integer`);
  }
  return out;
}

/** Validates the preprocessing keys of a parsed JSON object (other keys are ignored); `file` names errors. */
export function preprocessFromJson(obj: unknown, file: string): PreprocessOptions {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new Error(`Preprocessing file "${file}" is not a JSON object`);
  }
  const o = obj as Record<string, unknown>;
  const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
  const list = (key: string): number[] | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (isNum(v)) return [v];
    if (Array.isArray(v) && v.length > 0 && v.every(isNum)) return v;
    throw new Error(
      `Preprocessing file "${file}": "${key}" must be a number or a list of numbers, got ${
        JSON.stringify(v)
      }`,
    );
  };
  const int = (key: string): number | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (Number.isInteger(v)) return v as number;
    throw new Error(`Preprocessing file "${file}": "${key}" must be an integer, got ${JSON.stringify(v)}`);
  };
  const out: PreprocessOptions = {};
  const mean = list("mean"), std = list("std"), pad = int("pad"), channels = int("channels");
  if (mean) out.mean = mean;
  if (std) out.std = std;
  if (pad !== undefined) out.pad = pad;
  if (channels !== undefined) out.channels = channels;
  for (const [key, name] of [["resize", "resize"], ["center_crop", "centerCrop"]] as const) {
    const v = o[key];
    if (v === undefined) continue;
    const ok = (n: unknown) => Number.isInteger(n) && (n as number) >= 1;
    if (ok(v)) out[name] = v as number;
    else if (Array.isArray(v) && v.length === 2 && v.every(ok)) out[name] = [v[0], v[1]];
    else {
      throw new Error(
        `Preprocessing file "${file}": "${key}" must be a positive integer or [height, width], got ${
          JSON.stringify(v)
        }`,
      );
    }
  }
  if (o.size !== undefined) {
    const s = o.size;
    if (Number.isInteger(s)) out.size = s as number;
    else if (Array.isArray(s) && s.length === 2 && s.every(Number.isInteger)) out.size = [s[0], s[1]];
    else {throw new Error(
        `Preprocessing file "${file}": "size" must be an integer or [height, width], got ${
          JSON.stringify(s)
        }`,
      );}
  }
  return out;
}

/** The sidecar of a model: `path/model.onnx` -> `path/model.json`. */
export function sidecarPath(modelPath: string): string {
  return modelPath.replace(/\.onnx$/i, "") + ".json";
}

/** Loads the preprocessing keys of a model's sidecar JSON, or undefined when there is none. */
export async function loadPreprocessSidecar(modelPath: string): Promise<PreprocessOptions | undefined> {
  const file = sidecarPath(modelPath);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read preprocessing file "${file}": ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new Error(`Preprocessing file "${file}" is not valid JSON: ${(e as Error).message}`);
  }
  return preprocessFromJson(obj, file);
}

/**
 * Warnings worth a line on stderr before a run: a 3-channel model with no mean/std (torchvision models expect
 * ImageNet's), or mean/std that look like 0..255 values although pixels are scaled to [0, 1] first.
 */
export function preprocessWarnings(pre: PreprocessOptions, modelChannels: number | undefined): string[] {
  const out: string[] = [];
  if (modelChannels === 3 && (pre.mean === undefined || pre.std === undefined)) {
    out.push(
      `no --${pre.mean === undefined ? "mean" : "std"} for a 3-channel model: torchvision models expect ` +
        `--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (or put them in the model's sidecar .json)`,
    );
  }
  for (const key of ["mean", "std"] as const) {
    const v = pre[key];
    if (v && v.some((x) => Math.abs(x) > 1)) {
      out.push(
        `--${key} ${v.join(",")} looks like 0-255 values, but pixels are scaled to [0, 1] before ` +
          `normalising: divide by 255 (e.g. ${v.map((x) => +(x / 255).toFixed(3)).join(",")})`,
      );
    }
  }
  return out;
}

/** Keys of `over` (e.g. CLI flags) replace those of `base` (e.g. the sidecar). */
export function mergePreprocess(
  base: PreprocessOptions | undefined,
  over: PreprocessOptions,
): PreprocessOptions {
  const out: PreprocessOptions = { ...base };
  for (const [k, v] of Object.entries(over)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
