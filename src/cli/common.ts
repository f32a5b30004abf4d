/**
 * What several subcommands share: choosing a backend, loading an ONNX model with its preprocessing, loading
 * image streams with labels, and checking that the images fit the model before any work starts.
 */
import type { Backend } from "../backend/backend.ts";
import { CpuBackend } from "../backend/cpu.ts";
import { createWasmBackend } from "../backend/wasm/mod.ts";
import { autoBackend } from "../devices/backend_choice.ts";
import { type ImageSet, loadImages } from "../data/images.ts";
import { checkLabelRange, classNamesFor } from "../data/labels.ts";
import {
  loadPreprocessSidecar,
  mergePreprocess,
  outputShape,
  parsePreprocessArgs,
  type PreprocessOptions,
  preprocessWarnings,
} from "../data/preprocess.ts";
import { loadModel } from "../onnx/model.ts";
import type { OnnxModel } from "../onnx/model.ts";
import { importOnnx, type OnnxModule } from "../onnx/import.ts";
import { UsageError } from "./errors.ts";

export type BackendChoice = "webgpu" | "wasm" | "cpu" | "auto";

export const BACKEND_FLAG = {
  backend: { type: "string" as const, default: "auto" },
  threads: { type: "string" as const },
};

/** What openBackend reads from a command's flags: --backend and --threads (the wasm backend's pool size). */
export interface BackendFlags {
  backend?: string;
  threads?: string;
}

export const PREPROCESS_FLAGS = {
  mean: { type: "string" as const },
  std: { type: "string" as const },
  pad: { type: "string" as const },
  size: { type: "string" as const },
  channels: { type: "string" as const },
  resize: { type: "string" as const },
  "center-crop": { type: "string" as const },
  "max-pixels": { type: "string" as const },
  classes: { type: "string" as const },
};

/**
 * `webgpu` and `cpu` as named (webgpu fails clearly without an adapter); `wasm` the SIMD backend on
 * `--threads N` threads (default: the machine's cores); `auto` WebGPU on a real GPU, else wasm (a CPU WebGPU
 * adapter such as lavapipe only where a measured probe finds it faster: src/devices/backend_choice.ts).
 * Takes a command's flags, or just the --backend value.
 */
export async function openBackend(choice: string | undefined | BackendFlags, log = true): Promise<Backend> {
  const flags: BackendFlags = typeof choice === "object" ? choice : { backend: choice };
  const which = flags.backend ?? "auto";
  if (which !== "webgpu" && which !== "wasm" && which !== "cpu" && which !== "auto") {
    throw new UsageError(`--backend "${which}" is not one of webgpu, wasm, cpu, auto`);
  }
  const threads = parseThreads(flags.threads);
  if (which === "cpu") return new CpuBackend();
  if (which === "wasm") return await createWasmBackend({ threads });
  quietVulkanLoader();
  const openWebGpu = async () => {
    const { createWebGpuBackend } = await import("../backend/webgpu/mod.ts");
    return await createWebGpuBackend();
  };
  if (which === "webgpu") return await openWebGpu();
  return await autoBackend({ threads, openWebGpu, log: log && debugBackend() });
}

function parseThreads(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) {
    throw new UsageError(`--threads "${v}" must be a whole number from 1 to 256`);
  }
  return n;
}

function debugBackend(): boolean {
  try {
    return /\b(backend|all)\b/.test(Deno.env.get("EDGETRAIN_DEBUG") ?? "");
  } catch {
    return false;
  }
}

/**
 * Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on stderr when it is missing (systemd
 * services, containers, CI). Give it a private 0700 folder so the CLI's stderr stays one clear line.
 */
