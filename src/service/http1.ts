/**
 * A small HTTP/1.1 server over `Deno.listen`, used by the service instead of `Deno.serve` because it needs
 * three things `Deno.serve` does not offer: a deadline for a request's head and one for its body (slow
 * clients, "slowloris", otherwise hold a connection for ever), a cap on open connections, and a shutdown
 * that can drop the connections still sending once the final checkpoint is written (Deno.serve's
 * shutdown() waits for them; its abort signal cannot be ordered after the checkpoint per connection).
 *
 * It speaks what the API needs and refuses the rest: origin-form targets, `Content-Length` or `chunked`
 * request bodies (both at once is refused: request smuggling), keep-alive, `Expect: 100-continue`.
 * Responses are buffered and sent with `Content-Length` (the API's replies are small). The wire format is in
 * http1_wire.ts.
 */
import {
  ConnReader,
  enc,
  type Framing,
  framing,
  type Head,
  headBytes,
  HttpError,
  parseHead,
  RequestTimeoutError,
  writeAll,
} from "./http1_wire.ts";

export { HttpError, RequestTimeoutError } from "./http1_wire.ts";

export interface HttpLimits {
  /** The request line and headers must arrive within this many ms of the wait for them starting. */
  headerTimeoutMs: number;
  /** The body must arrive within this many ms of the head. */
  bodyTimeoutMs: number;
  /** Largest request head (request line and headers). */
  maxHeaderBytes: number;
  /** Open connections; one more is answered 503 and closed at once. */
  maxConnections: number;
}

export const DEFAULT_LIMITS: HttpLimits = {
  headerTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  maxHeaderBytes: 16 * 1024,
  maxConnections: 64,
};

/** How long and how much of a refused body is read and dropped before the connection is closed. */
const LINGER_MS = 2000;
const LINGER_BYTES = 16 * 2 ** 20;

/** Connection state, for drain() (idle ones close at once) and for reporting. */
type State = "idle" | "body" | "handler" | "write";

interface Connection {
  conn: Deno.Conn;
  reader: ConnReader;
  state: State;
  closed: boolean;
}

export interface HttpServerOptions extends Partial<HttpLimits> {
  hostname: string;
  port: number;
  /** A handler that throws: logged here, answered 500. */
  onError?: (error: unknown) => void;
}

export type HttpHandler = (req: Request) => Promise<Response>;

export class HttpServer {
  readonly addr: Deno.NetAddr;
  readonly limits: HttpLimits;
  /** Connections refused because the cap was reached, since start. */
  refused = 0;
  #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  #conns = new Set<Connection>();
  #refusing = 0;
  #draining = false;
  #accepting: Promise<void>;
  #handler: HttpHandler;
  #onError: (e: unknown) => void;

  constructor(options: HttpServerOptions, handler: HttpHandler) {
    this.limits = {
      headerTimeoutMs: options.headerTimeoutMs ?? DEFAULT_LIMITS.headerTimeoutMs,
      bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_LIMITS.bodyTimeoutMs,
      maxHeaderBytes: options.maxHeaderBytes ?? DEFAULT_LIMITS.maxHeaderBytes,
      maxConnections: options.maxConnections ?? DEFAULT_LIMITS.maxConnections,
    };
    this.#handler = handler;
    this.#onError = options.onError ?? ((e) => console.error(`edgetrain: http: ${(e as Error).message}`));
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    this.addr = this.#listener.addr;
    this.#accepting = this.#accept();
  }

