import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Batcher, BatcherClosedError } from "../../src/service/batcher.ts";
import { Histogram, MetricsText } from "../../src/service/metrics.ts";
import { parseListen } from "../../src/service/server.ts";

/** A batcher whose run() records each batch and the peak number of concurrent runs. */
function recording(batch: number, flushMs: number, delayMs = 5) {
  const batches: number[][] = [];
  let active = 0, peak = 0;
  const b = new Batcher<number, number>({
    batch,
    flushMs,
    run: async (items) => {
      active++;
      peak = Math.max(peak, active);
      batches.push(items);
      await new Promise((r) => setTimeout(r, delayMs));
      active--;
      if (items.includes(-1)) throw new Error("bad batch");
      return items.map((x) => x * 10);
    },
  });
  return { b, batches, peak: () => peak };
}

Deno.test("Batcher.submit() runs full batches at once, in order, one at a time", async () => {
  // flushMs is huge: only full batches (or close) can run.
  const { b, batches, peak } = recording(4, 1e9);
  const out = await Promise.all(Array.from({ length: 12 }, (_, i) => b.submit(i)));
  deepEqual(out, Array.from({ length: 12 }, (_, i) => i * 10));
  deepEqual(batches, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]);
  equal(peak(), 1, "never two steps at once");
});

Deno.test("Batcher flushes a partial batch once its oldest item waited flushMs", async () => {
  const { b, batches } = recording(8, 30);
  const t0 = performance.now();
  const out = await Promise.all([b.submit(1), b.submit(2), b.submit(3)]);
  deepEqual(out, [10, 20, 30]);
  deepEqual(batches, [[1, 2, 3]]);
  ok(performance.now() - t0 >= 29, "not before the flush deadline");
});

Deno.test("Batcher fills the next batch with items that arrive while a step runs", async () => {
  const { b, batches } = recording(4, 1e9, 20);
  const first = [0, 1, 2, 3].map((i) => b.submit(i));
  await new Promise((r) => setTimeout(r, 5)); // the first batch is running now
  const second = [4, 5, 6, 7].map((i) => b.submit(i));
  await Promise.all([...first, ...second]);
  deepEqual(batches, [[0, 1, 2, 3], [4, 5, 6, 7]]);
});

Deno.test("Batcher.exclusive() runs between batches; a failing batch rejects only its own items", async () => {
  const { b, batches } = recording(2, 1e9);
  const order: string[] = [];
  const a = [b.submit(1), b.submit(2)];
  const task = b.exclusive(() => {
    order.push(`task after ${batches.length} batches`);
    return Promise.resolve("done");
  });
  const bad = [b.submit(-1), b.submit(3)];
  const c = [b.submit(4), b.submit(5)];
  deepEqual(await Promise.all(a), [10, 20]);
  equal(await task, "done");
  deepEqual(order, ["task after 1 batches"]);
  for (const p of bad) await rejects(p, /bad batch/);
  deepEqual(await Promise.all(c), [40, 50]);
});

Deno.test("Batcher.close() runs queued partial batches, then refuses new items", async () => {
  const { b, batches } = recording(10, 1e9);
  const p = [b.submit(1), b.submit(2)];
  await b.close();
  deepEqual(await Promise.all(p), [10, 20]);
  deepEqual(batches, [[1, 2]]);
  await rejects(b.submit(3), BatcherClosedError);
});

Deno.test("MetricsText renders Prometheus text: HELP/TYPE, labels escaped, cumulative histogram buckets", () => {
  const h = new Histogram([0.1, 1]);
  for (const v of [0.05, 0.5, 0.7, 3]) h.observe(v);
  equal(h.quantile(0.5), 1);
  const text = new MetricsText()
    .counter("x_total", "Things.", [[{ route: 'a"b\\c' }, 2]])
    .gauge("g", "A gauge.", NaN)
    .histogram("lat_seconds", "Latency.", h)
    .toString();
  const want = [
    "# HELP x_total Things.",
    "# TYPE x_total counter",
    'x_total{route="a\\"b\\\\c"} 2',
    "# HELP g A gauge.",
    "# TYPE g gauge",
    "g NaN",
    "# HELP lat_seconds Latency.",
    "# TYPE lat_seconds histogram",
    'lat_seconds_bucket{le="0.1"} 1',
    'lat_seconds_bucket{le="1"} 3',
    'lat_seconds_bucket{le="+Inf"} 4',
    "lat_seconds_sum 4.25",
    "lat_seconds_count 4",
    "",
  ];
  equal(text, want.join("\n"));
});

Deno.test("parseListen() accepts HOST:PORT and [IPv6]:PORT and rejects the rest", () => {
  deepEqual(parseListen("127.0.0.1:8417"), { hostname: "127.0.0.1", port: 8417 });
  deepEqual(parseListen("[::1]:0"), { hostname: "::1", port: 0 });
  for (const bad of ["8417", "host:", "h:70000", "::1:80"]) {
    let threw = false;
    try {
      parseListen(bad);
    } catch {
      threw = true;
    }
    ok(threw, bad);
  }
});
