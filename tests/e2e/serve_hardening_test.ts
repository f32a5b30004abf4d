/**
 * `edgetrain serve` under the faults of issue 14, each test named after its item: slow clients and the
 * connection cap with a SIGTERM that checkpoints first, a start with the wrong --model or --method, poisoned
 * (non-finite) outputs and state, and the start-up checks (non-loopback without a token, a read-only state
 * folder). Waits are on events (a line, a reply, a closed socket), never on the clock.
 */
import { equal, ok } from "node:assert/strict";
import { decodeModel } from "../../src/onnx/model.ts";
import { encodeModel } from "../../src/onnx/export.ts";
import { decodeCheckpoint } from "../../src/service/checkpoint.ts";
import { reap, startServe, writeSmallModel } from "./_serve_helpers.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;
const enc = new TextEncoder();

/** Runs `edgetrain serve ARGS` expecting it to refuse to start; one that starts listening is stopped (code -1). */
async function serveFails(args: string[]): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", "--unstable-webgpu", `--config=${CONFIG}`, MAIN, "serve", ...args],
    env: { NO_COLOR: "1", EDGETRAIN_PROGRESS: "0" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  reap(child);
  let stderr = "";
  let started = false;
  for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
    stderr += chunk;
    if (!started && /listening on http/.test(stderr)) {
      started = true;
      child.kill("SIGTERM");
    }
  }
  const { code } = await child.status;
  return { code: started ? -1 : code, stderr };
}

const tensor = (value: number) => new Uint8Array(new Float32Array(1024).fill(value).buffer);

async function predict(url: string, value: number): Promise<Response> {
  return await fetch(`${url}/v1/predict`, {
    method: "POST",
    body: tensor(value),
    headers: { "content-type": "application/octet-stream", connection: "close" },
  });
}

interface SlowClient {
  /** Resolves once its head is sent. */
  started: Promise<void>;
  done: Promise<"closed by the server" | "finished">;
}

/** A client that sends `head` and then one byte every 200 ms, for up to 60 s; resolves when it stops. */
function slowClient(port: number, head: string): SlowClient {
  const started = Promise.withResolvers<void>();
  const done = (async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    let closed = false;
    const reader = (async () => {
      const buf = new Uint8Array(4096);
      try {
        while ((await conn.read(buf)) !== null);
      } catch {
        // reset by the server
      }
      closed = true;
    })();
    try {
      await conn.write(enc.encode(head));
      started.resolve();
      for (let i = 0; i < 300 && !closed; i++) {
        await new Promise((r) => setTimeout(r, 200));
        if (!closed) await conn.write(enc.encode("x"));
      }
    } catch {
      closed = true;
    }
    const result = closed ? "closed by the server" as const : "finished" as const;
    try {
      conn.close();
    } catch {
      // closed
    }
    started.resolve();
    await reader;
    return result;
  })();
  return { started: started.promise, done };
}

