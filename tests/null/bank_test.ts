import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import {
  type AdapterChoice,
  type AdapterEvent,
  BankedMethod,
  type BankSettings,
  withBank,
} from "../../src/methods/bank/mod.ts";
import { adaptMethod, createMethod } from "../../src/methods/registry.ts";
import { AdaptStream } from "../../src/methods/stream.ts";
import { buildIrbNet, type IrbNet } from "../../src/nn/mobilenet.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

const b = new CpuBackend();

function smallNet(): IrbNet {
  return buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
}

/** n frames of a domain: pixels ~ N(mean, std), seeded. */
const domain = (mean: number, std: number, n: number, seed: number) =>
  new Rng(seed).normals(n * 256, std).map((v) => v + mean);

/** `method` with a bank; its filters open (EATA, SAR), so random frames take part in learning. */
async function banked(
  method: string,
  bank: Partial<BankSettings> = {},
  capacity = 32,
  momentum?: number,
): Promise<BankedMethod> {
  const m = await createMethod(
    method,
    smallNet(),
    withBank({ stream: { capacity, momentum }, extra: adaptMethod(method).open }, {
      slots: 4,
      adapter: "bn",
      ...bank,
    }),
  );
  ok(m instanceof BankedMethod);
  return m;
}

/** Streams x in chunks through m; returns the events and the logits. */
async function run(
  m: BankedMethod,
  x: Float32Array,
  chunk: number,
): Promise<{ events: AdapterEvent[]; logits: number[] }> {
  const stream = new AdaptStream(m);
  const events: AdapterEvent[] = [];
  stream.observe({ adapter: (e) => events.push(e) });
  const logits: number[] = [];
  const n = x.length / 256;
  for (let s = 0; s < n; s += chunk) {
    const k = Math.min(chunk, n - s);
    const t = Tensor.from(b, x.subarray(s * 256, (s + k) * 256), [k, 1, 16, 16]);
    const e = await stream.process(t);
    t.dispose();
    logits.push(...e.result.logits);
  }
  return { events, logits };
}

const A = (n: number, seed = 1) => domain(0.5, 1, n, seed);
const B = (n: number, seed = 2) => domain(3, 0.4, n, seed);
const C = (n: number, seed = 3) => domain(-2, 2.5, n, seed);

Deno.test("withBank() opens one slot per domain and switches back on a return, with the state it left", async () => {
  const m = await banked("tent", {}, 64);
  const first = await run(m, A(64), 16);
  equal(first.events.filter((e) => e.action === "open").length, 1);
  const slotA = m.active;
  ok(slotA > 0, "domain A is not the source's");
  const left = await m.inner.coreState();
  const second = await run(m, B(64), 16);
  deepEqual(second.events.map((e) => e.action), ["open"]);
  notDeepEqual(m.active, slotA);
  const back = await run(m, A(16, 9), 16);
  deepEqual(back.events.map((e) => [e.action, e.to]), [["switch", slotA]]);
  // No learning yet since the return (the frame memory started afresh): the state is the one A left.
  deepEqual(await m.inner.coreState(), left);
  m.dispose();
});

Deno.test("A bank at --stats-momentum 0 keeps its state finite across a return (checkpoints refuse non-finite values)", async () => {
  const m = await banked("tent", {}, 64, 0);
  await run(m, A(64), 16);
  await run(m, B(64), 16);
  const back = await run(m, A(16, 9), 16);
  deepEqual(back.events.map((e) => e.action), ["switch"]);
  const state = await m.state();
  ok("stream.steps" in state, Object.keys(state).join(" "));
  for (const [k, v] of Object.entries(state)) ok(v.every(Number.isFinite), `${k} is not finite`);
  m.dispose();
});

Deno.test("BankedMethod resumes exactly from its state(): the same answers as the uninterrupted stream", async () => {
  const x = new Float32Array([...A(96), ...B(96), ...A(64, 7)]);
  const split = 128 * 256;
  const whole = await banked("tent");
  const all = await run(whole, x, 16);
  const first = await banked("tent");
  const a = await run(first, x.subarray(0, split), 16);
  const state = await first.state();
  first.dispose();
  const resumed = await banked("tent");
  resumed.loadState(state);
  const rest = await run(resumed, x.subarray(split), 16);
  deepEqual([...a.logits, ...rest.logits].map((v) => v.toFixed(6)), all.logits.map((v) => v.toFixed(6)));
  // Events as the bank saw them (the stream positions restart with the new stream loop).
  const bare = (es: AdapterEvent[]) =>
    es.map(({ action, from, to, distance, frame }) => ({ action, from, to, distance, frame }));
  deepEqual(bare([...a.events, ...rest.events]), bare(all.events));
  deepEqual(await resumed.state(), await whole.state());
  whole.dispose();
  resumed.dispose();
});

