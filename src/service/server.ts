/**
 * The HTTP API (Deno.serve). Routes:
 *   POST /v1/predict   body: image/png, image/jpeg, or a raw float32 tensor (see inputs.ts) -> prediction JSON
 *   GET  /v1/health    liveness and finite outputs (503 "degraded" when not), never needs the token
 *   GET  /metrics      Prometheus text
 *   POST /v1/reset     back to the source state
 *   GET  /v1/state     method, steps, last checkpoint, the adapter bank's slots (`?digest=1` adds a SHA-256 of
 *                      the adapted state)
 *   GET  /v1/report    the stream since start as one self-contained HTML page (src/report/)
 * With a token, every route but health needs `Authorization: Bearer <token>`. Bodies are read with a size
 * limit (413, checked before and while reading) and within the server's body deadline (408, http1.ts). A bad
 * request gets a 4xx JSON `{ "error": reason }` and never reaches the adapted state. A prediction that is not
 * finite is answered 500 with its reason, never as class 0 with null probabilities.
 */
import { type Batcher, BatcherClosedError } from "./batcher.ts";
import type { AdaptEngine, Prediction } from "./engine.ts";
import { type Health, nonFiniteReason } from "./health.ts";
import { HttpError } from "./http1.ts";
import { decodeInput, InputError, type InputSpec } from "./inputs.ts";
import { MetricsText, type RequestMetrics } from "./metrics.ts";

export interface ApiContext {
  engine: AdaptEngine;
  batcher: Batcher<Float32Array, Prediction>;
  spec: InputSpec;
  metrics: RequestMetrics;
  health: Health;
  /** Bearer token; null: no authentication. */
  token: string | null;
  maxBodyBytes: number;
  /** Extra fields of GET /v1/state (listen address, spool). */
  info?: () => Record<string, unknown>;
  log?: (message: string) => void;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

const fail = (status: number, error: string, headers: Record<string, string> = {}) =>
  json(status, { error }, headers);

/** Compares in time independent of where the strings first differ. */
function sameToken(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/**
 * Reads a body of at most `limit` bytes; null when it is larger (the rest is not read). A body that breaks
 * off, is malformed or misses its deadline throws the server's HttpError (400, 408).
 */
export async function readLimited(req: Request, limit: number): Promise<Uint8Array | null> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    await req.body?.cancel().catch(() => {});
    return null;
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const ROUTES: Record<string, string[]> = {
  "/v1/predict": ["POST"],
  "/v1/health": ["GET", "HEAD"],
  "/metrics": ["GET"],
  "/v1/reset": ["POST"],
  "/v1/state": ["GET"],
  "/v1/report": ["GET"],
};

export function createHandler(ctx: ApiContext): (req: Request) => Promise<Response> {
  const log = ctx.log ?? ((m: string) => console.error(`edgetrain serve: ${m}`));
  const route = async (req: Request, url: URL): Promise<Response> => {
    const methods = ROUTES[url.pathname];
    if (!methods) return fail(404, `No route ${url.pathname} (routes: ${Object.keys(ROUTES).join(", ")})`);
    if (!methods.includes(req.method)) {
      return fail(405, `${url.pathname} accepts ${methods.join(", ")}, not ${req.method}`, {
        allow: methods.join(", "),
      });
    }
    if (url.pathname === "/v1/health") {
      const { code, body } = ctx.health.report(ctx.engine.steps);
      return json(code, body);
    }
    if (ctx.token !== null) {
      const auth = req.headers.get("authorization") ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
      if (!m || !sameToken(m[1], ctx.token)) {
        await req.body?.cancel().catch(() => {});
        return fail(401, m ? "The bearer token is wrong" : "Authorization: Bearer <token> is required", {
          "www-authenticate": 'Bearer realm="edgetrain"',
        });
      }
    }
    switch (url.pathname) {
      case "/v1/predict":
        return await predict(req);
      case "/metrics": {
        const text = ctx.metrics.render(
          ctx.engine.render(new MetricsText()).gauge(
            "edgetrain_queue_length",
            "Inputs waiting for a batch.",
            ctx.batcher.pending,
          ),
        );
        return new Response(text.toString(), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      }
      case "/v1/report":
        return new Response(ctx.engine.report(), { headers: { "content-type": "text/html; charset=utf-8" } });
      case "/v1/reset":
        await req.body?.cancel().catch(() => {});
        await ctx.batcher.exclusive(() => ctx.engine.reset());
        return json(200, {
          reset: true,
          steps: ctx.engine.steps,
          last_checkpoint: ctx.engine.lastCheckpoint,
        });
      default: {
        const digest = url.searchParams.get("digest");
        const extra: Record<string, unknown> = {
          batch: ctx.batcher.batch,
          flush_ms: ctx.batcher.flushMs,
          ...ctx.info?.(),
        };
        if (digest === "1" || digest === "true") {
          extra.state_sha256 = await ctx.batcher.exclusive(() => ctx.engine.digest());
        }
        return json(200, ctx.engine.describe(extra));
      }
    }
  };

  const predict = async (req: Request): Promise<Response> => {
    let body: Uint8Array | null;
    try {
      body = await readLimited(req, ctx.maxBodyBytes);
    } catch (e) {
      if (!(e instanceof HttpError)) throw e;
      return fail(e.status, e.message);
    }
    if (body === null) {
      return fail(413, `The request body is larger than the limit of ${ctx.maxBodyBytes} bytes`);
    }
    let x: Float32Array;
    try {
      x = decodeInput(body, req.headers.get("content-type"), req.headers.get("x-shape"), ctx.spec);
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      ctx.engine.process.skipped++;
      return fail(e.status, e.message);
    }
    const p = await ctx.batcher.submit(x);
    const bad = nonFiniteReason(p);
    return bad ? json(500, { error: `Internal error: ${bad}`, step: p.step }) : json(200, p);
  };

  return async (req: Request): Promise<Response> => {
    const t0 = performance.now();
    let url: URL;
    let res: Response;
    try {
      url = new URL(req.url);
    } catch {
      return fail(400, `Malformed URL ${req.url}`);
    }
    try {
      res = await route(req, url);
    } catch (e) {
      if (e instanceof BatcherClosedError) res = fail(503, e.message, { "retry-after": "5" });
      else {
        log(`${req.method} ${url.pathname} failed: ${(e as Error).message}`);
        res = fail(500, `Internal error: ${(e as Error).message.split("\n")[0]}`);
      }
    }
    const known = url.pathname in ROUTES ? url.pathname : "other";
    ctx.metrics.request(known, res.status, (performance.now() - t0) / 1000);
    return res;
  };
}

/** "127.0.0.1:8417", "[::1]:8417", "localhost:0" -> hostname and port. */
export function parseListen(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new Error(`--listen "${value}" is not HOST:PORT (e.g. 127.0.0.1:8417, [::1]:8417)`);
  }
  return { hostname: m[1] ?? m[2], port };
}

export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}
