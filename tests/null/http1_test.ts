/**
 * The service's HTTP/1.1 server (src/service/http1.ts) against real sockets: keep-alive, chunked bodies,
 * HEAD, smuggling-shaped heads refused, and the limits of issue 14 (request timeouts): a head or body that
 * does not arrive within its deadline gets 408 and the connection is closed; the connection cap answers 503;
 * close() drops clients that are still sending.
 */
import { equal, ok } from "node:assert/strict";
import { HttpServer, RequestTimeoutError } from "../../src/service/http1.ts";

const enc = new TextEncoder();

/** Reads until the peer closes (or `max` bytes); returns the text. */
async function readAll(conn: Deno.Conn, max = 1 << 20): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  let total = 0;
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break;
    }
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    if ((total += n) >= max) break;
  }
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
}

function echoServer(limits: ConstructorParameters<typeof HttpServer>[0], seen: unknown[] = []): HttpServer {
  return new HttpServer(limits, async (req) => {
    try {
      const body = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
      return Response.json({ method: req.method, path: new URL(req.url).pathname, bytes: body.length });
    } catch (e) {
      seen.push(e);
      return Response.json({ error: (e as Error).message }, {
        status: (e as { status?: number }).status ?? 500,
      });
    }
  });
}

Deno.test("HttpServer: keep-alive, Content-Length and chunked bodies, HEAD, and a refused smuggling-shaped head", async () => {
  const server = echoServer({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${server.addr.port}`;
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${url}/a?x=${i}`, { method: "POST", body: new Uint8Array(1000 + i) });
    equal(res.status, 200);
    equal((await res.json()).bytes, 1000 + i);
  }
  const streamed = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 5; i++) c.enqueue(new Uint8Array(3000));
      c.close();
    },
  });
  const chunked = await fetch(`${url}/c`, { method: "POST", body: streamed });
  equal((await chunked.json()).bytes, 15000, "a chunked body arrives whole");
  const head = await fetch(`${url}/h`, { method: "HEAD" });
  equal(head.status, 200);
  equal(await head.text(), "");

  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  await conn.write(
    enc.encode(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
  );
  const reply = await readAll(conn);
  ok(reply.startsWith("HTTP/1.1 400 "), reply);
  ok(/Transfer-Encoding and Content-Length/.test(reply), reply);
  conn.close();
  await server.close();
});

Deno.test("HttpServer: a head or body slower than its deadline gets 408 and is closed (issue 14: request timeouts)", async () => {
  const seen: unknown[] = [];
  const server = echoServer(
    { hostname: "127.0.0.1", port: 0, headerTimeoutMs: 300, bodyTimeoutMs: 300 },
    seen,
  );
  const port = server.addr.port;
  const slowHead = await Deno.connect({ hostname: "127.0.0.1", port });
  await slowHead.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
  const slowBody = await Deno.connect({ hostname: "127.0.0.1", port });
  await slowBody.write(enc.encode("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"));
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  const [a, b, c] = await Promise.all([readAll(slowHead), readAll(slowBody), readAll(silent)]);
  ok(a.startsWith("HTTP/1.1 408 "), a);
  ok(b.startsWith("HTTP/1.1 408 "), b);
  equal(c, "", "a connection that never sent a byte is closed without a reply");
  ok(seen.some((e) => e instanceof RequestTimeoutError), "the handler saw the body time out");
  for (const s of [slowHead, slowBody, silent]) s.close();
  equal(server.connections, 0);
  await server.close();
});

Deno.test("HttpServer: past the connection cap a connection gets 503 at once; close() drops clients still sending", async () => {
  const server = echoServer({ hostname: "127.0.0.1", port: 0, maxConnections: 3, headerTimeoutMs: 600_000 });
  const port = server.addr.port;
  const slow: Deno.Conn[] = [];
  for (let i = 0; i < 3; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await c.write(enc.encode("GET / HTTP/1.1\r\n"));
    slow.push(c);
  }
  while (server.connections < 3) await new Promise((r) => setTimeout(r, 10));
  const extra = await Deno.connect({ hostname: "127.0.0.1", port });
  await extra.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const refused = await readAll(extra);
  ok(refused.startsWith("HTTP/1.1 503 "), refused);
  ok(/Too many connections/.test(refused), refused);
  extra.close();
  equal(server.refused, 1);
  const ends = slow.map((c) => readAll(c));
  await server.close();
  for (const text of await Promise.all(ends)) equal(text, "", "dropped without a reply");
  slow.forEach((c) => c.close());
  equal(server.connections, 0);
});
