/**
 * The TTA results table of issue #4: source / bn / tent / eata / sar / ecotta errors on the corrupted MNIST
 * streams (severity 5), in the continual protocol (one stream through all corruptions, no reset), the
 * episodic one (reset before every batch) and per-corruption resets (TENT's protocol, used for the PyTorch
 * parity check). Writes JSON and a markdown table.
 *
 *   deno run -A tools/tta_table.ts --model fixtures/models/mnist_irb.onnx --streams fixtures/streams/mnist_c \
 *     --batch 64 --backend cpu --out docs/tta_results
 *
 * --merge OLD.json keeps the rows of an earlier run. With --torch tools/parity/torch_results.json (from tools/parity/tent_torch.py) it adds the PyTorch columns
 * and the parity verdict (tent within 1 point, bn within 0.5 on every corruption).
 */
import { parseArgs } from "node:util";
import { loadImages } from "../src/data/images.ts";
import { loadPreprocessSidecar } from "../src/data/preprocess.ts";
import { openBackend, openModel } from "../src/cli/common.ts";
import { createMethod } from "../src/methods/registry.ts";
import { type Domain, type Protocol, runAdaptation } from "../src/methods/run.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
    streams: { type: "string", default: "fixtures/streams/mnist_c" },
    methods: { type: "string", default: "source,bn,tent,eata,sar,ecotta" },
    protocols: { type: "string", default: "per-domain,continual" },
    batch: { type: "string", default: "64" },
    backend: { type: "string", default: "cpu" },
    torch: { type: "string" },
    merge: { type: "string" },
    out: { type: "string", default: "docs/tta_results" },
  },
}).values;

const manifest = JSON.parse(await Deno.readTextFile(`${args.streams}/manifest.json`));
const domains: Domain[] = [];
for (const f of manifest.files as { corruption: string; images: string; labels: string }[]) {
  if (f.corruption === "clean") continue;
  const set = await loadImages(`${args.streams}/${f.images}`, { labels: `${args.streams}/${f.labels}` });
  domains.push({ name: f.corruption, set });
}
const backend = await openBackend(args.backend);
const pre = (await loadPreprocessSidecar(args.model!)) ?? {};
const batch = Number(args.batch);
const protocolOf: Record<string, Protocol> = {
  "per-domain": "reset-each-domain",
  continual: "continual",
};
type Row = {
  method: string;
  protocol: string;
  error: number;
  domains: Record<string, number>;
  resets: number;
  ms_per_batch: number;
  peak_saved_bytes: number;
};
// --merge: rows of an earlier run (e.g. before a method existed) are kept and not recomputed.
const rows: Row[] = args.merge ? JSON.parse(await Deno.readTextFile(args.merge)).rows : [];
for (const protocol of args.protocols!.split(",")) {
  for (const method of args.methods!.split(",")) {
    if (rows.some((r) => r.method === method && r.protocol === protocol)) continue;
    if ((method === "source" || method === "bn") && protocol !== "per-domain") {
      // Nothing is learned: every protocol gives the same numbers.
      const same = rows.find((r) => r.method === method);
      if (same) {
        rows.push({ ...same, protocol });
        continue;
      }
    }
    const model = await openModel(backend, args.model);
    const m = await createMethod(method, model.module);
    const r = await runAdaptation(backend, m, domains, {
      batch,
      protocol: protocolOf[protocol],
      preprocess: pre,
    });
    m.dispose();
    model.module.dispose();
    rows.push({
      method,
      protocol,
      error: r.error!,
      domains: Object.fromEntries(r.domains.map((d) => [d.images, d.error!])),
      resets: r.resets,
      ms_per_batch: r.ms_per_batch,
      peak_saved_bytes: r.peak_saved_bytes,
    });
    console.error(`${protocol} ${method}: ${(100 * r.error!).toFixed(2)}%`);
  }
}

const torch = args.torch ? JSON.parse(await Deno.readTextFile(args.torch)) : null;
// tools/parity/tent_torch.py names streams by file ("fog-s5"), the manifest by corruption ("fog").
const torchError = (method: string, name: string): number =>
  torch.errors[method][name] ?? torch.errors[method][`${name}-s5`];
const pct = (v: number | undefined) => (v === undefined ? "–" : (100 * v).toFixed(1));
const names = domains.map((d) => d.name);
let md =
  `Errors (%) on MNIST test digits (${domains[0].set.n} per corruption, severity 5), batch ${batch}, ` +
  `backend ${backend.name}.\n\n`;
for (const protocol of args.protocols!.split(",")) {
  md += `### ${protocol}\n\n| method | mean | ${names.join(" | ")} |\n|---|---|${
    names.map(() => "---").join("|")
  }|\n`;
  for (const r of rows.filter((r) => r.protocol === protocol)) {
    md += `| ${r.method} | ${pct(r.error)} | ${names.map((n) => pct(r.domains[n])).join(" | ")} |\n`;
  }
  if (protocol === "per-domain" && torch) {
    for (const method of ["source", "bn", "tent"]) {
      const t = torch.errors[method];
      if (!t) continue;
      const mean = names.reduce((s, n) => s + torchError(method, n), 0) / names.length;
      md += `| pytorch ${method} | ${pct(mean)} | ${
        names.map((n) => pct(torchError(method, n))).join(" | ")
      } |\n`;
    }
  }
  md += "\n";
}
let parity: Record<string, unknown> | null = null;
if (torch) {
  const gap = (method: string) => {
    const ours = rows.find((r) => r.method === method && r.protocol === "per-domain");
    return ours ? Math.max(...names.map((n) => Math.abs(ours.domains[n] - torchError(method, n)))) : null;
  };
  parity = { tent_max_gap_points: 100 * (gap("tent") ?? NaN), bn_max_gap_points: 100 * (gap("bn") ?? NaN) };
  md += `PyTorch parity (per-corruption reset): largest |edgetrain - PyTorch| is ` +
    `${(parity.tent_max_gap_points as number).toFixed(2)} points for tent (target 1) and ` +
    `${(parity.bn_max_gap_points as number).toFixed(2)} for bn (target 0.5).\n`;
}
await Deno.writeTextFile(
  `${args.out}.json`,
  JSON.stringify({ batch, backend: backend.name, rows, parity }, null, 2) + "\n",
);
await Deno.writeTextFile(`${args.out}.md`, md);
console.log(md);