Deno.test("A full bank evicts its least used slot for a new domain, or merges its two closest", async () => {
  const m = await banked("tent", { slots: 3 });
  const r = await run(m, new Float32Array([...A(64), ...B(32), ...C(32)]), 16);
  deepEqual(r.events.map((e) => e.action), ["open", "open", "evict", "open"]);
  const evict = r.events[2];
  equal(evict.from, r.events[1].to, "B had fewer frames than A");
  equal(m.counts.evicted, 1);
  m.dispose();

  const n = await banked("tent", { slots: 3 });
  await run(n, new Float32Array([...A(64), ...B(32)]), 16);
  // Make B's key A's (two slots of one domain, as a bank that opened twice would hold): C then merges them.
  const keys = n.selector.keys;
  const [ida, idb] = [...keys.keys()].filter((id) => id > 0);
  keys.set(idb, { ...keys.get(ida)!, count: 32 });
  const framesBefore = n.slots.info[ida]!.frames + n.slots.info[idb]!.frames;
  const merged = await run(n, C(32), 16);
  deepEqual(merged.events.map((e) => e.action), ["merge", "open"]);
  equal(merged.events[0].to, ida);
  equal(n.slots.info[ida]!.frames, framesBefore);
  n.dispose();
});

Deno.test("Every adapter kind learns with every learning method; lora and conv1x1 train only their adapters", async () => {
  for (const method of ["tent", "eata", "sar", "rotta"]) {
    for (const adapter of ["bn", "lora", "conv1x1"] as AdapterChoice[]) {
      const m = await banked(method, { adapter }, 32);
      const before = await Promise.all(m.trainables().map((p) => p.data()));
      const r = await run(m, new Float32Array([...A(64), ...B(64)]), 32);
      ok(r.logits.every(Number.isFinite), `${method}/${adapter}`);
      const after = await Promise.all(m.trainables().map((p) => p.data()));
      ok(after.some((v, i) => v.some((x, j) => x !== before[i][j])), `${method}/${adapter} learned nothing`);
      if (adapter !== "bn") {
        equal(
          m.trainables().length,
          m.core.adapters!.params.length,
          `${method}/${adapter}: only adapters train`,
        );
      }
      m.dispose();
    }
  }
  const bn = await banked("bn");
  await run(bn, A(64), 32);
  bn.dispose();
  await createMethod("bn", smallNet(), withBank({}, { slots: 4, adapter: "lora" })).then(
    () => ok(false, "bn cannot train LoRA"),
    (e) => ok(/needs a method that learns/.test(e.message)),
  );
});

Deno.test("The pull to the source keeps trained weights nearer the source", async () => {
  const distance = async (pull: number) => {
    const m = await banked("tent", { pull }, 16);
    const values = async () => (await Promise.all(m.trainables().map((p) => p.toArray()))).flat();
    const source = await values();
    await run(m, A(160), 16);
    const now = await values();
    m.dispose();
    return now.reduce((s, x, i) => s + (x - source[i]) ** 2, 0);
  };
  const [free, pulled] = [await distance(0), await distance(0.3)];
  ok(free > 0 && pulled < 0.5 * free, `moved ${free} without the pull, ${pulled} with it`);
});

Deno.test("BankedMethod.loadState() refuses the state of another bank; reset() forgets every domain", async () => {
  const slotsBefore = b.ledger.snapshot().live.adapters;
  const m = await banked("tent");
  await run(m, new Float32Array([...A(64), ...B(64)]), 32);
  const state = await m.state();
  const other = await banked("tent", { adapter: "conv1x1" });
  throws(() => other.loadState(state), /adapter bn, 4 slots; this run has adapter conv1x1, 4 slots/);
  other.dispose();
  equal(m.slots.open().length, 3);
  m.reset();
  equal(m.slots.open().length, 0);
  await run(m, A(32, 5), 32);
  deepEqual(m.slots.open().length >= 1, true);
  m.dispose();
  equal(b.ledger.snapshot().live.adapters, slotsBefore, "every slot freed");
});
