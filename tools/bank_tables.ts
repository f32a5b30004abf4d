/** The markdown tables of docs/adapters.md from tools/bank_recurring.ts's runs. */
import type { RecurringRun } from "./bank_recurring.ts";

export const f1 = (v: number) => v.toFixed(1);

/** The markdown tables of docs/adapters.md. */
export function markdown(all: RecurringRun[], source: RecurringRun): string {
  const out: string[] = [];
  const runs = all.filter((r) => r.reversed === source.reversed);
  const header = (r: RecurringRun) =>
    `${
      r.adapter === "none"
        ? "no bank"
        : `bank ${r.adapter}${r.open === "window" ? "" : `, open from ${r.open}`}`
    }, ` +
    `chunk ${r.chunk}`;
  const visits = source.visits.map((v) => `${v.condition} r${v.round}`);
  out.push(
    `| run | ${visits.join(" | ")} | ${source.rounds.map((_, i) => `round ${i + 1}`).join(" | ")} | clean |`,
  );
  out.push(`|---|${visits.map(() => "---:").join("|")}|${source.rounds.map(() => "---:").join("|")}|---:|`);
  for (const r of [source, ...runs]) {
    out.push(
      `| ${r === source ? "source (no adaptation)" : header(r)} | ${
        r.visits.map((v) => f1(v.error)).join(" | ")
      } | ${r.rounds.map(f1).join(" | ")} | ${f1(r.clean)} |`,
    );
  }
  out.push(
    "",
    "Returns (a visit after the first round): error over its first 200 frames against the previous visit's last 200.",
    "",
  );
  out.push("| run | return | first 200 | previous last 200 | difference |", "|---|---|---:|---:|---:|");
  for (const r of runs) {
    r.visits.forEach((v) => {
      if (v.round < 2) return;
      const prev = r.visits.find((p) => p.condition === v.condition && p.round === v.round - 1)!;
      out.push(
        `| ${header(r)} | ${v.condition} r${v.round} | ${f1(v.first200)} | ${f1(prev.last200)} | ${
          f1(v.first200 - prev.last200)
        } |`,
      );
    });
  }
  out.push(
    "",
    "| run | selection (% of frames on their condition's slot) | slots by condition | switches | opened | merged | evicted | slots open | bytes per slot (measured / planned) | bank bytes (measured / planned for every slot) | ms/frame |",
  );
  out.push("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of runs) {
    const b = r.bank;
    out.push(
      `| ${header(r)} | ${r.selection === null ? "–" : f1(r.selection)} | ${
        r.slots ? Object.entries(r.slots).map(([c, s]) => `${c}→${s}`).join(", ") : "–"
      } | ${
        b
          ? `${b.switches} | ${b.opened} | ${b.merged} | ${b.evicted} | ${b.open} of ${b.slots} | ${b.bytes_per_slot} / ${b.predicted_bytes_per_slot} | ${b.bytes} / ${b.predicted_bytes}`
          : "– | – | – | – | – | – | –"
      } | ${f1(r.ms_per_frame)} |`,
    );
  }
  const controls = all.filter((r) => r.reversed !== source.reversed);
  if (controls.length) {
    out.push(
      "",
      "Round 2 against round 1 on the same digits: the control runs show each round's digits in the other round.",
      "",
      "| run | round 1 | round 2 | round 2 − round 1 | other order: round 1 | round 2 | round 2 − round 1 | mean of both orders |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (const c of controls) {
      const r = runs.find((x) => x.chunk === c.chunk && x.adapter === c.adapter && x.open === c.open);
      if (!r) continue;
      const d = (x: RecurringRun) => x.rounds[1] - x.rounds[0];
      out.push(
        `| ${header(r)} | ${f1(r.rounds[0])} | ${f1(r.rounds[1])} | ${f1(d(r))} | ${f1(c.rounds[0])} | ${
          f1(c.rounds[1])
        } | ${f1(d(c))} | ${f1((d(r) + d(c)) / 2)} |`,
      );
    }
  }
  return out.join("\n");
}