  /** Open connections. */
  get connections(): number {
    return this.#conns.size;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#draining || e instanceof Deno.errors.BadResource) return;
        this.#onError(e); // e.g. EMFILE: wait a little rather than spin
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#conns.size >= this.limits.maxConnections) {
        this.refused++;
        // Clients (hyper's among them) take a reply sent before their request as a broken connection, so the
        // head is read first, briefly; beyond a few such refusals in flight, connections are just closed.
        if (this.#refusing >= REFUSING_MAX) closeQuietly(conn);
        else {
          this.#refusing++;
          refuse(
            conn,
            this.limits.maxHeaderBytes,
            `Too many connections (the limit is ${this.limits.maxConnections})`,
          )
            .finally(() => this.#refusing--);
        }
        continue;
      }
      const c: Connection = { conn, reader: new ConnReader(conn), state: "idle", closed: false };
      this.#conns.add(c);
      this.#serve(c).finally(() => {
        closeConn(c);
        this.#conns.delete(c);
      });
    }
  }

  async #serve(c: Connection): Promise<void> {
    const r = c.reader;
    const { headerTimeoutMs, bodyTimeoutMs, maxHeaderBytes } = this.limits;
    for (;;) {
      c.state = "idle";
      let head: Head;
      let bytes: Uint8Array | null;
      try {
        bytes = await r.head(Date.now() + headerTimeoutMs, maxHeaderBytes);
        if (bytes === null) return;
        head = parseHead(bytes);
      } catch (e) {
        // A keep-alive connection that stayed silent is closed without a word; a slow one gets 408.
        if (e instanceof RequestTimeoutError && r.buf.length === 0) return;
        const status = e instanceof HttpError ? e.status : 400;
        await send(c, status, { error: (e as Error).message }, false, false);
        return;
      }
      c.state = "body";
      let f: Framing;
      try {
        f = framing(head.headers);
      } catch (e) {
        await send(c, (e as HttpError).status, { error: (e as Error).message }, false, false);
        return;
      }
      const body = new BodyReader(r, f, Date.now() + bodyTimeoutMs, head.headers, c);
      let res: Response;
      try {
        const req = new Request(`http://${hostOf(this.addr)}${head.target}`, {
          method: head.method,
          headers: head.headers,
          body: f.kind === "none" || head.method === "GET" || head.method === "HEAD" ? null : body.stream(),
        });
        // A body still to come keeps the connection in "body" (close() drops it) until it has arrived.
        if (body.complete) c.state = "handler";
        res = await this.#handler(req);
      } catch (e) {
        this.#onError(e);
        res = Response.json({ error: "Internal error" }, { status: 500 });
      }
      if (c.closed) return;
      const keep = !head.http10 && !this.#draining && body.complete &&
        !/\bclose\b/i.test(head.headers.get("connection") ?? "");
      c.state = "write";
      if (!(await writeResponse(c, res, head.method === "HEAD", keep))) return;
      if (!body.complete && res.status !== 408) {
        // The client may still be sending the body that was refused (413, 401): closing now would reset the
        // connection before it reads the reply, so read and drop what follows, briefly and boundedly.
        c.state = "body";
        await r.discard(Date.now() + LINGER_MS, LINGER_BYTES).catch(() => {});
      }
      if (!keep) return;
    }
  }

  /**
   * Stops accepting connections and closes the idle ones; requests still in progress may finish, and their
   * connections close after the reply.
   */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    for (const c of this.#conns) if (isIdle(c)) closeConn(c);
  }

  /**
   * Drains, then closes every connection still open: clients still sending a head or a body, and replies
   * not yet written after `graceMs`.
   */
  async close(graceMs = 1000): Promise<void> {
    this.drain();
    for (const c of this.#conns) if (c.state === "idle" || c.state === "body") closeConn(c);
    const deadline = Date.now() + graceMs;
    while (this.#conns.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.#conns) closeConn(c);
    await this.#accepting;
  }
}

/** Streams a request body, framed by Content-Length or chunked, within one deadline. */
class BodyReader {
  complete: boolean;
  #started = false;
  constructor(
    readonly r: ConnReader,
    readonly f: Framing,
    readonly deadline: number,
    readonly headers: Headers,
    readonly c: Connection,
  ) {
    this.complete = f.kind === "none";
  }

  stream(): ReadableStream<Uint8Array> {
    let left = this.f.kind === "length" ? this.f.length : 0;
    let chunkLeft = 0;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          if (!this.#started) {
            this.#started = true;
            if (/^100-continue$/i.test(this.headers.get("expect") ?? "")) {
              await writeAll(this.c.conn, enc.encode("HTTP/1.1 100 Continue\r\n\r\n"));
            }
          }
          if (this.f.kind === "length") {
            if (this.r.buf.length === 0 && !(await this.r.fill(this.deadline))) {
              throw new HttpError(400, "The connection closed in the body");
            }
            const part = this.r.take(Math.min(left, this.r.buf.length));
            left -= part.length;
            controller.enqueue(part.slice());
            if (left === 0) this.#finish(controller);
            return;
          }
          if (chunkLeft === 0) {
            const size = (await this.r.line(this.deadline, 1024)).split(";")[0].trim();
            if (!/^[0-9a-fA-F]{1,12}$/.test(size)) throw new HttpError(400, `Bad chunk size "${size}"`);
            chunkLeft = parseInt(size, 16);
            if (chunkLeft === 0) {
              // Trailers, then the empty line that ends the message.
              for (let total = 0; (await this.r.line(this.deadline, 8192)) !== "";) {
                if ((total += 1) > 100) throw new HttpError(400, "Too many trailer lines");
              }
              this.#finish(controller);
              return;
            }
          }
          if (this.r.buf.length === 0 && !(await this.r.fill(this.deadline))) {
            throw new HttpError(400, "The connection closed in a chunked body");
          }
          const part = this.r.take(Math.min(chunkLeft, this.r.buf.length));
          chunkLeft -= part.length;
          controller.enqueue(part.slice());
          if (chunkLeft === 0 && (await this.r.line(this.deadline, 2)) !== "") {
            throw new HttpError(400, "A chunk does not end in CRLF");
          }
        } catch (e) {
          controller.error(e);
        }
      },
      cancel: () => {},
    });
  }

  #finish(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.complete = true;
    this.c.state = "handler";
    controller.close();
  }
}

