/**
 * Writes corrupted test streams as IDX files, one images + labels pair per (corruption, severity):
 *
 *   deno run -A tools/make_stream.ts --corruptions gaussian_noise,fog --severity 5 --n 500 --out DIR
 *
 * Flags: --corruptions a,b,... (names from src/data/corruptions.ts, or "clean" for the uncorrupted images)
 *        --severity 5 | 1,3,5     --n N (first N images of the source; default 500)
 *        --source mnist-test (default: the 2,000 test images of mnistSplit()) | mnist-train | PATH
 *        --labels L (for a PATH source)   --seed S (corruption seed, default 0)   --gzip
 * Files: DIR/<corruption>-s<severity>-images-idx3-ubyte[.gz] and ...-labels-idx1-ubyte[.gz] ("clean-..." for
 * clean), and DIR/manifest.json recording the command and every file, so a fixture says how it was made.
 */
import { parseArgs } from "node:util";
import { corrupt, corruptionName } from "../src/data/corruptions.ts";
import { type ImageSet, loadImages, subset } from "../src/data/images.ts";
import { writeIdxImages, writeIdxLabels } from "../src/data/idx.ts";
import { mnistSplit } from "../src/data/mnist.ts";

export interface StreamOptions {
  corruptions: string[];
  severities: number[];
  n: number;
  out: string;
  source?: string;
  labels?: string;
  seed?: number;
  gzip?: boolean;
}

export interface StreamFile {
  corruption: string;
  severity: number | null;
  images: string;
  labels: string;
}

async function loadSource(source: string, labels?: string): Promise<ImageSet> {
  if (source === "mnist-test") return (await mnistSplit()).test;
  if (source === "mnist-train") return (await mnistSplit()).train;
  return await loadImages(source, { labels });
}

/** Writes the streams and the manifest; returns the files written (paths relative to `out`). */
export async function makeStreams(options: StreamOptions): Promise<StreamFile[]> {
  const names = options.corruptions.map((c) => (c === "clean" ? c : corruptionName(c)));
  const source = options.source ?? "mnist-test";
  const all = await loadSource(source, options.labels);
  if (!Number.isInteger(options.n) || options.n < 1 || options.n > all.n) {
    throw new Error(`make_stream: --n ${options.n} is not in 1..${all.n} (images in ${source})`);
  }
  if (all.channels !== 1) {
    throw new Error(`make_stream: IDX holds one channel but ${source} has ${all.channels}`);
  }
  const set = subset(all, Array.from({ length: options.n }, (_, i) => i));
  const ext = options.gzip ? ".gz" : "";
  await Deno.mkdir(options.out, { recursive: true });
  const files: StreamFile[] = [];
  for (const name of names) {
    for (const severity of name === "clean" ? [null] : options.severities) {
      const stem = severity === null ? name : `${name}-s${severity}`;
      const out = severity === null ? set : corrupt(set, name, { severity, seed: options.seed ?? 0 });
      const file = {
        corruption: name,
        severity,
        images: `${stem}-images-idx3-ubyte${ext}`,
        labels: `${stem}-labels-idx1-ubyte${ext}`,
      };
      await writeIdxImages(`${options.out}/${file.images}`, out, { gzip: options.gzip ?? false });
      if (out.labels) {
        await writeIdxLabels(`${options.out}/${file.labels}`, out.labels, { gzip: options.gzip ?? false });
      }
      files.push(file);
    }
  }
  const manifest = {
    command: `deno run -A tools/make_stream.ts ${Deno.args.join(" ")}`.trim(),
    source,
    n: options.n,
    seed: options.seed ?? 0,
    height: set.height,
    width: set.width,
    files,
  };
  await Deno.writeTextFile(`${options.out}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
  return files;
}

function intList(flag: string, text: string): number[] {
  return text.split(",").map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v)) throw new Error(`make_stream: --${flag} "${text}" is not an integer list`);
    return v;
  });
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        corruptions: { type: "string" },
        severity: { type: "string", default: "5" },
        n: { type: "string", default: "500" },
        out: { type: "string" },
        source: { type: "string", default: "mnist-test" },
        labels: { type: "string" },
        seed: { type: "string", default: "0" },
        gzip: { type: "boolean", default: false },
      },
    });
    if (!values.corruptions || !values.out) {
      throw new Error("make_stream: --corruptions and --out are required");
    }
    const files = await makeStreams({
      corruptions: values.corruptions.split(","),
      severities: intList("severity", values.severity),
      n: intList("n", values.n)[0],
      out: values.out,
      source: values.source,
      labels: values.labels,
      seed: intList("seed", values.seed)[0],
      gzip: values.gzip,
    });
    console.error(`make_stream: wrote ${files.length} streams to ${values.out}`);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
