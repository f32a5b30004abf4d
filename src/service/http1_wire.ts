/**
 * HTTP/1.1 on the wire, for the service's server (http1.ts): reading a request head and body from a
 * connection under a deadline, parsing the head (refusing what is malformed or ambiguous), and the bytes of a
 * response head.
 */

/** A request that breaks the protocol or its limits; `status` is the reply it gets. */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The head or body did not arrive within its deadline (408; the connection is then closed). */
export class RequestTimeoutError extends HttpError {
  override name = "RequestTimeoutError";
  constructor(message: string) {
    super(408, message);
  }
}

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Content",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

export const enc = new TextEncoder();
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CRLF2 = [13, 10, 13, 10];

/** Buffered reads from one connection, each bounded by a deadline. */
export class ConnReader {
  buf = new Uint8Array(0);
  /** Bytes read on this connection so far (to tell an idle keep-alive close from a slow client). */
  total = 0;
  constructor(readonly conn: Deno.Conn) {}

  /** Reads once more; false on EOF. Throws RequestTimeoutError when `deadline` passes first. */
  async fill(deadline: number): Promise<boolean> {
    const chunk = new Uint8Array(16 * 1024);
    const read = this.conn.read(chunk);
    read.catch(() => {}); // after a timeout the connection is closed and this read rejects
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), deadline - Date.now()));
    try {
      const n = await Promise.race([read, late]);
      if (n === "late") throw new RequestTimeoutError("The client was too slow sending the request");
      if (n === null) return false;
      this.total += n;
      const merged = new Uint8Array(this.buf.length + n);
      merged.set(this.buf, 0);
      merged.set(chunk.subarray(0, n), this.buf.length);
      this.buf = merged;
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  take(n: number): Uint8Array {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** The bytes up to and including the first CRLFCRLF; null on EOF before any byte. */
  async head(deadline: number, max: number): Promise<Uint8Array | null> {
    for (let from = 0;;) {
      for (let i = Math.max(0, from - 3); i + 4 <= this.buf.length; i++) {
        if (CRLF2.every((b, k) => this.buf[i + k] === b)) return this.take(i + 4);
      }
      from = this.buf.length;
      if (this.buf.length > max) throw new HttpError(431, `The request head is larger than ${max} bytes`);
      if (!(await this.fill(deadline))) {
        if (this.buf.length === 0) return null;
        throw new HttpError(400, "The connection closed in the middle of the request head");
      }
    }
  }

  /** One CRLF-terminated line (chunked framing), at most `max` bytes. */
  async line(deadline: number, max: number): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(10);
      if (i >= 0) return new TextDecoder().decode(this.take(i + 1)).replace(/\r?\n$/, "");
      if (this.buf.length > max) throw new HttpError(400, "A chunk-size line is too long");
      if (!(await this.fill(deadline))) throw new HttpError(400, "The connection closed in a chunked body");
    }
  }

  /** Reads and drops bytes until EOF, `deadline` or `max` bytes. */
  async discard(deadline: number, max: number): Promise<void> {
    for (let dropped = 0; dropped < max;) {
      dropped += this.buf.length;
      this.buf = new Uint8Array(0);
      if (!(await this.fill(deadline))) return;
    }
  }
}

export interface Head {
  method: string;
  target: string;
  http10: boolean;
  headers: Headers;
}

export function parseHead(bytes: Uint8Array): Head {
  // One char per byte (the encoding standard's "latin1" is windows-1252, which maps 0x80-0x9f past 0xff).
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  const lines = text.slice(0, -4).split("\r\n");
  const m = /^([A-Z]+) (\/[^\s]*) HTTP\/1\.([01])$/.exec(lines[0]);
  if (!m) {
    if (/^[A-Z]+ \S+ HTTP\/\d/.test(lines[0])) {
      throw new HttpError(/HTTP\/1\.[01]$/.test(lines[0]) ? 400 : 505, "Unsupported request line");
    }
    throw new HttpError(400, "Malformed request line");
  }
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    const value = line.slice(colon + 1).trim();
    if (!TOKEN.test(name) || /[\0\r\n]/.test(value)) throw new HttpError(400, "Malformed header line");
    try {
      headers.append(name, value);
    } catch {
      throw new HttpError(400, "Malformed header line");
    }
  }
  return { method: m[1], target: m[2], http10: m[3] === "0", headers };
}

export type Framing = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" };

export function framing(h: Headers): Framing {
  const te = h.get("transfer-encoding");
  const cl = h.get("content-length");
  if (te !== null) {
    if (cl !== null) throw new HttpError(400, "Both Transfer-Encoding and Content-Length are given");
    if (te.trim().toLowerCase() !== "chunked") {
      throw new HttpError(501, `Transfer-Encoding "${te}" is not supported (only chunked)`);
    }
    return { kind: "chunked" };
  }
  if (cl === null) return { kind: "none" };
  // Repeated headers arrive joined by ", "; every copy must agree.
  const values = new Set(cl.split(",").map((v) => v.trim()));
  const v = [...values][0];
  if (values.size !== 1 || !/^\d{1,15}$/.test(v)) throw new HttpError(400, `Bad Content-Length "${cl}"`);
  return Number(v) === 0 ? { kind: "none" } : { kind: "length", length: Number(v) };
}

export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

export function headBytes(status: number, headers: Headers, length: number, keep: boolean): Uint8Array {
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}`];
  for (const [k, v] of headers) {
    if (k !== "content-length" && k !== "connection" && k !== "transfer-encoding") lines.push(`${k}: ${v}`);
  }
  lines.push(
    `date: ${new Date().toUTCString()}`,
    `content-length: ${length}`,
    `connection: ${keep ? "keep-alive" : "close"}`,
  );
  return enc.encode(lines.join("\r\n") + "\r\n\r\n");
}