function hostOf(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/** Waiting for a request that has not started (keep-alive between requests, or a fresh connection). */
function isIdle(c: Connection): boolean {
  return c.state === "idle" && c.reader.buf.length === 0;
}

function closeConn(c: Connection): void {
  if (c.closed) return;
  c.closed = true;
  try {
    c.conn.close();
  } catch {
    // already closed by the peer
  }
}

/** Writes a buffered response; false when the connection broke. */
async function writeResponse(c: Connection, res: Response, isHead: boolean, keep: boolean): Promise<boolean> {
  try {
    const body = new Uint8Array(await res.arrayBuffer());
    const head = headBytes(res.status, res.headers, body.length, keep);
    const out = new Uint8Array(head.length + (isHead ? 0 : body.length));
    out.set(head, 0);
    if (!isHead) out.set(body, head.length);
    await writeAll(c.conn, out);
    return true;
  } catch {
    return false;
  }
}

/** A JSON error reply, then (unless `keep`) the connection is closed by the caller. */
async function send(
  c: Connection,
  status: number,
  body: unknown,
  isHead: boolean,
  keep: boolean,
): Promise<void> {
  if (c.closed) return;
  await writeResponse(c, Response.json(body, { status }), isHead, keep);
}

/** Refusals (503 over the cap) in flight at most; more connections are closed without a reply. */
const REFUSING_MAX = 16;

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

/** Answers a connection over the cap with 503 once its head has arrived (or after 1 s), then closes it. */
async function refuse(conn: Deno.Conn, maxHeaderBytes: number, error: string): Promise<void> {
  const body = enc.encode(JSON.stringify({ error }) + "\n");
  const headers = new Headers({ "content-type": "application/json; charset=utf-8", "retry-after": "1" });
  const head = headBytes(503, headers, body.length, false);
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  try {
    await new ConnReader(conn).head(Date.now() + 1000, maxHeaderBytes).catch(() => null);
    const timer = setTimeout(() => closeQuietly(conn), 1000);
    await writeAll(conn, out).catch(() => {});
    clearTimeout(timer);
  } finally {
    closeQuietly(conn);
  }
}
