/**
 * systemd's sd_notify protocol (sd_notify(3)): newline-separated `KEY=VALUE` assignments in one datagram sent
 * to the unix datagram socket named by $NOTIFY_SOCKET — READY=1 once serving, WATCHDOG=1 at least every
 * WatchdogSec (systemd passes it as $WATCHDOG_USEC, for the process in $WATCHDOG_PID), STATUS=... for
 * `systemctl status`, STOPPING=1 on shutdown.
 *
 * Deno offers no unbound datagram client, and node:dgram has no unix sockets; `Deno.listenDatagram` with
 * transport "unixpacket" (behind --unstable-net) does create an AF_UNIX SOCK_DGRAM socket, but bound to a
 * path. So this binds a socket file of our own (`.sd_notify.sock` in the state folder, removed on close) and
 * sends from it. Deno's permissions for this: --allow-net=unix:<that file>,unix:<$NOTIFY_SOCKET> and
 * --allow-write=<that file and $NOTIFY_SOCKET>. Abstract-namespace sockets ("@name") cannot be addressed by Deno (EINVAL): they are
 * reported once and notifications are off. Nothing here throws: a service must run without systemd too.
 */

const MAX_SUN_PATH = 107;

export interface NotifyOptions {
  /** Folder for our own bound socket file (the state folder). */
  socketDir: string;
  /** Environment lookup (tests inject one); defaults to Deno.env, tolerating missing --allow-env. */
  env?: (name: string) => string | undefined;
  warn?: (message: string) => void;
}

function envGetter(): (name: string) => string | undefined {
  return (name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  };
}

/** Parses one datagram into its assignments (the receiver's view; used by tests and for symmetry). */
export function parseNotify(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** Encodes assignments; newlines inside values would start a new assignment, so they become spaces. */
export function formatNotify(fields: Record<string, string | number>): string {
  return Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\n/g, " ")}`).join("\n");
}

/**
 * The ping period: half of $WATCHDOG_USEC (sd_watchdog_enabled(3) advises pinging well within it), or null
 * when there is no watchdog or it is meant for another process ($WATCHDOG_PID).
 */
export function watchdogInterval(env: (name: string) => string | undefined, pid = Deno.pid): number | null {
  const usec = Number(env("WATCHDOG_USEC"));
  const target = env("WATCHDOG_PID");
  const mine = target === undefined || target === "" || Number(target) === pid;
  return Number.isFinite(usec) && usec > 0 && mine ? usec / 2000 : null;
}

export class SdNotify {
  #conn: Deno.DatagramConn;
  #target: string;
  #own: string;
  #warn: (m: string) => void;
  #failed = false;
  /** Half of WatchdogSec in ms (systemd's advice), or null when no watchdog applies to this process. */
  readonly watchdogMs: number | null;

  private constructor(
    conn: Deno.DatagramConn,
    target: string,
    own: string,
    watchdogMs: number | null,
    warn: (m: string) => void,
  ) {
    this.#conn = conn;
    this.#target = target;
    this.#own = own;
    this.watchdogMs = watchdogMs;
    this.#warn = warn;
  }

  /** A notifier for $NOTIFY_SOCKET, or null when there is none (or it cannot be used; warned once). */
  static async open(options: NotifyOptions): Promise<SdNotify | null> {
    const env = options.env ?? envGetter();
    const warn = options.warn ?? ((m: string) => console.error(`edgetrain: warning: ${m}`));
    const target = env("NOTIFY_SOCKET");
    if (!target) return null;
    if (target.startsWith("@")) {
      warn(
        `sd_notify: NOTIFY_SOCKET "${target}" is an abstract socket, which Deno cannot address; notifications are off`,
      );
      return null;
    }
    const listen = (Deno as unknown as { listenDatagram?: typeof Deno.listenDatagram }).listenDatagram;
    if (typeof listen !== "function") {
      warn("sd_notify: Deno.listenDatagram is unavailable (run with --unstable-net); notifications are off");
      return null;
    }
    const own = `${options.socketDir.replace(/\/+$/, "")}/.sd_notify.sock`;
    if (new TextEncoder().encode(own).length > MAX_SUN_PATH) {
      warn(`sd_notify: socket path "${own}" is longer than ${MAX_SUN_PATH} bytes; notifications are off`);
      return null;
    }
    await Deno.remove(own).catch(() => {});
    let conn: Deno.DatagramConn;
    try {
      conn = listen({ transport: "unixpacket", path: own });
    } catch (e) {
      warn(`sd_notify: cannot bind "${own}": ${(e as Error).message}; notifications are off`);
      return null;
    }
    return new SdNotify(conn, target, own, watchdogInterval(env), warn);
  }

  /** Sends one datagram; false (warned once) when systemd's socket refuses it. */
  async send(fields: Record<string, string | number>): Promise<boolean> {
    try {
      await this.#conn.send(new TextEncoder().encode(formatNotify(fields)), {
        transport: "unixpacket",
        path: this.#target,
      });
      return true;
    } catch (e) {
      if (!this.#failed) this.#warn(`sd_notify: cannot send to "${this.#target}": ${(e as Error).message}`);
      this.#failed = true;
      return false;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    try {
      Deno.removeSync(this.#own);
    } catch {
      // gone already
    }
  }
}