function quietVulkanLoader(): void {
  try {
    if (Deno.env.get("XDG_RUNTIME_DIR")) return;
    const dir = `${Deno.env.get("TMPDIR") ?? "/tmp"}/edgetrain-runtime-${Deno.uid?.() ?? "user"}`;
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    Deno.chmodSync(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
  } catch {
    // Without env or write permission the warning stays; nothing else depends on it.
  }
}

export interface LoadedModel {
  path: string;
  onnx: OnnxModel;
  module: OnnxModule;
  /** [C, H, W] the model expects, when its input declares them. */
  inputShape: [number, number, number] | null;
}

export async function openModel(backend: Backend, path: string | undefined): Promise<LoadedModel> {
  if (!path) throw new UsageError("--model is required (an ONNX file)");
  const onnx = await loadModel(path);
  const module = importOnnx(backend, onnx);
  const dims = module.inputShape;
  const chw = dims && dims.length === 4 && dims.slice(1).every((d) => typeof d === "number")
    ? dims.slice(1) as [number, number, number]
    : null;
  return { path, onnx, module, inputShape: chw };
}

/** Flags override the model's sidecar (MODEL.json). */
export async function preprocessFor(
  modelPath: string,
  flags: Record<string, string | boolean | undefined | string[]>,
): Promise<PreprocessOptions> {
  const cli = parsePreprocessArgs({
    mean: flags.mean as string | undefined,
    std: flags.std as string | undefined,
    pad: flags.pad as string | undefined,
    size: flags.size as string | undefined,
    channels: flags.channels as string | undefined,
    resize: flags.resize as string | undefined,
    centerCrop: flags["center-crop"] as string | undefined,
    maxPixels: flags["max-pixels"] as string | undefined,
  });
  return mergePreprocess(await loadPreprocessSidecar(modelPath), cli);
}

/**
 * Fill in channel replication when the model wants 3 channels and the data has 1, then check that the
 * preprocessed images have exactly the model's input shape.
 */
export function fitPreprocess(
  set: ImageSet,
  pre: PreprocessOptions,
  model: LoadedModel,
  what: string,
): PreprocessOptions {
  const out = { ...pre };
  if (model.inputShape && out.channels === undefined && model.inputShape[0] !== set.channels) {
    out.channels = model.inputShape[0];
  }
  const shape = outputShape(set, out);
  const want = model.inputShape;
  if (want && (shape.channels !== want[0] || shape.height !== want[1] || shape.width !== want[2])) {
    throw new Error(
      `Images "${what}" are ${set.channels}x${set.height}x${set.width} and preprocess to ` +
        `${shape.channels}x${shape.height}x${shape.width}, but model "${model.path}" expects ${
          want.join("x")
        } ` +
        `(use --resize, --center-crop, --pad, --size, --channels or a sidecar ${
          model.path.replace(/\.onnx$/i, "")
        }.json)`,
    );
  }
  return out;
}

/**
 * Loads each --images path with the matching --labels (if any); counts must agree. `options.preprocess`
 * brings its read-time steps (resize, center crop, pixel cap); `options.classes` maps class-name labels.
 */
export async function openStreams(
  images: string[] | undefined,
  labels: string[] | undefined,
  onSkip?: (file: string, reason: string) => void,
  options: { preprocess?: PreprocessOptions; classes?: string[] } = {},
): Promise<{ name: string; set: ImageSet }[]> {
  if (!images?.length) {
    throw new UsageError("--images is required (an IDX file or a folder of PNG/JPEG files)");
  }
  if (labels?.length && labels.length !== images.length) {
    throw new UsageError(
      `${images.length} --images but ${labels.length} --labels: give one labels file per images`,
    );
  }
  const out: { name: string; set: ImageSet }[] = [];
  for (const [i, path] of images.entries()) {
    const set = await loadImages(path, {
      labels: labels?.[i],
      skipUnreadable: true,
      onSkip: (e) => onSkip?.(path, e.message),
      geometry: { resize: options.preprocess?.resize, centerCrop: options.preprocess?.centerCrop },
      maxPixels: options.preprocess?.maxPixels,
      classes: options.classes,
    });
    if (labels?.[i] && set.labels && set.labels.length !== set.n) {
      throw new Error(
        `Labels "${labels[i]}" have ${set.labels.length} entries but images "${path}" have ${set.n}`,
      );
    }
    out.push({ name: path, set });
  }
  return out;
}

/** An input that was reported and skipped (an unreadable file of a folder). */
export interface SkippedFile {
  images: string;
  name: string;
  reason: string;
}

export interface Job {
  streams: { name: string; set: ImageSet }[];
  skipped: SkippedFile[];
  backend: Backend;
  model: LoadedModel;
  preprocess: PreprocessOptions;
  /** Class names (--classes, the model's sidecar), when known. */
  classes?: string[];
}

/** The number of classes the model's output declares ([N, C] or [C]), or null. */
export function modelClasses(model: LoadedModel): number | null {
  const c = model.onnx.graph.outputs[0]?.shape?.at(-1);
  return typeof c === "number" && c > 0 ? c : null;
}

/**
 * What predict and adapt start with: the --images streams (unreadable files reported on stderr and skipped),
 * the backend, the model, and preprocessing that fits every stream to the model's input.
 */
export async function openJob(
  command: string,
  flags: Record<string, string | boolean | undefined | string[]> & {
    images?: string[];
    labels?: string[];
    model?: string;
    backend?: string;
    threads?: string;
  },
  options: {
    log?: boolean;
    /** Wrap the backend before the model is loaded onto it (the runtime guard's GuardedBackend). */
    decorate?: (b: Backend) => Backend;
  } = {},
): Promise<Job> {
  const skipped: SkippedFile[] = [];
  if (!flags.model) throw new UsageError("--model is required (an ONNX file)");
  const base = await preprocessFor(flags.model, flags);
  const classes = await classNamesFor(flags.model, flags.classes as string | undefined);
  const streams = await openStreams(flags.images, flags.labels, (images, reason) => {
    skipped.push({ images, name: reason.match(/"([^"]+)"/)?.[1] ?? images, reason });
    console.error(`edgetrain ${command}: skipped: ${reason}`);
  }, { preprocess: base, classes });
  const opened = await openBackend(flags, options.log ?? true);
  const backend = options.decorate ? options.decorate(opened) : opened;
  const model = await openModel(backend, flags.model);
  const preprocess = fitPreprocess(streams[0].set, base, model, streams[0].name);
  for (const s of streams.slice(1)) fitPreprocess(s.set, base, model, s.name);
  const outputs = modelClasses(model);
  if (outputs) { for (const s of streams) checkLabelRange(s.set, outputs, `model "${model.path}"`); }
  for (const w of preprocessWarnings(preprocess, model.inputShape?.[0])) {
    console.error(`edgetrain ${command}: warning: ${w}`);
  }
  return { streams, skipped, backend, model, preprocess, classes };
}
