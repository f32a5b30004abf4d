/**
 * Common corruptions with severities 1-5, for building shifted test streams: the families of Hendrycks &
 * Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019),
 * with the parameter tables of their CIFAR-10-C generator (github.com/hendrycks/robustness,
 * `ImageNet-C/create_c/make_cifar_c.py`), which were tuned for 32x32 images and so fit MNIST (28x28) and
 * CIFAR-sized inputs. Parameters in pixels (blur sizes, displacements) are not rescaled for large images.
 *
 * Layout: images are C x H x W (planar, as ImageSet stores them). Each corruption works on floats in [0, 1];
 * `corrupt` clips and rounds to uint8 (the reference truncates, which would turn an untouched 255 that
 * became 254.99998 in float32 into 254).
 * Randomness: image i of a set uses Rng(hash(seed, corruption, i)), so a corrupted image does not depend
 * on which other images were corrupted with it.
 */
import { Rng } from "../random.ts";
import type { DecodedImage, ImageSet } from "./images.ts";
import { defocusBlur, gaussianBlur, motionBlur } from "./corruptions_blur.ts";
import { elasticTransform, jpegBatch, jpegCompression, pixelate } from "./corruptions_digital.ts";
import { gaussianNoise, impulseNoise, shotNoise, speckleNoise } from "./corruptions_noise.ts";
import { brightness, contrast, fog } from "./corruptions_weather.ts";

/** One image as floats in [0, 1], C x H x W. */
export interface FloatImage {
  channels: number;
  height: number;
  width: number;
  data: Float32Array;
}

type CorruptionFn = (img: FloatImage, severity: number, rng: Rng) => FloatImage;
/** A deterministic corruption that is cheaper over many images at once; must equal `fn` image by image. */
type BatchFn = (imgs: FloatImage[], severity: number) => FloatImage[];

const TABLE = {
  gaussian_noise: { family: "noise", fn: gaussianNoise },
  shot_noise: { family: "noise", fn: shotNoise },
  impulse_noise: { family: "noise", fn: impulseNoise },
  speckle_noise: { family: "noise", fn: speckleNoise },
  gaussian_blur: { family: "blur", fn: gaussianBlur },
  motion_blur: { family: "blur", fn: motionBlur },
  defocus_blur: { family: "blur", fn: defocusBlur },
  fog: { family: "weather", fn: fog },
  brightness: { family: "weather", fn: brightness },
  contrast: { family: "weather", fn: contrast },
  pixelate: { family: "digital", fn: pixelate },
  jpeg_compression: { family: "digital", fn: jpegCompression, batch: jpegBatch },
  elastic_transform: { family: "digital", fn: elasticTransform },
} satisfies Record<string, { family: string; fn: CorruptionFn; batch?: BatchFn }>;

export type CorruptionName = keyof typeof TABLE;

/** Every corruption name, in the order of the families above. */
export const CORRUPTIONS: readonly CorruptionName[] = Object.keys(TABLE) as CorruptionName[];

/** "noise" | "blur" | "weather" | "digital" for a corruption. */
export function corruptionFamily(name: CorruptionName): string {
  return TABLE[name].family;
}

/** `name` as a CorruptionName ("jpeg" is accepted for "jpeg_compression"), or a clear error. */
export function corruptionName(name: string): CorruptionName {
  const n = name === "jpeg" ? "jpeg_compression" : name;
  if (!(n in TABLE)) throw new Error(`Unknown corruption "${name}"; known: ${CORRUPTIONS.join(", ")}`);
  return n as CorruptionName;
}

export interface CorruptOptions {
  /** 1 (mild) to 5 (severe). */
  severity: number;
  /** Default 0. */
  seed?: number;
}

/** murmur3's 32-bit finaliser over the mixed inputs: nearby seeds/indices give unrelated streams. */
function hashSeed(seed: number, which: number, index: number): number {
  let h = (seed >>> 0) ^ Math.imul(which + 1, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function checkSeverity(severity: number): void {
  if (!Number.isInteger(severity) || severity < 1 || severity > 5) {
    throw new Error(`corrupt(): severity ${severity} is not an integer from 1 to 5`);
  }
}

const toFloat = (img: DecodedImage): FloatImage => ({
  channels: img.channels,
  height: img.height,
  width: img.width,
  data: Float32Array.from(img.pixels, (v) => v / 255),
});

const toUint8 = (img: FloatImage): Uint8Array =>
  Uint8Array.from(img.data, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255));

/** Corrupts one C x H x W uint8 image; `index` picks its random stream as image `index` of a set would. */
export function corruptImage(
  img: DecodedImage,
  name: string,
  options: CorruptOptions & { index?: number },
): DecodedImage {
  const n = corruptionName(name);
  checkSeverity(options.severity);
  const rng = new Rng(hashSeed(options.seed ?? 0, CORRUPTIONS.indexOf(n), options.index ?? 0));
  return { ...img, pixels: toUint8(TABLE[n].fn(toFloat(img), options.severity, rng)) };
}

/** A new ImageSet with every image corrupted by `name` at `options.severity` (labels and names kept). */
export function corrupt(set: ImageSet, name: string, options: CorruptOptions): ImageSet {
  const n = corruptionName(name);
  checkSeverity(options.severity);
  const entry: { fn: CorruptionFn; batch?: BatchFn } = TABLE[n];
  const which = CORRUPTIONS.indexOf(n);
  const size = set.channels * set.height * set.width;
  const image = (i: number) =>
    toFloat({
      channels: set.channels,
      height: set.height,
      width: set.width,
      pixels: set.pixels.subarray(i * size, (i + 1) * size),
    });
  const pixels = new Uint8Array(set.pixels.length);
  const CHUNK = 1024;
  for (let start = 0; start < set.n; start += entry.batch ? CHUNK : 1) {
    const end = Math.min(set.n, start + (entry.batch ? CHUNK : 1));
    const inputs = Array.from({ length: end - start }, (_, k) => image(start + k));
    const outputs = entry.batch
      ? entry.batch(inputs, options.severity)
      : [entry.fn(inputs[0], options.severity, new Rng(hashSeed(options.seed ?? 0, which, start)))];
    outputs.forEach((o, k) => pixels.set(toUint8(o), (start + k) * size));
  }
  const out: ImageSet = { ...set, pixels };
  if (set.labels) out.labels = set.labels.slice();
  if (set.names) out.names = set.names.slice();
  return out;
}
