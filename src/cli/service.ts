/**
 * `edgetrain service install --model M.onnx --state DIR [--user] [options]`: writes the systemd unit that
 * runs `edgetrain serve` (src/service/unit.ts) and prints how to enable it.
 */
import { resolve } from "node:path";
import { parseBytes, parseFlags, parseNumber } from "./args.ts";
import { PREPROCESS_FLAGS } from "./common.ts";
import { UsageError } from "./errors.ts";
import { loadProfile } from "../devices/profile.ts";
import { enableHint, type Exec, renderUnit } from "../service/unit.ts";
import { parseListen } from "../service/server.ts";

export const HELP = `edgetrain service install --model M.onnx --state DIR [--user] [options]

  --user                 a user unit (~/.config/systemd/user) instead of a system unit (/etc/systemd/system)
  --name NAME            unit name (default edgetrain)
  --method M             serve --method (default tent)
  --listen HOST:PORT     serve --listen (default 127.0.0.1:8417)
  --token-file F         serve --token-file;  --spool DIR   serve --spool
  --batch N, --backend B, --flush-ms T, --checkpoint-every N, --mean/--std/--pad/--size/--channels
                         passed on to serve (--backend cpu also takes the devices away: PrivateDevices=yes)
  --device NAME          serve --device, and MemoryMax= from the profile's usable memory
  --memory-max B         MemoryMax= (default: the profile's usable memory, else 75% of the machine's)
  --binary PATH          run an installed, compiled edgetrain (deno task compile) instead of deno run
  --deno PATH --script S run S (main.ts or dist/edgetrain.js) with this deno (defaults: this deno, this edgetrain)
  --watchdog-sec N       WatchdogSec (default 30)
  --run-as USER          User= for system units (default: DynamicUser=yes, which needs the state under
                         /var/lib and no spool; give a user for a spool shared with its writer)
  --unit-dir DIR         write the unit here instead of the systemd folder
  --print                print the unit on stdout and write nothing`;

