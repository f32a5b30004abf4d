import { deepEqual, equal, ok } from "node:assert/strict";
import { Ledger } from "../../src/memory/ledger.ts";
import type { ChunkEvent } from "../../src/methods/stream.ts";
import { renderReport, shortName } from "../../src/report/html.ts";
import { trailingError } from "../../src/report/svg.ts";
import { Timeline } from "../../src/report/timeline.ts";

/** A chunk event as the stream loop sends it (only what the timeline reads). */
function chunk(rows: number, entropy: number, active: number, drift: number | null): ChunkEvent {
  return {
    domain: 0,
    chunk: 0,
    rows,
    ms: 1,
    result: { logits: new Float32Array(0), classes: 10, entropy, updated: false, used: 0, reset: false },
    stats: {
      predictions: new Int32Array(0),
      entropies: new Float64Array(0),
      probs: new Float64Array(0),
      meanEntropy: 0,
    },
    adapters: { active, distance: drift, drift, events: [] },
  };
}

Deno.test("Timeline halves its resolution past maxPoints and keeps every frame, error and slot", () => {
  const ledger = new Ledger();
  const t = new Timeline(ledger, { maxPoints: 8 });
  const o = t.observer();
  for (let i = 0; i < 100; i++) {
    ledger.allocated(1000, "activations");
    o.chunk!(chunk(2, 0.5, i < 50 ? 1 : 2, i === 50 ? 3 : 0.01));
    ledger.freed(1000, "activations");
    o.scored({ wrong: i % 2, labeled: 2 });
  }
  const d = t.data();
  ok(d.points.length <= 8, `${d.points.length} points`);
  equal(d.frames, 200);
  equal(d.points.reduce((s, p) => s + p.frames, 0), 200);
  equal(d.points.reduce((s, p) => s + p.wrong, 0), 50);
  equal(d.points.reduce((s, p) => s + p.labeled, 0), 200);
  deepEqual([d.points[0].slot, d.points.at(-1)!.slot], [1, 2]);
  ok(d.points.some((p) => p.drift === 3), "the largest drift of a bucket survives");
  ok(d.points.every((p) => p.bytes === 1000), "each bucket's high-water mark, not what was live after it");
});

Deno.test("trailingError() is the error over the last 100 labelled frames at each point", () => {
  const pts = Array.from({ length: 4 }, (_, i) => ({
    frame: 50 * i,
    frames: 50,
    wrong: i < 2 ? 50 : 0,
    labeled: 50,
    entropy: 0,
    drift: null,
    slot: -1,
    bytes: 0,
    slotBytes: 0,
  }));
  deepEqual(trailingError(pts), [100, 100, 50, 0]);
});

Deno.test("renderReport() is one self-contained page: nothing fetched, data and chart inline", () => {
  const t = new Timeline(new Ledger());
  const o = t.observer();
  o.domain({ name: "data/fog-s5-images-idx3-ubyte.gz" });
  for (let i = 0; i < 10; i++) o.chunk!(chunk(4, 1, 1, 0.02));
  const page = renderReport({ title: "t <&>", facts: [["model", "m.onnx"]], cards: [["x", "1"]] }, t.data());
  ok(page.startsWith("<!doctype html>"));
  ok(page.includes("<title>t &lt;&amp;&gt;</title>"), "text is escaped");
  ok(!/(src|href)=/.test(page), "no external resource");
  ok(!/https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(page), "no network address");
  ok(page.includes(">fog-s5<"), "segments are labelled by their short name");
  equal(shortName("a/b/contrast-s5-images-idx3-ubyte.gz"), "contrast-s5");
});
