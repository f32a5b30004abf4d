/**
 * Shared by the service tests: small models written as ONNX, PNG encoding of ImageSet images, and a spawned
 * `edgetrain serve` whose stderr is read continuously (so the pipe never fills) and whose listening address
 * is parsed from its log.
 */
import { encode } from "fast-png";
import { CpuBackend } from "../../src/backend/cpu.ts";
import type { ImageSet } from "../../src/data/images.ts";
import { mnistSplit } from "../../src/data/mnist.ts";
import { subset } from "../../src/data/images.ts";
import { trainSupervised } from "../../src/methods/supervised.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { servePermissions } from "../../src/service/unit.ts";

export const MNIST_PRE = { pad: 2, mean: [0.1307], std: [0.3081] };

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Children still running when the test process ends (a failed assertion) are killed, never left behind. */
const running = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const c of running) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** Kills `child` when the test process ends, unless it has exited by then. */
export function reap(child: Deno.ChildProcess): void {
  running.add(child);
  child.status.then(() => running.delete(child));
}
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

/**
 * A small IRB net for 1x32x32 inputs (28x28 digits padded by 2), written to `dir/model.onnx` with its
 * preprocessing sidecar. `trainImages` > 0 trains it for one epoch on that many MNIST digits first.
 */
export async function writeSmallModel(
  dir: string,
  options: { trainImages?: number; seed?: number } = {},
): Promise<string> {
  const b = new CpuBackend();
  const net = buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 1, 2], [4, 24, 1, 2]],
    lastChannels: 48,
    seed: options.seed ?? 1,
  });
  if (options.trainImages) {
    const { train } = await mnistSplit();
    await trainSupervised(b, net, subset(train, Array.from({ length: options.trainImages }, (_, i) => i)), {
      epochs: 1,
      batch: 32,
      optimizer: { kind: "adam", lr: 0.01 },
      preprocess: MNIST_PRE,
      progress: false,
      seed: options.seed ?? 1,
    });
  }
  const path = `${dir}/model.onnx`;
  await Deno.writeFile(path, await moduleToOnnx(net, { inputShape: [1, 32, 32] }));
  await Deno.writeTextFile(`${dir}/model.json`, JSON.stringify(MNIST_PRE));
  b.dispose();
  return path;
}

/** Image `i` of a uint8 NCHW set as a grayscale or RGB PNG. */
export function pngOf(set: ImageSet, i: number): Uint8Array<ArrayBuffer> {
  const { channels: c, height: h, width: w } = set;
  const plane = h * w;
  const src = set.pixels.subarray(i * c * plane, (i + 1) * c * plane);
  const data = new Uint8Array(c * plane);
  for (let p = 0; p < plane; p++) for (let k = 0; k < c; k++) data[p * c + k] = src[k * plane + p];
  return new Uint8Array(encode({ width: w, height: h, data, channels: c, depth: 8 }));
}

export interface Served {
  url: string;
  child: Deno.ChildProcess;
  /** Every stderr line so far. */
  lines: string[];
  /** Resolves with the exit status once the process ends. */
  status: Promise<Deno.CommandStatus>;
}

export interface ServeOptions {
  env?: Record<string, string>;
  /** Run with the narrow permissions of the systemd unit (default) instead of -A. */
  narrow?: { model: string; state: string; tokenFile?: string; spool?: string; notifySocket?: string };
  /** Extra deno flags (e.g. --no-config) or another entry point than main.ts. */
  entry?: { script: string; denoFlags: string[] };
  cwd?: string;
}

/** Starts `edgetrain serve ARGS` (listen on 127.0.0.1:0) and waits until it listens. */
export async function startServe(args: string[], options: ServeOptions = {}): Promise<Served> {
  const perms = options.narrow
    ? servePermissions({ ...options.narrow, listen: "127.0.0.1" }, {
      raw: true,
      notifySocket: options.narrow.notifySocket ?? `${options.narrow.state}/.no-notify`,
    })
    : ["-A"];
  const entry = options.entry ?? { script: MAIN, denoFlags: [`--config=${CONFIG}`] };
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--unstable-net",
      "--unstable-webgpu",
      ...entry.denoFlags,
      ...perms,
      entry.script,
      "serve",
      "--listen",
      "127.0.0.1:0",
      ...args,
    ],
    env: { NO_COLOR: "1", EDGETRAIN_PROGRESS: "0", ...options.env },
    cwd: options.cwd,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  reap(child);
  const lines: string[] = [];
  const listening = Promise.withResolvers<string>();
  (async () => {
    let buf = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) listening.resolve(m[1]);
      }
    }
    if (buf) lines.push(buf);
    listening.reject(new Error(`serve exited before listening:\n${lines.join("\n")}`));
  })();
  const status = child.status;
  const url = await listening.promise;
  return { url, child, lines, status };
}

export function auth(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** GET a JSON route. */
export async function getJson(
  url: string,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const res = await fetch(url, { headers });
  const body = await res.json();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** Polls `cond` every 50 ms until it holds; throws (with serve's log) if serve exits first. */
export async function until(
  served: Served,
  cond: () => boolean | Promise<boolean>,
  what: string,
): Promise<void> {
  let exited = false;
  served.status.then(() => exited = true);
  while (!(await cond())) {
    if (exited) throw new Error(`serve exited while waiting for ${what}:\n${served.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
