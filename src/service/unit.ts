/**
 * The systemd unit that runs `edgetrain serve`: Type=notify with a watchdog, restart on failure, a state
 * folder that is the only writable path (ProtectSystem=strict + ReadWritePaths), and least privilege: a
 * dynamic user (or `User=`), no capabilities, the @system-service system calls, IPv4/IPv6/unix sockets only
 * (loopback only when it listens on loopback), a memory cap, no devices for the CPU backend (the render
 * groups for WebGPU). `systemd-analyze security --offline=yes` scores it 0.9 to 1.6 (tests/e2e/
 * sd_notify_test.ts). Under `deno run` the Deno permissions are the narrow set serve needs
 * (servePermissions), never -A; a compiled binary carries the permissions it was compiled with
 * (tools/compile.ts), and the sandbox is systemd's.
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
  /** System units: User=; without it, DynamicUser=yes (the state must then live under /var/lib). */
  runAs?: string;
  /** serve --backend: "cpu" gets PrivateDevices=yes and PrivateUsers=yes (no GPU to reach). */
  backend?: string;
  /** MemoryMax= value (bytes, or "75%"). */
  memoryMax: string;
  /** Existing groups that own the GPU's device nodes (SupplementaryGroups= for WebGPU). */
  gpuGroups?: string[];
  description?: string;
}

/** Where systemd puts credentials (LoadCredential=): the token file comes in as %d/token. */
const TOKEN_CREDENTIAL = "%d/token";

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
  options: { notifySocket?: string; raw?: boolean; tokenCredential?: boolean } = {},
): string[] {
  const notify = options.notifySocket ?? "%t/systemd/notify";
  const read = [dirOf(spec.model), spec.state, ...(spec.spool ? [spec.spool] : [])];
  const write = [spec.state, ...(spec.spool ? [spec.spool] : [])];
  checkListable([...read, notify, ...(spec.tokenFile ? [spec.tokenFile] : [])]);
  const esc = options.raw ? (s: string) => s : escapeValue;
  const token = spec.tokenFile ? [options.tokenCredential ? TOKEN_CREDENTIAL : esc(spec.tokenFile)] : [];
  return [
    `--allow-read=${[...read.map(esc), ...token].join(",")}`,
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
  // A system service reads the token as a credential: systemd copies it, readable by the service's user
  // only, whatever that user is (a dynamic one cannot read a root-owned 0600 file).
  const credential = !spec.user && spec.tokenFile !== undefined;
  const serve: Piece[] = [
    "serve",
    "--model",
    spec.model,
    "--method",
    spec.method,
    "--state",
    spec.state,
    "--listen",
    spec.listen,
    ...(spec.tokenFile ? ["--token-file", credential ? new Raw(TOKEN_CREDENTIAL) : spec.tokenFile] : []),
    ...(spec.spool ? ["--spool", spec.spool] : []),
    ...(spec.backend ? ["--backend", spec.backend] : []),
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
    const perms = servePermissions(spec, { tokenCredential: credential }).map((p) => new Raw(p));
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
  // A StateDirectory= is writable (and created, owned by the service's user) without ReadWritePaths=.
  const writable = [...(stateDirectory ? [] : [spec.state]), ...(spec.spool ? [spec.spool] : [])]
    .map((p) => execArg(p)).join(" ");
  const cpu = spec.backend === "cpu";
  const loopback = /^(127\.|localhost:|\[::1\]:)/.test(spec.listen);
  const identity = spec.user ? [] : spec.runAs ? [`User=${spec.runAs}`] : ["DynamicUser=yes"];
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
    // Long enough to answer queued requests and write the final checkpoint; slow clients are dropped after it.
    "TimeoutStopSec=60",
    ...identity,
    ...(credential ? [`LoadCredential=token:${escapeValue(spec.tokenFile!)}`] : []),
    ...(stateDirectory ? [`StateDirectory=${escapeValue(stateDirectory)}`, "StateDirectoryMode=0700"] : []),
    // Mesa's Vulkan loader wants $XDG_RUNTIME_DIR, which system services lack (user services have it).
    ...(spec.user ? [] : [`RuntimeDirectory=${spec.name}`, `Environment=XDG_RUNTIME_DIR=%t/${spec.name}`]),
    `MemoryMax=${spec.memoryMax}`,
    "NoNewPrivileges=yes",
    ...(spec.user ? [] : ["CapabilityBoundingSet=", "AmbientCapabilities="]),
    "ProtectSystem=strict",
    `ProtectHome=${paths.some(underHome) ? "read-only" : "yes"}`,
    "PrivateTmp=yes",
    // WebGPU opens /dev/dri (or the NVIDIA nodes): only the CPU backend can do without devices.
    ...(cpu ? ["PrivateDevices=yes"] : []),
    ...(cpu && !spec.user ? ["PrivateUsers=yes"] : []),
    ...(!cpu && !spec.user && spec.gpuGroups?.length
      ? [`SupplementaryGroups=${spec.gpuGroups.join(" ")}`]
      : []),
    ...(spec.user ? [] : ["PrivateMounts=yes"]),
    ...(writable ? [`ReadWritePaths=${writable}`] : []),
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    // A refused call fails with EPERM instead of killing the process: V8 or a driver probing is not an attack.
    "SystemCallErrorNumber=EPERM",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ...(loopback ? ["IPAddressDeny=any", "IPAddressAllow=localhost"] : []),
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
