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
    "x": Float32Array.of(-0, 3.4e38),
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

Deno.test("CheckpointStore.resume() takes the newest valid checkpoint and sets corrupt ones aside", async () => {
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
  // Newest: a torn write (corrupt); next: a flipped byte; then a leftover temp file.
  const good = await Deno.readFile(`${dir}/${checkpointName(20)}`);
  await Deno.writeFile(`${dir}/${checkpointName(40)}`, good.slice(0, good.length / 2));
  const flipped = good.slice();
  flipped[30] ^= 1;
  await Deno.writeFile(`${dir}/${checkpointName(30)}`, flipped);
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
  ok(warnings.every((w) => /corrupt/.test(w)), warnings.join("\n"));

  // A checkpoint the method refuses (accept throws) is another configuration's: kept, and resume fails.
  await rejects(
    store.resume((ck) => {
      throw new Error(`no thanks (step ${ck.header.step})`);
    }),
    /no thanks \(step 20\).*left untouched/,
  );
  ok(Deno.statSync(`${dir}/${checkpointName(20)}`).isFile);
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

// ---- issue 14: poisoned state, another model's checkpoints, full disks ----

function finiteState(v = 1): Record<string, Float32Array> {
  return { "model.bn.weight": Float32Array.of(v, 2, 3), "optimizer.0.m": Float32Array.of(0.5) };
}

Deno.test("CheckpointStore.resume() sets aside a checkpoint with NaN values and a valid checksum (issue 14: NaN/Inf)", async () => {
  const dir = await Deno.makeTempDir();
  const warnings: string[] = [];
  const store = new CheckpointStore(dir, {
    modelSha256: HEADER.model_sha256,
    method: "tent",
    warn: (m) => warnings.push(m),
  });
  await store.write(10, finiteState());
  // A valid file (checksum and all) whose values are poisoned: written by hand, as a buggy writer would.
  const poisoned = await encodeCheckpoint(
    { ...HEADER, step: 20 },
    { "model.bn.weight": Float32Array.of(1, NaN, 3), "optimizer.0.m": Float32Array.of(Infinity) },
  ).catch(() => null);
  ok(poisoned === null, "encodeCheckpoint() refuses a non-finite state");
  const bytes = await Deno.readFile(`${dir}/${checkpointName(10)}`);
  const header = JSON.parse(
    new TextDecoder().decode(bytes.subarray(12, 12 + new DataView(bytes.buffer).getUint32(8, true))),
  );
  header.step = 20;
  const json = new TextEncoder().encode(JSON.stringify(header));
  const body = new Uint8Array(12 + json.length + 16);
  body.set(bytes.subarray(0, 8));
  new DataView(body.buffer).setUint32(8, json.length, true);
  body.set(json, 12);
  new DataView(body.buffer).setFloat32(12 + json.length + 4, NaN, true);
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  await Deno.writeFile(`${dir}/${checkpointName(20)}`, new Uint8Array([...body, ...sum]));
  await rejects(
    decodeCheckpoint(await Deno.readFile(`${dir}/${checkpointName(20)}`)),
    /not finite.*model\.bn\.weight/,
  );
  const got = await store.resume(() => {});
  equal(got?.header.step, 10, "the poisoned newest one is skipped");
  ok(Deno.statSync(`${dir}/${checkpointName(20)}.bad`).isFile);
  ok(warnings.some((w) => /NaN/.test(w) && /model\.bn\.weight/.test(w)), warnings.join("\n"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.write() refuses a non-finite state and never rotates the good ones away (issue 14: NaN/Inf)", async () => {
  const dir = await Deno.makeTempDir();
  const store = new CheckpointStore(dir, { modelSha256: HEADER.model_sha256, method: "tent", keep: 2 });
  await store.write(1, finiteState(1));
  await store.write(2, finiteState(2));
  for (const step of [3, 4, 5]) {
    await rejects(
      store.write(step, {
        "model.bn.weight": Float32Array.of(1, NaN, 3),
        "optimizer.0.m": Float32Array.of(0),
      }),
      (e: Error) => /model\.bn\.weight/.test(e.message) && /NaN/.test(e.message),
    );
  }
  deepEqual((await store.list()).map((c) => c.step), [2, 1], "the last good checkpoints are still there");
  deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [checkpointName(1), checkpointName(2)]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.resume() leaves another model's or method's checkpoints untouched and fails naming both (issue 14: wrong --model or --method)", async () => {
  const dir = await Deno.makeTempDir();
  const tent = new CheckpointStore(dir, { modelSha256: HEADER.model_sha256, method: "tent", warn: () => {} });
  await tent.write(10, finiteState());
  await tent.write(20, finiteState());
  const before = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  const otherModel = new CheckpointStore(dir, {
    modelSha256: "cd".repeat(32),
    method: "tent",
    warn: () => {},
  });
  await rejects(otherModel.resume(() => {}), (e: Error) => {
    ok(/abababababab/.test(e.message) && /cdcdcdcdcdcd/.test(e.message), e.message);
    ok(/untouched|left as/.test(e.message), e.message);
    return true;
  });
  const otherMethod = new CheckpointStore(dir, {
    modelSha256: HEADER.model_sha256,
    method: "eata",
    warn: () => {},
  });
  await rejects(otherMethod.resume(() => {}), /"tent".*"eata"|"eata".*"tent"/);
  deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), before, "nothing renamed or removed");
  equal((await tent.resume(() => {}))?.header.step, 20, "the right settings still resume the newest");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.resume() sets aside only corrupt files and prunes old .bad files (issue 14: wrong --model or --method)", async () => {
  const dir = await Deno.makeTempDir();
  const store = new CheckpointStore(dir, {
    modelSha256: HEADER.model_sha256,
    method: "tent",
    keep: 10,
    warn: () => {},
  });
  await store.write(1, finiteState());
  for (let i = 0; i < 6; i++) {
    const path = `${dir}/${checkpointName(100 + i)}.bad`;
    await Deno.writeFile(path, Uint8Array.of(i));
    await Deno.utime(path, 1000 + i, 1000 + i);
  }
  await Deno.writeFile(`${dir}/${checkpointName(200)}`, Uint8Array.of(1, 2, 3));
  equal((await store.resume(() => {}))?.header.step, 1);
  const bad = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".bad")).sort();
  deepEqual(bad, [`${checkpointName(104)}.bad`, `${checkpointName(105)}.bad`, `${checkpointName(200)}.bad`]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CheckpointStore.write() on a full disk leaves no temp file and says why (issue 14: full disk)", async () => {
  const dir = await Deno.makeTempDir();
  const mnt = `${dir}/tiny`;
  await Deno.mkdir(mnt);
  // A 64 KiB tmpfs is a real full disk; without the rights to mount one, /dev/full stands in (ENOSPC on write).
  const mounted = (await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt],
    stderr: "null",
  })
    .output().catch(() => null))?.code === 0;
  const store = new CheckpointStore(mnt, { modelSha256: HEADER.model_sha256, method: "tent", keep: 2 });
  const big = { "model.w": new Float32Array(40_000).fill(1) }; // 160 KB: more than the disk holds
  try {
    if (mounted) {
      await store.write(1, { "model.w": Float32Array.of(1) });
      await rejects(
        store.write(2, big),
        (e: Error) => /No space left on device/.test(e.message) && /ckpt-000000000002/.test(e.message),
      );
      deepEqual(
        [...Deno.readDirSync(mnt)].map((e) => e.name),
        [checkpointName(1)],
        "no temp file is left behind",
      );
    } else {
      console.log("cannot mount a tmpfs here: using /dev/full for ENOSPC");
      const failing = new CheckpointStore(mnt, {
        modelSha256: HEADER.model_sha256,
        method: "tent",
        openTemp: () => Deno.open("/dev/full", { write: true }),
      });
      await rejects(failing.write(2, big), /No space left on device/);
      deepEqual([...Deno.readDirSync(mnt)].map((e) => e.name), []);
    }
  } finally {
    if (mounted) await new Deno.Command("umount", { args: [mnt] }).output();
    await Deno.remove(dir, { recursive: true });
  }
});
