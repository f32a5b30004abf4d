import { deepEqual, equal, ok } from "node:assert/strict";
import {
  type FrameMoments,
  type Key,
  keyDistance,
  pool,
  robustPool,
  symmetricKl,
} from "../../src/methods/bank/keys.ts";
import { DriftSelector } from "../../src/methods/bank/selector.ts";
import { Rng } from "../../src/random.ts";

const C = 4;

/** n frames of a domain whose channel values have mean `mean` and std `std` (64 pixels a frame). */
function frames(n: number, mean: number, std: number, seed: number): FrameMoments {
  const rng = new Rng(seed);
  const mu = new Float32Array(n * C), sq = new Float32Array(n * C);
  for (let i = 0; i < n * C; i++) {
    const px = rng.normals(64, std).map((v) => v + mean);
    mu[i] = px.reduce((s, v) => s + v, 0) / 64;
    sq[i] = px.reduce((s, v) => s + v * v, 0) / 64;
  }
  return { n, channels: C, mu, sq };
}

const row = (m: FrameMoments, i: number): FrameMoments => ({
  n: 1,
  channels: C,
  mu: m.mu.slice(i * C, (i + 1) * C),
  sq: m.sq.slice(i * C, (i + 1) * C),
});

const keyOf = (mean: number, std: number): Key => ({
  count: 2048,
  mu: new Float32Array(C).fill(mean),
  sq: new Float32Array(C).fill(std * std + mean * mean),
});

Deno.test("symmetricKl() is zero on the same Gaussian, symmetric, and the closed form of two 1-D Gaussians", () => {
  const a = keyOf(1, 2), b = keyOf(0, 1);
  equal(keyDistance(a, a), 0);
  ok(Math.abs(keyDistance(a, b) - keyDistance(b, a)) < 1e-6);
  // KL(p||q) + KL(q||p) for N(1, 4) and N(0, 1): (4 + 1) / 2 + (1 + 1) / 8 - 1 = 1.75 per channel.
  ok(
    Math.abs(
      symmetricKl(Float32Array.of(1), Float32Array.of(4), {
        count: 1,
        mu: Float32Array.of(0),
        sq: Float32Array.of(1),
      }) - 1.75,
    ) < 1e-6,
  );
});

Deno.test("pool() pools frames exactly: variance over every pixel of every frame", () => {
  // Two frames of constant pixels 0 and 2: the window's variance is 1, each frame's own is 0.
  const m: FrameMoments = { n: 2, channels: 1, mu: Float32Array.of(0, 2), sq: Float32Array.of(0, 4) };
  const k = pool(m);
  deepEqual([k.mu[0], k.sq[0] - k.mu[0] ** 2], [1, 1]);
});

Deno.test("robustPool() leaves one odd frame out of a window's key", () => {
  const m = frames(16, 0, 1, 1);
  const odd = frames(1, 5, 3, 2);
  m.mu.set(odd.mu, 7 * C);
  m.sq.set(odd.sq, 7 * C);
  const clean = keyOf(0, 1);
  ok(keyDistance(pool(m), clean) > 0.3, "the plain window is pulled away by the odd frame");
  ok(keyDistance(robustPool(m), clean) < 0.02, "the robust key is not");
});

function selector(): DriftSelector {
  const s = new DriftSelector(C, { window: 16, confirm: 4, threshold: 0.05 });
  s.keys.set(0, keyOf(0, 1));
  return s;
}

/** Feeds m to s frame by frame (chunk 1), carrying out each decision; returns the decisions that moved. */
function feed(s: DriftSelector, m: FrameMoments, active: { id: number; next: number }) {
  const moves: { at: number; action: string; to: number }[] = [];
  for (let i = 0; i < m.n; i++) {
    const d = s.observe(row(m, i), active.id);
    if (d.action === "switch") {
      active.id = d.to;
      s.moved(d.to);
      moves.push({ at: i, action: "switch", to: d.to });
    } else if (d.action === "open") {
      active.id = active.next++;
      s.moved(active.id, d.key);
      moves.push({ at: i, action: "open", to: active.id });
    }
  }
  return moves;
}

Deno.test("DriftSelector at chunk 1: one odd frame among a domain's moves nothing", () => {
  const s = selector(), active = { id: 0, next: 1 };
  const m = frames(64, 0, 1, 3);
  const odd = frames(1, 5, 3, 4);
  m.mu.set(odd.mu, 30 * C);
  m.sq.set(odd.sq, 30 * C);
  deepEqual(feed(s, m, active), []);
  equal(active.id, 0);
});

Deno.test("DriftSelector at chunk 1: opens after a window of a new domain, returns to a known one within a few frames", () => {
  const s = selector(), active = { id: 0, next: 1 };
  // A new domain (mean 2, std 1.5): a slot opens once `window` frames after it was first seen.
  const a = feed(s, frames(48, 2, 1.5, 5), active);
  equal(a.length, 1);
  equal(a[0].action, "open");
  ok(a[0].at >= 16 && a[0].at <= 20, `opened at frame ${a[0].at}`);
  // Back to the source: a switch (not an open) after about `confirm` frames.
  const b = feed(s, frames(32, 0, 1, 6), active);
  deepEqual(b.map((x) => [x.action, x.to]), [["switch", 0]]);
  ok(b[0].at <= 5, `switched back at frame ${b[0].at}`);
  // And again to the new domain's slot.
  const c = feed(s, frames(32, 2, 1.5, 7), active);
  deepEqual(c.map((x) => [x.action, x.to]), [["switch", 1]]);
  ok(c[0].at <= 5, `switched at frame ${c[0].at}`);
});

Deno.test("DriftSelector at chunk 64 decides on the chunk itself, before it is answered", () => {
  const s = selector();
  const d = s.observe(frames(64, 2, 1.5, 8), 0);
  equal(d.action, "open");
  s.moved(1, d.action === "open" ? d.key : undefined);
  equal(s.observe(frames(64, 0, 1, 9), 1).action, "switch");
});

Deno.test("DriftSelector's state() and loadState() continue exactly", () => {
  const a = selector(), active = { id: 0, next: 1 };
  feed(a, frames(40, 2, 1.5, 10), active);
  const b = new DriftSelector(C, { window: 16, confirm: 4, threshold: 0.05 });
  b.loadState("s", a.state("s"));
  const next = frames(8, 0, 1, 11);
  for (let i = 0; i < next.n; i++) {
    deepEqual(b.observe(row(next, i), active.id), a.observe(row(next, i), active.id));
  }
  deepEqual(b.state("s"), a.state("s"));
});