Deno.test("serve: past --max-connections a client gets 503; SIGTERM with slow clients writes the final checkpoint, then drops them (issue 14: request timeouts)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-slow-" });
  const state = `${dir}/state`;
  const model = await writeSmallModel(dir);
  const served = await startServe(
    ["--model", model, "--method", "tent", "--state", state, "--backend", "cpu", "--batch", "2"].concat(
      ["--flush-ms", "20", "--checkpoint-every", "0", "--max-connections", "8"],
      ["--header-timeout-ms", "60000", "--body-timeout-ms", "60000"],
    ),
    { narrow: { model, state } },
  );
  const port = Number(new URL(served.url).port);
  for (let i = 0; i < 3; i++) {
    const res = await predict(served.url, 0.1 * i);
    equal(res.status, 200, await res.clone().text());
    await res.body?.cancel();
  }
  // Slow clients, half sending a body a byte at a time, half a head, until the cap turns one away.
  const slow: SlowClient[] = [];
  let refused: Record<string, string> | null = null;
  for (let i = 0; i < 12 && !refused; i++) {
    const client = slowClient(
      port,
      i % 2
        ? "GET /v1/state HTTP/1.1\r\nHost: x\r\nX-Slow: "
        : "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n",
    );
    slow.push(client);
    await client.started;
    const st = await fetch(`${served.url}/v1/health`, { headers: { connection: "close" } });
    if (st.status === 503) refused = await st.json();
    else await st.body?.cancel();
  }
  ok(refused !== null, "the connection cap turned a client away");
  const body = refused as Record<string, string>;
  ok(/Too many connections/.test(body.error), JSON.stringify(body));
  ok(slow.length >= 7 && slow.length <= 8, `the cap counted ${slow.length} slow clients`);

  const t0 = performance.now();
  served.child.kill("SIGTERM");
  const status = await served.status;
  const exitMs = performance.now() - t0;
  equal(status.code, 0, served.lines.join("\n"));
  const outcomes = await Promise.all(slow.map((s) => s.done));
  ok(outcomes.every((o) => o === "closed by the server"), outcomes.join());
  ok(served.lines.some((l) => /checkpoint at step 3 \(SIGTERM\)/.test(l)), served.lines.join("\n"));
  ok([...Deno.readDirSync(state)].some((e) => e.name === "ckpt-000000000003.etck"), "the final checkpoint");
  console.log(`SIGTERM to exit with ${slow.length} slow clients connected: ${exitMs.toFixed(0)} ms`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("serve: a start with the wrong --model or --method leaves the checkpoints untouched and fails naming both (issue 14: wrong --model or --method)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-wrong-" });
  const state = `${dir}/state`;
  await Deno.mkdir(`${dir}/a`);
  await Deno.mkdir(`${dir}/b`);
  const modelA = await writeSmallModel(`${dir}/a`, { seed: 1 });
  const modelB = await writeSmallModel(`${dir}/b`, { seed: 2 });
  const args = (
    model: string,
    method: string,
  ) => [
    "--model",
    model,
    "--method",
    method,
    "--state",
    state,
    "--backend",
    "cpu",
    "--batch",
    "2",
    "--flush-ms",
    "20",
  ];
  let served = await startServe(args(modelA, "tent"), { narrow: { model: modelA, state } });
  const res = await predict(served.url, 0.5);
  equal(res.status, 200);
  await res.body?.cancel();
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0);
  const before = [...Deno.readDirSync(state)].map((e) => e.name).sort();
  ok(before.includes("ckpt-000000000001.etck"), before.join());

  const wrongModel = await serveFails(args(modelB, "tent"));
  equal(wrongModel.code, 1, wrongModel.stderr);
  ok(
    /model sha256 [0-9a-f]{12}… with method "tent", not for the served model sha256 [0-9a-f]{12}…/.test(
      wrongModel.stderr,
    ),
    wrongModel.stderr,
  );
  ok(/left untouched/.test(wrongModel.stderr), wrongModel.stderr);
  const wrongMethod = await serveFails(args(modelA, "eata"));
  equal(wrongMethod.code, 1, wrongMethod.stderr);
  ok(/method "tent", not for the served method "eata"/.test(wrongMethod.stderr), wrongMethod.stderr);
  equal([...Deno.readDirSync(state)].map((e) => e.name).sort().join(), before.join(), "nothing renamed");

  served = await startServe(args(modelA, "tent"), { narrow: { model: modelA, state } });
  ok(served.lines.some((l) => /resumed "tent" at step 1/.test(l)), served.lines.join("\n"));
  served.child.kill("SIGTERM");
  await served.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("serve: non-finite outputs make /v1/health 503 degraded, a non-finite state is never checkpointed, a restart resumes the last good one (issue 14: NaN/Inf)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-nan-" });
  const state = `${dir}/state`;
  const model = await writeSmallModel(dir);
  // A model with a NaN weight is refused at load, naming the tensor.
  const onnx = decodeModel(await Deno.readFile(model));
  const [name, w] = [...onnx.graph.initializers].find(([, t]) => t.dtype === "float32" && t.data.length > 8)!;
  const poisoned = Float32Array.from(w.data as Float32Array);
  poisoned[3] = NaN;
  await Deno.mkdir(`${dir}/nan`);
  await Deno.writeFile(`${dir}/nan/model.onnx`, encodeModel(onnx, { initializers: { [name]: poisoned } }));
  const refused = await serveFails([
    "--model",
    `${dir}/nan/model.onnx`,
    "--state",
    state,
    "--backend",
    "cpu",
  ]);
  equal(refused.code, 1);
  ok(refused.stderr.includes(`"${name}" has NaN`), refused.stderr);

  // --memory 2: the service learns after every pair, the step that answers it.
  const args = ["--model", model, "--method", "tent", "--state", state, "--backend", "cpu", "--batch", "2"]
    .concat(["--memory", "2", "--flush-ms", "20", "--checkpoint-every", "1", "--keep-checkpoints", "2"]);
  let served = await startServe(args, { narrow: { model, state } });
  const pair = (v: number) => Promise.all([predict(served.url, v), predict(served.url, -v)]);
  for (const v of [0.3, 0.5, 0.7]) for (const r of await pair(v)) equal(r.status, 200, await r.text());
  const healthy = await fetch(`${served.url}/v1/health`);
  equal(healthy.status, 200);
  equal((await healthy.json()).status, "ok");
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  const good = [...Deno.readDirSync(state)].map((e) => e.name).filter((n) => n.endsWith(".etck")).sort();
  equal(good.join(), "ckpt-000000000002.etck,ckpt-000000000003.etck");

  // A learning rate that overflows: step 4 answers from the good state, then its update makes the state
  // infinite; step 5's outputs are NaN.
  served = await startServe([...args, "--lr", "1e300"], { narrow: { model, state } });
  for (const r of await pair(0.3)) equal(r.status, 200, await r.text());
  for (const r of await pair(0.3)) {
    equal(r.status, 500);
    ok(/not finite/.test((await r.json()).error));
  }
  const degraded = await fetch(`${served.url}/v1/health`);
  const report = await degraded.json();
  equal(degraded.status, 503, JSON.stringify(report));
  equal(report.status, "degraded");
  ok(/non-finite outputs/.test(report.reason), report.reason);
  served.child.kill("SIGTERM");
  equal((await served.status).code, 0, served.lines.join("\n"));
  ok(served.lines.some((l) => /checkpoint at step 4 failed: .*not finite/.test(l)), served.lines.join("\n"));
  ok(
    served.lines.some((l) => /final checkpoint at step 5 failed: .*not finite/.test(l)),
    served.lines.join("\n"),
  );
  const kept = [...Deno.readDirSync(state)].map((e) => e.name).filter((n) => n.endsWith(".etck")).sort();
  equal(kept.join(), good.join(), "the last good checkpoints were not rotated away");
  for (const f of kept) await decodeCheckpoint(await Deno.readFile(`${state}/${f}`), f); // finite, or it throws

  served = await startServe(args, { narrow: { model, state } });
  ok(served.lines.some((l) => /resumed "tent" at step 3/.test(l)), served.lines.join("\n"));
  for (const r of await pair(0.3)) equal(r.status, 200, await r.text());
  equal((await fetch(`${served.url}/v1/health`).then((r) => r.json())).status, "ok");
  served.child.kill("SIGTERM");
  await served.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("serve: refuses a non-loopback address without a token, and a read-only state folder at start (issue 14: low)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-start-" });
  const model = await writeSmallModel(dir);
  const open = await serveFails([
    "--model",
    model,
    "--state",
    `${dir}/state`,
    "--listen",
    "0.0.0.0:0",
    "--backend",
    "cpu",
  ]);
  equal(open.code, 2, open.stderr);
  ok(/0\.0\.0\.0.*--token-file/.test(open.stderr), open.stderr);

  // Read-only: a read-only tmpfs as root (root ignores mode bits), chmod otherwise.
  const ro = `${dir}/ro`;
  await Deno.mkdir(ro);
  const root = Deno.uid() === 0;
  const mounted = root &&
    (await new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", ro],
        stderr: "null",
      })
        .output().catch(() => null))?.code === 0;
  if (!root) await Deno.chmod(ro, 0o500);
  try {
    if (root && !mounted) console.log("cannot mount a read-only tmpfs here: read-only state not checked");
    else {
      const res = await serveFails(["--model", model, "--state", ro, "--backend", "cpu"]);
      equal(res.code, 1, res.stderr);
      ok(/State folder ".*ro" is not writable/.test(res.stderr), res.stderr);
    }
  } finally {
    if (mounted) await new Deno.Command("umount", { args: [ro] }).output();
    else await Deno.chmod(ro, 0o700);
  }
  await Deno.remove(dir, { recursive: true });
});
