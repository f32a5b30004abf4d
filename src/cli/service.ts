/**
 * `edgetrain service install --model M.onnx --state DIR [--user] [options]`: writes the systemd unit that
 * runs `edgetrain serve` (src/service/unit.ts) and prints how to enable it.
 */
import { resolve } from "node:path";
import { parseFlags, parseNumber } from "./args.ts";
import { PREPROCESS_FLAGS } from "./common.ts";
import { UsageError } from "./errors.ts";
import { enableHint, type Exec, renderUnit } from "../service/unit.ts";
import { parseListen } from "../service/server.ts";

export const HELP = `edgetrain service install --model M.onnx --state DIR [--user] [options]

  --user                 a user unit (~/.config/systemd/user) instead of a system unit (/etc/systemd/system)
  --name NAME            unit name (default edgetrain)
  --method M             serve --method (default tent)
  --listen HOST:PORT     serve --listen (default 127.0.0.1:8417)
  --token-file F         serve --token-file;  --spool DIR   serve --spool
  --batch N, --backend B, --flush-ms T, --checkpoint-every N, --mean/--std/--pad/--size/--channels
                         passed on to serve
  --binary PATH          run a compiled edgetrain (deno task compile) instead of deno run
  --deno PATH --script S run S (main.ts or dist/edgetrain.js) with this deno (defaults: this deno, this edgetrain)
  --watchdog-sec N       WatchdogSec (default 30)
  --run-as USER          User= for system units
  --unit-dir DIR         write the unit here instead of the systemd folder
  --print                print the unit on stdout and write nothing`;

const PASS_ON = [
  "batch",
  "backend",
  "flush-ms",
  "checkpoint-every",
  "mean",
  "std",
  "pad",
  "size",
  "channels",
] as const;

/** What runs edgetrain now: a compiled binary, the bundle, or main.ts with its deno.json. */
async function currentExec(flags: { binary?: string; deno?: string; script?: string }): Promise<Exec> {
  if (flags.binary) return { kind: "binary", path: resolve(flags.binary) };
  const exe = Deno.execPath();
  const compiled = !/\/deno$/.test(exe) && !flags.deno && !flags.script;
  if (compiled) return { kind: "binary", path: exe };
  let script = flags.script ? resolve(flags.script) : "";
  if (!script) {
    const here = new URL(import.meta.url);
    if (here.protocol !== "file:") {
      throw new UsageError("Cannot tell where edgetrain is installed: give --script or --binary");
    }
    script = here.pathname.endsWith("/src/cli/service.ts")
      ? new URL("../../main.ts", here).pathname
      : here.pathname;
  }
  let config: string | undefined;
  if (script.endsWith("/main.ts")) {
    const candidate = script.replace(/main\.ts$/, "deno.json");
    if (await Deno.stat(candidate).then(() => true, () => false)) config = candidate;
  }
  const denoDir = Deno.env.get("DENO_DIR") ??
    (Deno.env.get("HOME") ? `${Deno.env.get("HOME")}/.cache/deno` : undefined);
  return { kind: "deno", deno: flags.deno ? resolve(flags.deno) : exe, script, config, denoDir };
}

export default async function service(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === "--help" || sub === "-h") {
    console.log(HELP);
    return sub ? 0 : 2;
  }
  if (sub !== "install") throw new UsageError(`Unknown service command "${sub}" (known: install)`);
  const flags = parseFlags("service install", rest, {
    model: { type: "string" },
    state: { type: "string" },
    user: { type: "boolean", default: false },
    name: { type: "string", default: "edgetrain" },
    method: { type: "string", default: "tent" },
    listen: { type: "string", default: "127.0.0.1:8417" },
    "token-file": { type: "string" },
    spool: { type: "string" },
    batch: { type: "string" },
    backend: { type: "string" },
    "flush-ms": { type: "string" },
    "checkpoint-every": { type: "string" },
    binary: { type: "string" },
    deno: { type: "string" },
    script: { type: "string" },
    "watchdog-sec": { type: "string", default: "30" },
    "run-as": { type: "string" },
    "unit-dir": { type: "string" },
    print: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...PREPROCESS_FLAGS,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.model) throw new UsageError("--model is required (the ONNX file the service adapts)");
  if (!flags.state) throw new UsageError("--state is required (the folder for checkpoints)");
  if (!/^[A-Za-z0-9_.@-]+$/.test(flags.name!)) {
    throw new UsageError(`--name "${flags.name}" is not a valid unit name`);
  }
  try {
    parseListen(flags.listen!);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (flags.user && flags["run-as"]) throw new UsageError("--run-as applies to system units, not --user");
  const model = resolve(flags.model);
  if (!(await Deno.stat(model).then((s) => s.isFile, () => false))) {
    throw new Error(`Model "${model}" does not exist`);
  }
  for (
    const [flag, p] of [["model", flags.model], ["state", flags.state], ["spool", flags.spool], [
      "token-file",
      flags["token-file"],
    ]]
  ) {
    if (p && /^\/(tmp|var\/tmp)(\/|$)/.test(resolve(p))) {
      console.error(
        `edgetrain service: warning: --${flag} "${
          resolve(p)
        }" is under a temporary folder, which PrivateTmp=yes hides from the service`,
      );
    }
  }
  const serveArgs: string[] = [];
  for (const k of PASS_ON) {
    const v = (flags as Record<string, unknown>)[k];
    if (typeof v === "string") serveArgs.push(`--${k}`, v);
  }
  const unit = renderUnit({
    name: flags.name!,
    user: flags.user!,
    model,
    state: resolve(flags.state),
    listen: flags.listen!,
    method: flags.method!,
    tokenFile: flags["token-file"] ? resolve(flags["token-file"]) : undefined,
    spool: flags.spool ? resolve(flags.spool) : undefined,
    serveArgs,
    exec: await currentExec(flags),
    watchdogSec: parseNumber("watchdog-sec", flags["watchdog-sec"], { integer: true, min: 1 })!,
    runAs: flags["run-as"],
  });
  if (flags.print) {
    console.log(unit);
    return 0;
  }
  const home = Deno.env.get("HOME");
  const dir = flags["unit-dir"] ??
    (flags.user
      ? `${Deno.env.get("XDG_CONFIG_HOME") ?? (home ? `${home}/.config` : "")}/systemd/user`
      : "/etc/systemd/system");
  if (dir.startsWith("/systemd")) {
    throw new UsageError("Cannot find the user's config folder: set HOME or give --unit-dir");
  }
  await Deno.mkdir(dir, { recursive: true });
  // ReadWritePaths= of a missing folder makes the unit fail to start, so the folders exist from now on.
  await Deno.mkdir(resolve(flags.state), { recursive: true, mode: 0o700 });
  if (flags.spool) await Deno.mkdir(resolve(flags.spool), { recursive: true });
  const path = `${dir}/${flags.name}.service`;
  await Deno.writeTextFile(path, unit);
  console.log(enableHint(flags.name!, flags.user!, path));
  return 0;
}
