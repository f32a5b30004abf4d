/**
 * The systemd unit that runs `edgetrain serve`: Type=notify with a watchdog, restart on failure, a state
 * folder that is the only writable path (ProtectSystem=strict + ReadWritePaths), and hardening. Under
 * `deno run` the Deno permissions are the narrow set serve needs (servePermissions), never -A; a compiled
 * binary carries the permissions it was compiled with (tools/compile.ts), and the sandbox is systemd's.
 */

export type Exec =
  | { kind: "binary"; path: string }
  | { kind: "deno"; deno: string; script: string; config?: string; denoDir?: string };

export interface UnitSpec {
  name: string;
  user: boolean;
  /** Absolute paths from here on. */
  model: string;
  state: string;
  listen: string;
  method: string;
  tokenFile?: string;
  spool?: string;
  /** Further serve flags, already split (e.g. ["--batch", "32", "--backend", "cpu"]). */
  serveArgs: string[];
  exec: Exec;
  watchdogSec: number;
  runAs?: string;
  description?: string;
}

/** Environment variables serve reads (sd_notify, debug switches). */
export const SERVE_ENV = [
  "NOTIFY_SOCKET",
  "WATCHDOG_USEC",
  "WATCHDOG_PID",
  "EDGETRAIN_DEBUG",
  "EDGETRAIN_PROGRESS",
  "XDG_RUNTIME_DIR",
];

/** A literal piece of a unit-file argument that must not be escaped (a systemd specifier such as %t). */
class Raw {
  constructor(readonly text: string) {}
}
type Piece = string | Raw;

/** Escapes one value for a unit file: `%` and `$` are specifier and variable markers there. */
function escapeValue(s: string): string {
  return s.replace(/%/g, "%%").replace(/\$/g, "$$$$");
}

