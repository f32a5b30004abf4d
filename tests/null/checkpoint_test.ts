import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { createMethod } from "../../src/methods/registry.ts";
import type { TtaMethod } from "../../src/methods/tta.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { Rng } from "../../src/random.ts";
import {
  checkpointName,
  CheckpointStore,
  decodeCheckpoint,
  encodeCheckpoint,
  writeFileAtomic,
} from "../../src/service/checkpoint.ts";
import { AdaptEngine } from "../../src/service/engine.ts";

const HEADER = {
  model_sha256: "ab".repeat(32),
  method: "tent",
  step: 7,
  created: "2024-01-01T00:00:00Z",
  counters: { predictions: 3 },
};

function sampleState(): Record<string, Float32Array> {
  return {
    "model.bn.weight": Float32Array.of(1, -2.5, 3e-8),
    "optimizer.0.m": new Float32Array(0),
    "x": Float32Array.of(NaN, Infinity),
  };
}

Deno.test("encodeCheckpoint() and decodeCheckpoint() round-trip header and every float bit for bit", async () => {
  const state = sampleState();
  const ck = await decodeCheckpoint(await encodeCheckpoint(HEADER, state));
  equal(ck.header.step, 7);
  equal(ck.header.model_sha256, HEADER.model_sha256);
  deepEqual(ck.header.counters, { predictions: 3 });
  deepEqual(ck.header.tensors, [["model.bn.weight", 3], ["optimizer.0.m", 0], ["x", 2]]);
  for (const k of Object.keys(state)) deepEqual(Array.from(ck.state[k]), Array.from(state[k]), k);
});

Deno.test("decodeCheckpoint() rejects a flipped byte, a truncated file and a foreign file as corrupt", async () => {
  const bytes = await encodeCheckpoint(HEADER, sampleState());
  for (const at of [3, 20, bytes.length - 40, bytes.length - 1]) {
    const bad = bytes.slice();
    bad[at] ^= 0x10;
    await rejects(
      decodeCheckpoint(bad, "f"),
      (e: Error & { kind?: string }) => e.kind === "corrupt" && /corrupt/.test(e.message),
    );
  }
  await rejects(decodeCheckpoint(bytes.slice(0, bytes.length - 5), "f"), /checksum|corrupt/);
  await rejects(decodeCheckpoint(new TextEncoder().encode("{}".repeat(40)), "f"), /wrong magic/);
  await rejects(decodeCheckpoint(new Uint8Array(10), "f"), /shorter/);
});

Deno.test("writeFileAtomic() replaces the file and leaves no temp file behind", async () => {
  const dir = await Deno.makeTempDir();
  await writeFileAtomic(`${dir}/a.bin`, Uint8Array.of(1, 2));
  await writeFileAtomic(`${dir}/a.bin`, Uint8Array.of(3));
  deepEqual(Array.from(await Deno.readFile(`${dir}/a.bin`)), [3]);
  deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.bin"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.resume() takes the newest valid checkpoint and sets corrupt or mismatched ones aside", async () => {
  const dir = await Deno.makeTempDir();
  const warnings: string[] = [];
  const store = new CheckpointStore(dir, {
    modelSha256: HEADER.model_sha256,
    method: "tent",
    keep: 10,
    warn: (m) => warnings.push(m),
  });
  await store.write(10, sampleState(), { predictions: 10 });
  await store.write(20, sampleState());
  // Newest: a torn write (corrupt); next: another model's; then a leftover temp file.
  const other = new CheckpointStore(dir, { modelSha256: "cd".repeat(32), method: "tent" });
  await other.write(30, sampleState());
  const torn = await Deno.readFile(`${dir}/${checkpointName(20)}`);
  await Deno.writeFile(`${dir}/${checkpointName(40)}`, torn.slice(0, torn.length / 2));
  await Deno.writeFile(`${dir}/.${checkpointName(50)}.123.tmp`, Uint8Array.of(1));
  const got = await store.resume(() => {});
  equal(got?.header.step, 20);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  deepEqual(names, [
    checkpointName(10),
    checkpointName(20),
    `${checkpointName(30)}.bad`,
    `${checkpointName(40)}.bad`,
  ]);
  equal(warnings.length, 2);
  ok(/corrupt/.test(warnings[0]) && /not the served model/.test(warnings[1]), warnings.join("\n"));

  // A checkpoint the method refuses (accept throws) is set aside too; none left -> null.
  const refused = await store.resume((ck) => {
    throw new Error(`no thanks (step ${ck.header.step})`);
  });
  equal(refused, null);
  ok(warnings.some((w) => /no thanks \(step 10\)/.test(w)));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.write() keeps only the newest `keep` checkpoints", async () => {
  const dir = await Deno.makeTempDir();
  const store = new CheckpointStore(dir, { modelSha256: HEADER.model_sha256, method: "tent", keep: 2 });
  for (const step of [5, 10, 15, 20]) await store.write(step, sampleState());
  deepEqual((await store.list()).map((c) => c.step), [20, 15]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("AdaptEngine.resume() restores a Tent state exactly (model and Adam moments) and continues the step count", async () => {
  const dir = await Deno.makeTempDir();
  const b = new CpuBackend();
  const net = () =>
    buildIrbNet(b, {
      inChannels: 1,
      numClasses: 10,
      stemChannels: 8,
      blocks: [[1, 8, 1, 1]],
      lastChannels: 16,
      seed: 4,
    });
  const store = () =>
    new CheckpointStore(dir, { modelSha256: HEADER.model_sha256, method: "tent", warn: () => {} });
  const engine = (m: TtaMethod) =>
    new AdaptEngine({
      backend: b,
      method: m,
      shape: [1, 16, 16],
      modelPath: "m.onnx",
      modelSha256: HEADER.model_sha256,
      store: store(),
      checkpointEvery: 2,
      log: () => {},
    });
  const rng = new Rng(5);
  const inputs = Array.from({ length: 4 }, () => Array.from({ length: 6 }, () => rng.normals(256)));
  const tent = () => createMethod("tent", net(), { lr: 0.01, stream: { capacity: 6, collapseGuard: false } });
  const a = engine(await tent());
  for (const xs of inputs.slice(0, 2)) await a.step(xs);
  ok(a.checkpointDue());
  await a.checkpoint("test");
  const b2 = engine(await tent());
  equal((await b2.resume())?.step, 2);
  equal(b2.steps, 2);
  equal(b2.total.predictions, 12);
  equal(await b2.digest(), await a.digest(), "same model and optimizer state");
  // The next steps agree exactly: the resumed run is the uninterrupted run.
  for (const xs of inputs.slice(2)) {
    const [pa, pb] = [await a.step(xs), await b2.step(xs)];
    deepEqual(pb.map((p) => p.probabilities), pa.map((p) => p.probabilities));
  }
  equal(b2.steps, 4);
  a.method.dispose();
  b2.method.dispose();
  b.dispose();
  await Deno.remove(dir, { recursive: true });
});
