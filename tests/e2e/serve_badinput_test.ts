/**
 * `edgetrain serve` against bad requests: wrong or missing token (401), oversized bodies (413, declared or
 * streamed), unsupported or malformed bodies (415/400), wrong-size images and tensors (422), and 1,000
 * malformed requests in a row — after which the service still answers and its adapted state is bit for bit
 * what it was (SHA-256 of the method's state).
 */
import { equal, notEqual, ok } from "node:assert/strict";
import { encode } from "fast-png";
import { auth, getJson, startServe, writeSmallModel } from "./_serve_helpers.ts";

const TOKEN = "bad-input-token";

function png(width: number, height: number, fill = 128): Uint8Array<ArrayBuffer> {
  return new Uint8Array(
    encode({ width, height, data: new Uint8Array(width * height).fill(fill), channels: 1, depth: 8 }),
  );
}

Deno.test("serve: bad requests get 4xx with a reason and leave the adapted state untouched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-badinput-" });
  const state = `${dir}/state`;
  const tokenFile = `${dir}/token`;
  await Deno.writeTextFile(tokenFile, TOKEN, { mode: 0o600 });
  const model = await writeSmallModel(dir);
  const served = await startServe(
    ["--model", model, "--method", "tent", "--state", state, "--token-file", tokenFile, "--backend", "cpu"]
      .concat(
        ["--batch", "4", "--flush-ms", "100", "--max-body", "64KiB"],
      ),
    { narrow: { model, state, tokenFile } },
  );
  const url = served.url;
  const post = (body: BodyInit | null, headers: Record<string, string>, path = "/v1/predict") =>
    fetch(`${url}${path}`, { method: "POST", body, headers: { ...auth(TOKEN), ...headers } });
  const expect = async (res: Response, status: number, reason: RegExp) => {
    const text = await res.text();
    equal(res.status, status, text);
    ok(reason.test(JSON.parse(text).error), `${status}: ${text}`);
  };

  const health = await fetch(`${url}/v1/health`);
  equal(health.status, 200, "health needs no token");
  await health.body?.cancel();
  const initial = await getJson(`${url}/v1/state?digest=1`, auth(TOKEN));
  equal(initial.steps, 0);

  // Authentication.
  await expect(await fetch(`${url}/v1/state`), 401, /Bearer/);
  await expect(await fetch(`${url}/metrics`, { headers: auth("nope") }), 401, /wrong/);
  await expect(
    await fetch(`${url}/v1/predict`, { method: "POST", body: png(28, 28), headers: auth("nope") }),
    401,
    /wrong/,
  );
  await expect(await fetch(`${url}/v1/reset`, { method: "POST" }), 401, /Bearer/);

  // Size limit: declared (content-length) and streamed (chunked, no length).
  await expect(
    await post(new Uint8Array(100 * 1024), { "content-type": "image/png" }),
    413,
    /larger than the limit/,
  );
  const chunk = new Uint8Array(16 * 1024);
  const streamed = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 8; i++) c.enqueue(chunk);
      c.close();
    },
  });
  await expect(await post(streamed, { "content-type": "image/png" }), 413, /larger than the limit/);

  // Types and decoding.
  await expect(await post("hello", { "content-type": "text/plain" }), 415, /not supported/);
  await expect(await post(new Uint8Array([1, 2, 3]), {}), 415, /not supported/);
  await expect(
    await post(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 9, 9, 9]), { "content-type": "image/png" }),
    400,
    /Cannot decode/,
  );
  await expect(await post(new Uint8Array(0), { "content-type": "image/png" }), 400, /empty/);
  await expect(await post(png(20, 20), { "content-type": "image/png" }), 422, /expects 1x32x32/);
  await expect(
    await post(new Uint8Array(12), { "content-type": "application/octet-stream" }),
    422,
    /1024 float32/,
  );
  await expect(
    await post(new Uint8Array(4096), { "content-type": "application/octet-stream", "x-shape": "3,32,32" }),
    422,
    /does not match/,
  );
  const nan = new Float32Array(1024).fill(NaN);
  await expect(
    await post(new Uint8Array(nan.buffer), { "content-type": "application/x-edgetrain-tensor" }),
    422,
    /NaN/,
  );
  await expect(await fetch(`${url}/v1/nothing`, { headers: auth(TOKEN) }), 404, /No route/);
  await expect(await fetch(`${url}/v1/predict`, { headers: auth(TOKEN) }), 405, /accepts POST/);

  // 1,000 malformed requests in a row, cycling through the kinds above.
  const bad: [BodyInit, Record<string, string>][] = [
    ["not an image", { "content-type": "text/plain" }],
    [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1]), { "content-type": "image/png" }],
    [new Uint8Array([0xff, 0xd8, 0xff, 0, 0]), { "content-type": "image/jpeg" }],
    [png(31, 29), { "content-type": "image/png" }],
    [new Uint8Array(100), { "content-type": "application/octet-stream" }],
  ];
  const codes = new Map<number, number>();
  for (let i = 0; i < 1000; i += 50) {
    const batch = await Promise.all(Array.from({ length: 50 }, async (_, k) => {
      const [body, headers] = bad[(i + k) % bad.length];
      const res = await post(body, headers);
      await res.body?.cancel();
      return res.status;
    }));
    for (const s of batch) codes.set(s, (codes.get(s) ?? 0) + 1);
  }
  ok([...codes.keys()].every((s) => s >= 400 && s < 500), JSON.stringify([...codes]));
  equal([...codes.values()].reduce((a, b) => a + b, 0), 1000);

  const afterBad = await getJson(`${url}/v1/state?digest=1`, auth(TOKEN));
  equal(afterBad.steps, 0, "no bad input reached the method");
  equal(afterBad.state_sha256, initial.state_sha256, "the adapted state is bit for bit unchanged");
  const metrics = await (await fetch(`${url}/metrics`, { headers: auth(TOKEN) })).text();
  ok(
    /edgetrain_skipped_inputs_total 10\d\d/.test(metrics),
    metrics.match(/edgetrain_skipped_inputs_total.*/)?.[0],
  );

  // The service still works: a lone valid image is flushed as a partial batch and adapts the state...
  const good = await post(png(28, 28, 200), { "content-type": "image/png" });
  const pred = await good.json();
  equal(good.status, 200, JSON.stringify(pred));
  equal(pred.batch, 1, "a partial batch runs after --flush-ms");
  equal(pred.probabilities.length, 10);
  const tensor = new Float32Array(1024).fill(0.5);
  const raw = await post(new Uint8Array(tensor.buffer), {
    "content-type": "application/octet-stream",
    "x-shape": "1,1,32,32",
  });
  equal(raw.status, 200, await raw.clone().text());
  await raw.body?.cancel();
  const adapted = await getJson(`${url}/v1/state?digest=1`, auth(TOKEN));
  equal(adapted.steps, 2);
  notEqual(
    adapted.state_sha256,
    initial.state_sha256,
    "a valid input does change the state (the digest can tell)",
  );

  // ...and POST /v1/reset returns it exactly to the source state.
  const reset = await post(null, {}, "/v1/reset");
  equal(reset.status, 200);
  await reset.body?.cancel();
  const back = await getJson(`${url}/v1/state?digest=1`, auth(TOKEN));
  equal(back.state_sha256, initial.state_sha256);
  equal(back.resets, 1);

  for (
    const name of [
      "edgetrain_http_requests_total",
      "edgetrain_predictions_total",
      "edgetrain_adaptation_steps_total",
    ]
  ) {
    ok(metrics.includes(`# TYPE ${name} counter`), name);
  }
  for (
    const name of [
      "edgetrain_mean_entropy",
      "edgetrain_ledger_bytes",
      "edgetrain_step_seconds_bucket",
      "edgetrain_resets_total",
    ]
  ) {
    ok(metrics.includes(name), name);
  }
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  await Deno.remove(dir, { recursive: true });
});
