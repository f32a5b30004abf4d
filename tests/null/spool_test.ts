/**
 * The spool against hostile folders (issue 14): unreadable files, symbolic links, half-written files, huge
 * files and a results file that has grown without bound. A real Batcher stands in for the model; each test
 * image has its own gray level, so what reached a step is known exactly. Waits are on the spool's own pass
 * counters, never on the clock.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { encode } from "fast-png";
import { Batcher } from "../../src/service/batcher.ts";
import type { Prediction } from "../../src/service/engine.ts";
import { Spool, type SpoolOptions } from "../../src/service/spool.ts";

function png(level: number, size = 8): Uint8Array {
  const data = new Uint8Array(size * size).fill(level);
  return new Uint8Array(encode({ width: size, height: size, data, channels: 1, depth: 8 }));
}

interface Harness {
  spool: Spool;
  /** Gray level of every input that reached a step, in order. */
  adapted: number[];
  engine: { process: { skipped: number } };
  lines: () => Promise<Record<string, unknown>[]>;
  /** Waits until the spool has gone over the folder `n` more times without finding work. */
  quiet: (n?: number) => Promise<void>;
}

function harness(
  dir: string,
  options: Partial<SpoolOptions> = {},
  onStep?: (levels: number[]) => void,
): Harness {
  const adapted: number[] = [];
  let step = 0;
  const batcher = new Batcher<Float32Array, Prediction>({
    batch: 2,
    flushMs: 10,
    run: (xs) => {
      const levels = xs.map((x) => Math.round(x[0] * 255));
      adapted.push(...levels);
      onStep?.(levels);
      step++;
      return Promise.resolve(
        xs.map(() => ({ class: 1, probabilities: [0, 1], entropy: 0, step, batch: xs.length })),
      );
    },
  });
  const engine = { process: { skipped: 0 } };
  const spool = new Spool({
    dir,
    batcher,
    engine,
    spec: { shape: [1, 8, 8], preprocess: {} },
    pollMs: 5,
    settleMs: 0,
    log: () => {},
    ...options,
  });
  const results = options.results ?? `${dir}/results.jsonl`;
  const lines = async () =>
    (await Deno.readTextFile(results).catch(() => "")).split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const quiet = async (n = 3) => {
    const until = spool.idlePasses + n;
    while (spool.idlePasses < until && !spool.halted) await new Promise((r) => setTimeout(r, 5));
  };
  return { spool, adapted, engine, lines, quiet };
}

const ls = (path: string) => [...Deno.readDirSync(path)].map((e) => e.name).sort();

