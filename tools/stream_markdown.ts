/** The markdown tables of docs/streaming.md from tools/stream_table.ts's runs. */
import type { StreamRun } from "./stream_table.ts";

const SHORT: Record<string, string> = {
  gaussian_noise: "gauss",
  shot_noise: "shot",
  impulse_noise: "impulse",
  speckle_noise: "speckle",
  gaussian_blur: "g.blur",
  motion_blur: "motion",
  defocus_blur: "defocus",
  fog: "fog",
  brightness: "bright",
  contrast: "contrast",
  pixelate: "pixel",
  jpeg_compression: "jpeg",
  elastic_transform: "elastic",
};

/** Means per (method, order, chunk), then per corruption at each order's largest chunk. */
export function streamMarkdown(runs: StreamRun[]): string {
  const methods = [...new Set(runs.map((r) => r.method))];
  const orders = [...new Set(runs.map((r) => r.order))];
  const chunks = [...new Set(runs.map((r) => r.chunk))].sort((a, b) => a - b);
  const get = (m: string, o: string, c: number) =>
    runs.find((r) => r.method === m && r.order === o && r.chunk === c);
  const cols = orders.flatMap((o) => chunks.map((c) => [o, c] as const));
  const out = [
    `| mean online error (%) | ${cols.map(([o, c]) => `${o}, chunk ${c}`).join(" | ")} | resets (${
      orders.join(" / ")
    }) |`,
    `|---|${cols.map(() => "---:").join("|")}|---:|`,
  ];
  for (const m of methods) {
    const cells = cols.map(([o, c]) => get(m, o, c)?.mean.toFixed(2) ?? "-");
    const resets = orders.map((o) => get(m, o, chunks.at(-1)!)?.resets ?? "-").join(" / ");
    out.push(`| ${m} | ${cells.join(" | ")} | ${resets} |`);
  }
  for (const o of orders) {
    const c = chunks.at(-1)!;
    const source = get("source", o, c);
    const names = Object.keys(runs.find((r) => r.order === o)!.errors);
    out.push(
      "",
      `Per corruption, order \`${o}\`, chunk ${c} (bold: more than 1 point worse than the unadapted model):`,
      "",
      `| method | ${names.map((n) => SHORT[n] ?? n).join(" | ")} | mean |`,
      `|---|${names.map(() => "---:").join("|")}|---:|`,
    );
    for (const m of methods) {
      const r = get(m, o, c);
      if (!r) continue;
      const cells = names.map((n) => {
        const v = r.errors[n].toFixed(1);
        return source && m !== "source" && r.errors[n] > source.errors[n] + 1 ? `**${v}**` : v;
      });
      out.push(`| ${m} | ${cells.join(" | ")} | ${r.mean.toFixed(2)} |`);
    }
  }
  return out.join("\n") + "\n";
}
