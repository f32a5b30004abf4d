/**
 * The report page in a real browser: Debian's headless chromium loads a page made from a real adapter-bank
 * run, runs its script, and dumps the DOM it drew. The test fails on any console message (the page logs
 * nothing when it works), on a script error, or on a chart without lines. CI installs chromium (.ci/run) and
 * sets EDGETRAIN_REQUIRE_CHROMIUM=1, so there a missing browser fails instead of skipping.
 */
import { ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { withBank } from "../../src/methods/bank/mod.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { runAdaptation } from "../../src/methods/run.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { Rng } from "../../src/random.ts";
import { renderReport } from "../../src/report/html.ts";
import { runReportInfo } from "../../src/report/run_report.ts";
import { Timeline } from "../../src/report/timeline.ts";
import { findChromium, headless } from "../../tools/chromium.ts";

const chromium = findChromium();
const required = Deno.env.get("EDGETRAIN_REQUIRE_CHROMIUM") === "1";
if (!chromium && !required) {
  console.warn(
    "SKIPPED report_browser_test: no chromium on PATH (apt-get install -y chromium; CI installs it and requires it)",
  );
}

/** A report page from a real run: three synthetic domains through tent with an adapter bank, labelled. */
async function reportPage(): Promise<string> {
  const b = new CpuBackend();
  const net = buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1], [4, 16, 1, 2]],
    lastChannels: 32,
    seed: 3,
  });
  const domain = (name: string, mean: number, std: number, seed: number) => {
    const n = 96, rng = new Rng(seed);
    const pixels = new Uint8Array(n * 256).map(() =>
      Math.max(0, Math.min(255, 128 + 40 * (mean + std * rng.normal())))
    );
    return {
      name,
      set: {
        n,
        channels: 1,
        height: 16,
        width: 16,
        pixels,
        labels: Int32Array.from({ length: n }, (_, i) => i % 10),
      },
    };
  };
  const domains = [
    domain("day", 0, 1, 1),
    domain("night", -2, 0.3, 2),
    domain("fog", 1.5, 0.5, 3),
    domain("day", 0, 1, 4),
  ];
  const m = await createMethod(
    "tent",
    net,
    withBank({ stream: { capacity: 16 } }, { slots: 4, adapter: "bn" }),
  );
  const timeline = new Timeline(b.ledger);
  const report = await runAdaptation(b, m, domains, {
    batch: 4,
    preprocess: { mean: [0.5], std: [0.25] },
    observers: [timeline.observer()],
  });
  const info = runReportInfo(report, {
    model: "irb (test)",
    backend: "cpu",
    chunk: 4,
    memory: 16,
    threshold: 0.1,
  });
  info.classes = 10;
  m.dispose();
  return renderReport(info, timeline.data());
}

Deno.test({
  name: "renderReport() draws in headless chromium: lines in every panel, slot bands, no console message",
  ignore: !chromium && !required,
  async fn() {
    ok(chromium, "chromium is required here (EDGETRAIN_REQUIRE_CHROMIUM=1) but not on PATH");
    const dir = await Deno.makeTempDir({ prefix: "edgetrain-report-" });
    try {
      const page = `${dir}/report.html`;
      await Deno.writeTextFile(page, await reportPage());
      const out = await headless(chromium!, page, [
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
      ]);
      const dom = out.stdout, log = out.stderr;
      ok(out.success, `chromium exited with ${out.code}:\n${log}`);
      const consoleLines = log.split("\n").filter((l) => /CONSOLE/.test(l));
      ok(consoleLines.length === 0, `the page logged:\n${consoleLines.join("\n")}`);
      ok(!/data-errors=/.test(dom), `script errors: ${/data-errors="([^"]*)"/.exec(dom)?.[1]}`);
      const drawn = Number(/data-drawn="(\d+)"/.exec(dom)?.[1] ?? -1);
      const points = Number(/data-points="(\d+)"/.exec(dom)?.[1] ?? -1);
      ok(drawn >= 4, `the script found ${drawn} drawn lines (error, entropy, drift, memory expected)`);
      ok(points >= 20, `${points} timeline points`);
      ok((dom.match(/class="band"/g) ?? []).length >= 3, "active-slot bands");
      ok(/slot 0 \(source\)/.test(dom), "the slot legend");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