/** One ExecStart argument from pieces; quoted when it holds spaces, quotes or backslashes. */
function execArg(...pieces: Piece[]): string {
  const text = pieces.map((p) => (p instanceof Raw ? p.text : escapeValue(p))).join("");
  return /[\s"'\\;]/.test(text) ? `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"` : text;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : "/";
}

function checkListable(paths: string[]): void {
  for (const p of paths) {
    if (p.includes(",")) {
      throw new Error(`Path "${p}" contains a comma, which Deno permission lists cannot hold`);
    }
  }
}

/**
 * Deno flags for `deno run` of serve: read the model (its folder, for external data and the sidecar), the
 * token file and the state/spool folders; write only state and spool (and systemd's notify socket); listen
 * on the one address; the sd_notify client socket; the environment variables serve reads. `notifySocket`
 * is a unit specifier by default ("%t/systemd/notify": /run/systemd/notify for system units). Values are
 * escaped for a unit file unless `raw` (flags for a shell or Deno.Command).
 */
export function servePermissions(
  spec: Pick<UnitSpec, "model" | "state" | "listen" | "tokenFile" | "spool">,
  options: { notifySocket?: string; raw?: boolean } = {},
): string[] {
  const notify = options.notifySocket ?? "%t/systemd/notify";
  const read = [
    dirOf(spec.model),
    spec.state,
    ...(spec.tokenFile ? [spec.tokenFile] : []),
    ...(spec.spool ? [spec.spool] : []),
  ];
  const write = [spec.state, ...(spec.spool ? [spec.spool] : [])];
  checkListable([...read, notify]);
  const esc = options.raw ? (s: string) => s : escapeValue;
  return [
    `--allow-read=${read.map(esc).join(",")}`,
    `--allow-write=${[...write.map(esc), notify].join(",")}`,
    `--allow-net=${esc(spec.listen)},unix:${esc(spec.state)}/.sd_notify.sock,unix:${notify}`,
    `--allow-env=${SERVE_ENV.join(",")}`,
    // The planner's default budget is half the available memory.
    "--allow-sys=systemMemoryInfo",
  ];
}

function underHome(p: string): boolean {
  return /^\/(home|root|run\/user)(\/|$)/.test(p);
}

export function renderUnit(spec: UnitSpec): string {
  const serve: string[] = [
    "serve",
    "--model",
    spec.model,
    "--method",
    spec.method,
    "--state",
    spec.state,
    "--listen",
    spec.listen,
    ...(spec.tokenFile ? ["--token-file", spec.tokenFile] : []),
    ...(spec.spool ? ["--spool", spec.spool] : []),
    ...spec.serveArgs,
  ];
  let exec: string[];
  const paths = [spec.model, spec.state, spec.tokenFile, spec.spool].filter((p): p is string => !!p);
  const env: string[] = [];
  if (spec.exec.kind === "binary") {
    exec = [execArg(spec.exec.path), ...serve.map((a) => execArg(a))];
    paths.push(spec.exec.path);
  } else {
    // Already escaped by servePermissions, except the %t specifier of the notify socket, which must stay live.
    const perms = servePermissions(spec).map((p) => new Raw(p));
    exec = [
      execArg(spec.exec.deno),
      "run",
      "--no-prompt",
      "--cached-only",
      "--unstable-net",
      "--unstable-webgpu",
      ...(spec.exec.config ? [execArg("--config=", spec.exec.config)] : ["--no-config"]),
      ...perms.map((p) => execArg(p)),
      execArg(spec.exec.script),
      ...serve.map((a) => execArg(a)),
    ];
    paths.push(spec.exec.deno, spec.exec.script);
    if (spec.exec.denoDir) {
      env.push(`Environment=${execArg("DENO_DIR=", spec.exec.denoDir)}`);
      paths.push(spec.exec.denoDir);
    }
    env.push("Environment=DENO_NO_UPDATE_CHECK=1");
  }
  const stateRoot = spec.user ? null : "/var/lib/";
  const stateDirectory = stateRoot && spec.state.startsWith(stateRoot)
    ? spec.state.slice(stateRoot.length)
    : null;
  const writable = [spec.state, ...(spec.spool ? [spec.spool] : [])].map((p) => execArg(p)).join(" ");
  const lines = [
    `# Written by "edgetrain service install"; see docs/service.md.`,
    "[Unit]",
    `Description=${spec.description ?? `edgetrain continual test-time adaptation (${spec.method})`}`,
    "Documentation=file://" +
    escapeValue(spec.exec.kind === "deno" ? dirOf(spec.exec.script) : dirOf(spec.exec.path)),
    "After=network.target",
    "StartLimitIntervalSec=300",
    "StartLimitBurst=5",
    "",
    "[Service]",
    "Type=notify",
    "NotifyAccess=main",
    `ExecStart=${exec.join(" ")}`,
    ...env,
    "Restart=on-failure",
    "RestartSec=5",
    `WatchdogSec=${spec.watchdogSec}`,
    // Long enough to answer queued requests and write the final checkpoint.
    "TimeoutStopSec=60",
    ...(spec.runAs ? [`User=${spec.runAs}`] : []),
    ...(stateDirectory ? [`StateDirectory=${escapeValue(stateDirectory)}`, "StateDirectoryMode=0700"] : []),
    // Mesa's Vulkan loader wants $XDG_RUNTIME_DIR, which system services lack (user services have it).
    ...(spec.user ? [] : [`RuntimeDirectory=${spec.name}`, `Environment=XDG_RUNTIME_DIR=%t/${spec.name}`]),
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    `ProtectHome=${paths.some(underHome) ? "read-only" : "yes"}`,
    "PrivateTmp=yes",
    `ReadWritePaths=${writable}`,
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "UMask=0077",
    "",
    "[Install]",
    `WantedBy=${spec.user ? "default.target" : "multi-user.target"}`,
    "",
  ];
  return lines.join("\n");
}

/** How to enable the written unit. */
export function enableHint(name: string, user: boolean, path: string): string {
  const ctl = user ? "systemctl --user" : "sudo systemctl";
  const journal = user ? "journalctl --user" : "journalctl";
  return [
    `Wrote ${path}. Enable and start it with:`,
    `  ${ctl} daemon-reload`,
    `  ${ctl} enable --now ${name}.service`,
    `Check it with:`,
    `  ${ctl.replace("sudo ", "")} status ${name}.service`,
    `  ${journal} -u ${name}.service -f`,
    ...(user ? [`To keep it running after you log out: loginctl enable-linger "$USER"`] : []),
  ].join("\n");
}
