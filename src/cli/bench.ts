/**
 * `edgetrain bench [--backend ...] [--batch N] [--steps N] [--json]`: this machine's figures for the work
 * edgetrain does — copy bandwidth, matmul/conv/depthwise throughput (the probes `profile` uses) and the
 * time of one TENT step (forward with batch statistics, backward to the BN affine parameters, Adam) on the
 * default MobileNetV2-style net, with the ledger's saved bytes. The comparison with TF.js on the same adapter
 * is `deno task bench` in the source tree (tests/bench), which needs TF.js.
 */
import { parseFlags, parseNumber } from "./args.ts";
import { BACKEND_FLAG, openBackend } from "./common.ts";
import { benchmark } from "../devices/probe.ts";
import { buildIrbNet } from "../nn/mobilenet.ts";
import { Tent } from "../methods/tent.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

export const HELP =
  `edgetrain bench [--backend webgpu|wasm|cpu|auto] [--threads N] [--batch 100] [--steps 3] [--json]

Kernel throughput and the time of a TENT step on the default MobileNetV2-style net (1x32x32 input).`;

export default async function bench(args: string[]): Promise<number> {
  const flags = parseFlags("bench", args, {
    batch: { type: "string", default: "100" },
    steps: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
    ...BACKEND_FLAG,
  });
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const batch = parseNumber("batch", flags.batch, { integer: true, min: 1 })!;
  const steps = parseNumber("steps", flags.steps, { integer: true, min: 1 })!;
  const b = await openBackend(flags, !flags.json);
  const throughput = await benchmark(b, { minSeconds: 0.3 });
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
  const tent = await Tent.create(net);
  const x = Tensor.from(b, new Rng(11).normals(batch * 32 * 32), [batch, 1, 32, 32]);
  await tent.learn(x); // compiles pipelines and fills the buffer pool
  b.ledger.resetPeak();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await tent.learn(x);
  const msPerStep = (performance.now() - t0) / steps;
  const snap = b.ledger.snapshot();
  const out = {
    backend: b.name,
    ...throughput,
    tent_step: {
      batch,
      steps,
      ms_per_step: msPerStep,
      peak_bytes: snap.peakBytes,
      peak_saved_bytes: snap.peak.saved,
    },
  };
  x.dispose();
  tent.dispose();
  net.dispose();
  b.dispose();
  if (flags.json) console.log(JSON.stringify(out));
  else {
    console.log(`backend ${out.backend}`);
    console.log(`copy      ${throughput.copy_gbps.toFixed(2)} GB/s`);
    console.log(`matmul    ${throughput.matmul_gflops.toFixed(2)} GFLOP/s`);
    console.log(`conv 3x3  ${throughput.conv_gflops.toFixed(2)} GFLOP/s`);
    console.log(`depthwise ${throughput.depthwise_gflops.toFixed(2)} GFLOP/s`);
    console.log(
      `TENT step (batch ${batch}): ${
        msPerStep.toFixed(0)
      } ms, peak ${snap.peakBytes} B, saved activations ${snap.peak.saved} B`,
    );
  }
  return 0;
}