Deno.test("Spool: an unreadable, vanished or non-UTF-8-named file is recorded and the rest go on, none adapted twice (issue 14: unreadable spool file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  for (let i = 0; i < 6; i++) await Deno.writeFile(`${dir}/00${i}.png`, png(10 + i));
  // A name that is not UTF-8 cannot even be written from Deno: the shell makes it.
  const sh = await new Deno.Command("sh", {
    args: ["-c", `printf x > "${dir}/002b$(printf '\\377\\376').png"`],
  })
    .output();
  equal(sh.code, 0);
  const root = Deno.uid() === 0;
  if (!root) {
    await Deno.writeFile(`${dir}/003b.png`, png(99));
    await Deno.chmod(`${dir}/003b.png`, 0o000);
  } else console.log("running as root: a permission error cannot be made with chmod here");
  // 004.png vanishes while the first batch runs (after the folder was listed).
  const h = harness(dir, {}, () => Deno.remove(`${dir}/004.png`).catch(() => {}));
  await h.spool.start();
  await h.quiet(5);
  await h.spool.stop();
  deepEqual(
    [...h.adapted].sort((a, b) => a - b),
    [10, 11, 12, 13, 15],
    "each readable frame adapted exactly once",
  );
  const lines = await h.lines();
  const files = lines.map((l) => l.file as string);
  equal(new Set(files).size, files.length, "one line per file");
  ok(!files.includes("004.png"), "a vanished file has nothing to record");
  const lossy = lines.find((l) => (l.file as string).includes("\uFFFD"))!;
  ok(/not valid UTF-8/.test(lossy.error as string), JSON.stringify(lossy));
  if (!root) {
    ok(
      /cannot be read/.test(lines.find((l) => l.file === "003b.png")?.error as string),
      JSON.stringify(lines),
    );
    ok(ls(`${dir}/failed`).includes("003b.png.reason"));
  }
  deepEqual(ls(`${dir}/done`), ["000.png", "001.png", "002.png", "003.png", "005.png"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Spool: symbolic links are never followed: a linked input, a planted reason link, a linked done/ (issue 14: symlinks)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  const outside = await Deno.makeTempDir({ prefix: "edgetrain-outside-" });
  await Deno.writeFile(`${outside}/img.png`, png(50));
  await Deno.writeTextFile(`${outside}/secret.txt`, "keep me");
  await Deno.mkdir(`${dir}/failed`);
  await Deno.symlink(`${outside}/img.png`, `${dir}/001.png`);
  await Deno.symlink(`${outside}/secret.txt`, `${dir}/failed/002.txt.reason`);
  await Deno.writeTextFile(`${dir}/002.txt`, "not an image");
  await Deno.writeFile(`${dir}/003.png`, png(30));
  const h = harness(dir);
  await h.spool.start();
  await h.quiet();
  await h.spool.stop();
  deepEqual(h.adapted, [30], "the linked image was not read");
  equal(
    await Deno.readTextFile(`${outside}/secret.txt`),
    "keep me",
    "nothing written through the planted link",
  );
  ok(Deno.lstatSync(`${dir}/failed/001.png`).isSymlink, "the link itself was moved, its target left alone");
  ok(Deno.statSync(`${outside}/img.png`).isFile);
  ok(/symbolic link/.test(await Deno.readTextFile(`${dir}/failed/001.png.reason`)));
  ok(ls(`${dir}/failed`).includes("002.txt~1.reason"), ls(`${dir}/failed`).join());

  // A done/ that links out of the spool: the spool refuses to start rather than move frames through it.
  await Deno.remove(`${dir}/done`, { recursive: true });
  await Deno.symlink(outside, `${dir}/done`);
  await Deno.writeFile(`${dir}/004.png`, png(40));
  await rejects(harness(dir).spool.start(), /done" is a symbolic link/);
  ok(Deno.statSync(`${dir}/004.png`).isFile, "no frame moved out");
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(outside, { recursive: true });
});

Deno.test("Spool: a file is taken only when complete; extension and size are checked before reading (issue 14: half-written files)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  const h = harness(dir, { settleMs: 2000, maxFileBytes: 1 << 20 });
  await h.spool.start();
  const full = png(77);
  const half = Math.floor(full.length / 2);
  await Deno.writeFile(`${dir}/a.png`, full.subarray(0, half));
  await Deno.writeFile(`${dir}/.b.png`, full.subarray(0, half)); // the documented protocol: hidden, then renamed
  await Deno.writeFile(`${dir}/c.png.tmp`, full.subarray(0, half));
  while (!h.spool.settling.includes("a.png")) await new Promise((r) => setTimeout(r, 5));
  await Deno.writeFile(`${dir}/a.png`, full.subarray(half), { append: true }); // `>>` in a second part
  await Deno.writeFile(`${dir}/.b.png`, full.subarray(half), { append: true });
  await Deno.rename(`${dir}/.b.png`, `${dir}/b.png`);
  // 3 GiB without using the disk (sparse): read whole, either would exhaust memory.
  for (const name of ["video.mp4", "huge.png"]) {
    const f = await Deno.open(`${dir}/${name}`, { write: true, create: true });
    await f.truncate(3 * 2 ** 30);
    f.close();
  }
  while ((await h.lines()).length < 4) await new Promise((r) => setTimeout(r, 5));
  await h.spool.stop();
  const lines = await h.lines();
  deepEqual(lines.map((l) => l.file).sort(), ["a.png", "b.png", "huge.png", "video.mp4"]);
  deepEqual(h.adapted, [77, 77], "a.png taken once complete, and b.png");
  ok(lines.filter((l) => l.file === "a.png" || l.file === "b.png").every((l) => l.error === undefined));
  ok(/not a \.png/.test(lines.find((l) => l.file === "video.mp4")!.error as string));
  ok(/3221225472 bytes, more than the limit/.test(lines.find((l) => l.file === "huge.png")!.error as string));
  ok(Deno.statSync(`${dir}/c.png.tmp`).isFile, "*.tmp is left to its writer");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Spool: results.jsonl is rotated by size and count and never read whole at start (issue 14: results.jsonl)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  // A 3 GiB results file (sparse) whose last line names a file that a crash left unmoved.
  const results = `${dir}/results.jsonl`;
  const f = await Deno.open(results, { write: true, create: true });
  await f.truncate(3 * 2 ** 30 - 1);
  f.close();
  await Deno.writeTextFile(results, '\n{"file":"old.png","class":1}\n', { append: true });
  await Deno.writeFile(`${dir}/old.png`, png(1));
  for (let i = 0; i < 30; i++) await Deno.writeFile(`${dir}/${String(i).padStart(3, "0")}.png`, png(100 + i));
  const h = harness(dir, { resultsLog: { maxBytes: 1024, keep: 2 } });
  await h.spool.start();
  await h.quiet();
  await h.spool.stop();
  ok(ls(`${dir}/done`).includes("old.png"), "the recorded file was moved without a step");
  equal(h.adapted.length, 30, "old.png was not adapted on again");
  const names = ls(dir).filter((n) => n.startsWith("results"));
  deepEqual(names, ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]);
  for (const n of names) ok(Deno.statSync(`${dir}/${n}`).size <= 1024, `${n} is within the limit`);
  const all = [
    ...(await Deno.readTextFile(`${dir}/results.jsonl.2`)).split("\n"),
    ...(await Deno.readTextFile(`${dir}/results.jsonl.1`)).split("\n"),
    ...(await h.lines()).map((l) => JSON.stringify(l)),
  ].filter(Boolean);
  ok(all.length < 30 && all.length >= 12, `${all.length} newest lines kept`);
  equal(JSON.parse(all.at(-1)!).file, "029.png");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Spool: on a full disk nothing is adapted twice, and the files are recorded once space returns (issue 14: full disk)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-spool-" });
  const mounted = (await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=256k", "tmpfs", dir],
    stderr: "null",
  }).output().catch(() => null))?.code === 0;
  if (!mounted) {
    console.log("cannot mount a tmpfs here: the spool's full-disk case is not exercised");
    await Deno.remove(dir, { recursive: true });
    return;
  }
  try {
    for (let i = 0; i < 3; i++) await Deno.writeFile(`${dir}/00${i}.png`, png(20 + i));
    await Deno.mkdir(`${dir}/done`);
    await Deno.mkdir(`${dir}/failed`);
    // Fill the disk: the write fails with ENOSPC once the file has taken every free block.
    await Deno.writeFile(`${dir}/.filler`, new Uint8Array(1 << 20)).catch(() => {});
    const logs: string[] = [];
    const h = harness(dir, { log: (m) => logs.push(m) });
    await h.spool.start();
    while (!logs.some((l) => /No space left on device/.test(l))) await new Promise((r) => setTimeout(r, 5));
    const passes = h.spool.passes;
    while (h.spool.passes < passes + 2) await new Promise((r) => setTimeout(r, 5));
    await Deno.remove(`${dir}/.filler`);
    while ((await h.lines()).length < 3) await new Promise((r) => setTimeout(r, 5));
    await h.quiet();
    await h.spool.stop();
    deepEqual(
      [...h.adapted].sort((a, b) => a - b),
      [20, 21, 22],
      "each frame adapted once, full disk or not",
    );
    deepEqual((await h.lines()).map((l) => l.file), ["000.png", "001.png", "002.png"]);
    deepEqual(ls(`${dir}/done`), ["000.png", "001.png", "002.png"]);
  } finally {
    await new Deno.Command("umount", { args: [dir] }).output();
    await Deno.remove(dir, { recursive: true });
  }
});
