/**
 * `deno task compile`: builds the single `edgetrain` executable with `deno compile`, for the host and for the
 * Linux targets edge boxes use (x86_64 laptops, aarch64 Jetsons).
 *
 *   deno task compile [--target host|x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu|all] [--out dist]
 *                     [--check] [--include PATH ...] [--dry-run]
 *
 * What is embedded: main.ts and every module it reaches — the WGSL kernels (src/backend/webgpu/_kernels_gen.ts,
 * generated from kernels/*.wgsl), the default model and demo streams (src/cli/_demo_assets.ts), and the npm
 * packages the CLI imports (fast-png, jpeg-js, protobufjs, ...; --exclude-unused-npm keeps the others out).
 * onnxruntime-web and its .wasm are not reachable from any command (they are the parity oracle of the tests),
 * so they are not embedded; `--include` adds files if that changes.
 *
 * The base runtime (`denort`) of the same Deno version is taken, in this order, from: DENORT_BIN_<ARCH>
 * (e.g. DENORT_BIN_AARCH64=/path/denort, per target), DENORT_BIN (the raw `denort` binary; `deno compile`
 * itself reads it, so it must match the target), the Deno cache ($DENO_DIR/dl/release/vX/denort-TARGET.zip),
 * or a download from dl.deno.land. Offline (as on this project's build machine) fetch
 * denort-TARGET.zip for this Deno version elsewhere and either unzip it and point DENORT_BIN at it or drop the
 * zip into that cache folder.
 *
 * Permissions baked into the binary: read, write, net, env, and sys for systemMemoryInfo (the planner's default
 * budget) and uid (no run, ffi or other sys calls); under systemd the unit's
 * sandbox narrows the filesystem further (see docs/service.md).
 */
import { parseArgs } from "node:util";

export const TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] as const;

export const COMPILE_FLAGS = [
  "--unstable-webgpu",
  "--unstable-net",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-sys=systemMemoryInfo,uid",
  "--exclude-unused-npm",
];

function hostTarget(): string {
  return Deno.build.target;
}

function denoDir(): string {
  return Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME") ?? "."}/.cache/deno`;
}

/** Where denort for `target` will come from; null when deno compile would have to download it. */
export function denortSource(
  target: string,
  env = (k: string) => Deno.env.get(k),
): { env?: string; path: string } | null {
  const arch = target.split("-")[0].toUpperCase();
  const perTarget = env(`DENORT_BIN_${arch}`);
  if (perTarget) return { env: perTarget, path: perTarget };
  const generic = env("DENORT_BIN");
  if (generic) return { env: generic, path: generic };
  const cached = `${denoDir()}/dl/release/v${Deno.version.deno}/denort-${target}.zip`;
  try {
    Deno.statSync(cached);
    return { path: cached };
  } catch {
    return null;
  }
}

export interface CompileJob {
  target: string;
  output: string;
  args: string[];
  env: Record<string, string>;
  denort: string | null;
}

export function plan(
  options: { targets: string[]; out: string; check: boolean; include: string[] },
): CompileJob[] {
  return options.targets.map((target) => {
    const src = denortSource(target);
    const output = `${options.out}/edgetrain-${target}`;
    const args = [
      "compile",
      options.check ? "--check" : "--no-check",
      ...COMPILE_FLAGS,
      ...options.include.flatMap((p) => ["--include", p]),
      "--target",
      target,
      "--output",
      output,
      "main.ts",
    ];
    const env: Record<string, string> = src?.env ? { DENORT_BIN: src.env } : {};
    return { target, output, args, env, denort: src?.path ?? null };
  });
}

if (import.meta.main) {
  const a = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string", default: "all" },
      out: { type: "string", default: "dist" },
      check: { type: "boolean", default: false },
      include: { type: "string", multiple: true, default: [] },
      "dry-run": { type: "boolean", default: false },
    },
  }).values;
  const host = hostTarget();
  const targets = a.target === "all"
    ? [...new Set([host, ...TARGETS])]
    : a.target === "host"
    ? [host]
    : [a.target!];
  for (const t of targets) {
    if (!/^[a-z0-9_]+-[a-z]+-[a-z]+(-[a-z]+)?$/.test(t)) {
      console.error(`compile: "${t}" is not a target triple (e.g. ${TARGETS.join(", ")})`);
      Deno.exit(2);
    }
  }
  await Deno.mkdir(a.out!, { recursive: true });
  let failed = 0;
  for (const job of plan({ targets, out: a.out!, check: a.check!, include: a.include! })) {
    const from = job.denort ?? `a download of denort-${job.target}.zip from dl.deno.land`;
    console.error(`compile: ${job.target} -> ${job.output} (runtime from ${from})`);
    if (a["dry-run"]) {
      console.log(["deno", ...job.args].join(" "));
      continue;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: job.args,
      env: job.env,
      stdout: "inherit",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    if (out.code === 0) continue;
    failed++;
    console.error(err.trim().split("\n").slice(-4).join("\n"));
    if (!job.denort) {
      console.error(
        `compile: no denort for ${job.target} (offline?). Get denort-${job.target}.zip for Deno ${Deno.version.deno}, ` +
          `then set DENORT_BIN_${
            job.target.split("-")[0].toUpperCase()
          }=/path/to/denort (unzipped) or put the zip in ` +
          `${denoDir()}/dl/release/v${Deno.version.deno}/`,
      );
    }
  }
  if (failed) {
    console.error(
      `compile: ${failed} of ${targets.length} targets failed; "deno task bundle" builds dist/edgetrain.js, which needs only deno`,
    );
    Deno.exit(1);
  }
}