const PASS_ON = [
  "batch",
  "device",
  "threads",
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

/** Package-manager caches: a binary there can be cleaned or replaced under a running service. */
const CACHE = /\/(\.npm|_npx|\.cache|\.pnpm-store|\.yarn|\.bun\/install\/cache)\//;
const HOME = /^\/(home|root|run\/user)(\/|$)/;
/** sun_path holds 108 bytes with the terminating NUL (sd_notify.ts binds STATE/.sd_notify.sock). */
const MAX_SUN_PATH = 107;

/** What the unit's ExecStart runs must be an installed file, not something a cache clean-up removes. */
function checkExec(exec: Exec, dynamicUser: boolean): void {
  const files = exec.kind === "binary"
    ? [["--binary", exec.path]]
    : [["--deno", exec.deno], ["--script", exec.script]];
  for (const [flag, path] of files) {
    if (CACHE.test(path)) {
      throw new UsageError(
        `${flag} "${path}" is in a package-manager cache, which can be cleaned or replaced under the running ` +
          `service: install edgetrain first (deno task compile, copy dist/edgetrain-<target> to ` +
          `/usr/local/bin/edgetrain, then --binary /usr/local/bin/edgetrain)`,
      );
    }
    if (dynamicUser && HOME.test(path)) {
      throw new UsageError(
        `${flag} "${path}" is under a home folder, which the unit's DynamicUser=yes cannot read: install it ` +
          `elsewhere (e.g. /usr/local/bin) or give --run-as USER`,
      );
    }
  }
  if (exec.kind === "deno" && exec.denoDir && !exec.script.endsWith(".js")) {
    if (dynamicUser && HOME.test(exec.denoDir)) {
      throw new UsageError(
        `DENO_DIR "${exec.denoDir}" (the npm packages main.ts needs) is under a home folder, which ` +
          `DynamicUser=yes cannot read: use --binary (deno task compile) or --script dist/edgetrain.js ` +
          `(deno task bundle, no DENO_DIR needed), or give --run-as USER`,
      );
    }
  }
}

/** The uid and gid of a user from /etc/passwd, or null. */
async function lookupUser(name: string): Promise<{ uid: number; gid: number } | null> {
  const passwd = await Deno.readTextFile("/etc/passwd").catch(() => "");
  const f = passwd.split("\n").map((l) => l.split(":")).find((f) => f[0] === name);
  return f ? { uid: Number(f[2]), gid: Number(f[3]) } : null;
}

/** The groups that own GPU device nodes here (Debian/Ubuntu: video, render), for SupplementaryGroups=. */
async function gpuGroups(): Promise<string[]> {
  const group = await Deno.readTextFile("/etc/group").catch(() => "");
  const names = new Set(group.split("\n").map((l) => l.split(":")[0]));
  return ["video", "render"].filter((g) => names.has(g));
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
    threads: { type: "string" },
    "flush-ms": { type: "string" },
    "checkpoint-every": { type: "string" },
    device: { type: "string" },
    "memory-max": { type: "string" },
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
  const state = resolve(flags.state);
  const socket = new TextEncoder().encode(`${state}/.sd_notify.sock`).length;
  if (socket > MAX_SUN_PATH) {
    throw new UsageError(
      `--state "${state}" is too long: the sd_notify socket "${state}/.sd_notify.sock" would be ${socket} ` +
        `bytes, longer than ${MAX_SUN_PATH} bytes (sun_path): systemd would never hear READY=1 (use a shorter path)`,
    );
  }
  const dynamicUser = !flags.user && !flags["run-as"];
  if (dynamicUser && !state.startsWith("/var/lib/")) {
    throw new UsageError(
      `--state "${state}" is outside /var/lib: the unit's DynamicUser=yes can only own a state folder under ` +
        `/var/lib (StateDirectory=); move it there or give --run-as USER`,
    );
  }
  if (dynamicUser && flags.spool) {
    throw new UsageError(
      `--spool needs --run-as USER: a DynamicUser=yes service cannot share a folder with the spool's writer`,
    );
  }
  if (dynamicUser && HOME.test(model)) {
    throw new UsageError(
      `--model "${model}" is under a home folder, which DynamicUser=yes cannot read: copy it to e.g. /opt/edgetrain or give --run-as USER`,
    );
  }
  if (dynamicUser && (((await Deno.stat(model)).mode ?? 0o644) & 0o004) === 0) {
    console.error(
      `edgetrain service: warning: --model "${model}" is not readable by other users; DynamicUser=yes needs chmod o+r`,
    );
  }
  const exec = await currentExec(flags);
  checkExec(exec, dynamicUser);
  let memoryMax = "75%";
  if (flags["memory-max"]) memoryMax = String(parseBytes("memory-max", flags["memory-max"]));
  else if (flags.device) memoryMax = String((await loadProfile(flags.device)).memory.usable_bytes);
  const unit = renderUnit({
    name: flags.name!,
    user: flags.user!,
    model,
    state,
    listen: flags.listen!,
    method: flags.method!,
    tokenFile: flags["token-file"] ? resolve(flags["token-file"]) : undefined,
    spool: flags.spool ? resolve(flags.spool) : undefined,
    serveArgs,
    exec,
    watchdogSec: parseNumber("watchdog-sec", flags["watchdog-sec"], { integer: true, min: 1 })!,
    runAs: flags["run-as"],
    backend: flags.backend,
    memoryMax,
    gpuGroups: await gpuGroups(),
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
  // ReadWritePaths= of a missing folder makes the unit fail to start, so the folders exist from now on; a
  // dynamic user's StateDirectory= is made (and owned) by systemd itself.
  const owner = flags["run-as"] ? await lookupUser(flags["run-as"]) : null;
  if (flags["run-as"] && !owner) {
    console.error(
      `edgetrain service: warning: user "${flags["run-as"]}" does not exist (yet): create it before starting`,
    );
  }
  for (const folder of [dynamicUser ? null : state, flags.spool ? resolve(flags.spool) : null]) {
    if (!folder) continue;
    await Deno.mkdir(folder, { recursive: true, mode: folder === state ? 0o700 : 0o770 });
    if (owner) await Deno.chown(folder, owner.uid, owner.gid).catch(() => {});
  }
  const path = `${dir}/${flags.name}.service`;
  await Deno.writeTextFile(path, unit);
  console.log(enableHint(flags.name!, flags.user!, path));
  return 0;
}
