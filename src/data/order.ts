/**
 * The order frames reach the model in: `iid` (a seeded shuffle), `sorted` (one class after another: a camera
 * that watches the same thing for minutes) or `dirichlet:ALPHA` (classes in temporally correlated bursts, as
 * the non-i.i.d. protocols of NOTE and RoTTA build them: the stream is cut into segments of about 64 frames and
 * each class spreads its frames over the segments with proportions drawn from Dirichlet(ALPHA): small ALPHA,
 * few long runs; large ALPHA, close to iid).
 */
import { Rng } from "../random.ts";

export type StreamOrder =
  | { kind: "given" }
  | { kind: "iid" }
  | { kind: "sorted" }
  | { kind: "dirichlet"; alpha: number };

export function parseOrder(text: string): StreamOrder {
  if (text === "given" || text === "iid" || text === "sorted") return { kind: text };
  const m = /^dirichlet:([0-9.eE+-]+)$/.exec(text);
  const alpha = m ? Number(m[1]) : NaN;
  if (m && Number.isFinite(alpha) && alpha > 0) return { kind: "dirichlet", alpha };
  throw new Error(`--order "${text}" is not given, iid, sorted or dirichlet:ALPHA with ALPHA > 0`);
}

function shuffle(a: Int32Array, rng: Rng): Int32Array {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A Gamma(shape, 1) variate (Marsaglia and Tsang 2000; shape < 1 boosted by U^(1/shape)). */
function gamma(shape: number, rng: Rng): number {
  if (shape < 1) return gamma(shape + 1, rng) * Math.pow(1 - rng.next(), 1 / shape);
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.next();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** The indices 0..n-1 in `order`; sorted and dirichlet need labels. Seeded: the same seed, the same stream. */
export function streamOrder(
  n: number,
  labels: ArrayLike<number> | undefined,
  order: StreamOrder,
  seed = 0,
): Int32Array {
  const rng = new Rng(seed);
  const all = Int32Array.from({ length: n }, (_, i) => i);
  if (order.kind === "given") return all;
  if (order.kind === "iid") return shuffle(all, rng);
  if (!labels) throw new Error(`--order ${order.kind} needs labels to know the classes (--labels)`);
  const byClass = new Map<number, number[]>();
  for (const i of shuffle(all, rng)) {
    const c = labels[i];
    if (!byClass.has(c)) byClass.set(c, []);
    byClass.get(c)!.push(i);
  }
  const classes = [...byClass.keys()].sort((a, b) => a - b);
  if (order.kind === "sorted") return Int32Array.from(classes.flatMap((c) => byClass.get(c)!));
  const segments = Math.max(1, Math.round(n / 64));
  const bins: number[][] = Array.from({ length: segments }, () => []);
  for (const c of classes) {
    const items = byClass.get(c)!;
    const g = Array.from({ length: segments }, () => gamma(order.alpha, rng));
    const total = g.reduce((s, v) => s + v, 0);
    // Cumulative proportions cut the class's frames into consecutive shares of the segments.
    let acc = 0, start = 0;
    g.forEach((v, s) => {
      acc += v / total;
      const end = s === segments - 1 ? items.length : Math.round(acc * items.length);
      bins[s].push(...items.slice(start, end));
      start = end;
    });
  }
  return Int32Array.from(bins.flatMap((b) => Array.from(shuffle(Int32Array.from(b), rng))));
}
