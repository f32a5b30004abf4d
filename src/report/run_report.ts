/**
 * `adapt --report FILE.html`: the run's report page (html.ts) from its timeline and its JSON report.
 */
import type { AdaptReport } from "../methods/run.ts";
import { writeFileAtomic } from "../service/checkpoint.ts";
import { renderReport, type ReportInfo } from "./html.ts";
import type { TimelineData } from "./timeline.ts";

export interface RunFacts {
  model: string;
  backend: string;
  chunk: number;
  memory: number;
  threshold: number | null;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

/** The page's facts and figures for an adapt run. */
export function runReportInfo(r: AdaptReport, f: RunFacts): ReportInfo {
  const a = r.adapters;
  const cards: [string, string][] = [];
  if (r.error !== null) cards.push(["online error, all labelled frames", `${(100 * r.error).toFixed(2)}%`]);
  cards.push(["mean entropy (nats)", r.mean_entropy.toFixed(3)]);
  if (a) {
    cards.push(["adapter slots open (of the bank's)", `${a.open} / ${a.slots}`]);
    cards.push([
      "switches · opened · merged · evicted",
      `${a.switches} · ${a.opened} · ${a.merged} · ${a.evicted}`,
    ]);
  }
  cards.push(["learning steps", String(r.adaptation_steps)]);
  cards.push(["peak device memory (ledger)", mib(r.peak_bytes)]);
  const facts: [string, string][] = [
    ["method", r.method + (a ? ` with an adapter bank (${a.adapter})` : "")],
    ["model", f.model],
    ["frames", `${r.n} in chunks of ${f.chunk}`],
    ["memory bank", `${f.memory} frames`],
    ["protocol", r.protocol],
    ["backend", f.backend],
  ];
  return {
    title: `Adaptation report: ${r.method}${a ? " + adapter bank" : ""}`,
    facts,
    cards,
    segments: r.domains.map((d) => ({
      name: d.images,
      frames: d.n,
      error: d.error,
      ...(a ? { slot: d.slot ?? null } : {}),
    })),
    threshold: f.threshold,
    generated: `written by edgetrain adapt on ${new Date().toISOString()}`,
  };
}

export async function writeRunReport(
  path: string,
  t: TimelineData,
  r: AdaptReport,
  f: RunFacts,
): Promise<void> {
  const info = runReportInfo(r, f);
  info.classes = undefined;
  await writeFileAtomic(path, new TextEncoder().encode(renderReport(info, t)));
}
