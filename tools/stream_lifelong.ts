/**
 * Recurring test-time adaptation (PeTTA, NeurIPS 2024): every corruption in sequence, the whole sequence
 * repeated for several rounds, one continual run — against the same method reset to the source model at every
 * corruption (the periodic reset). For docs/streaming.md:
 *
 *   deno run -A tools/stream_lifelong.ts [--method rotta] [--rounds 5] [--n 500] [--chunk 64] [--bank-slots N]
 *     [--bank-threshold X] [--backend cpu|wasm] [--json FILE]
 *
 * Prints the mean online error of each round for both runs.
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWasmBackend } from "../src/backend/wasm/mod.ts";
import { CORRUPTIONS } from "../src/data/corruptions.ts";
import { corruptedDomains, runStream } from "./stream_table.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "fixtures/models/mnist_irb.onnx" },
    method: { type: "string", default: "rotta" },
    rounds: { type: "string", default: "5" },
    n: { type: "string", default: "500" },
    chunk: { type: "string", default: "64" },
    backend: { type: "string", default: "cpu" },
    "bank-slots": { type: "string" },
    "bank-threshold": { type: "string" },
    json: { type: "string" },
  },
});
// --backend wasm: one single-threaded wasm backend for both runs (ten times the CPU backend's speed).
const wasm = a.backend === "wasm" ? await createWasmBackend({ threads: 1 }) : null;
const rounds = Number(a.rounds);
const once = await corruptedDomains(CORRUPTIONS, Number(a.n), { kind: "iid" });
const domains = Array.from({ length: rounds }, (_, r) => once.map((d) => ({ ...d, name: `${r}/${d.name}` })))
  .flat();
const out: Record<string, number[]> = {};
// Continual with the adapter bank (--bank-slots N): a slot per condition, found again on every round.
const runs = [
  { label: "continual", protocol: "continual" as const },
  { label: "reset-each-domain", protocol: "reset-each-domain" as const },
  ...(a["bank-slots"]
    ? [{
      label: `continual+bank${a["bank-slots"]}`,
      protocol: "continual" as const,
      bank: {
        slots: Number(a["bank-slots"]),
        adapter: "bn" as const,
        threshold: a["bank-threshold"] === undefined ? undefined : Number(a["bank-threshold"]),
      },
    }]
    : []),
];
for (const { label, protocol, bank } of runs) {
  const r = await runStream(a.method!, Number(a.chunk), "iid", {
    model: a.model!,
    domains,
    backend: () => Promise.resolve(wasm ?? new CpuBackend()),
    protocol,
    bank,
  });
  const perRound = Array.from({ length: rounds }, (_, k) => {
    const names = once.map((d) => `${k}/${d.name}`);
    return names.reduce((s, name) => s + r.errors[name], 0) / names.length;
  });
  out[label] = perRound;
  console.log(
    `${a.method} ${label}: ${perRound.map((e) => e.toFixed(2)).join(" -> ")} (resets ${r.resets})`,
  );
}
if (a.json) await Deno.writeTextFile(a.json, JSON.stringify({ method: a.method, rounds: out }, null, 1));
wasm?.dispose();
