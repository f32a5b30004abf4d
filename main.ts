/**
 * edgetrain: adapt vision models on edge devices. Thin entry: parse the subcommand, dispatch to
 * src/cli/<command>.ts, and map errors to one line on stderr and an exit code.
 */
import { UsageError } from "./src/cli/errors.ts";

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, () => Promise<{ default: Command }>> = {
  demo: () => import("./src/cli/demo.ts"),
  bench: () => import("./src/cli/bench.ts"),
  predict: () => import("./src/cli/predict.ts"),
  adapt: () => import("./src/cli/adapt.ts"),
  train: () => import("./src/cli/train.ts"),
  serve: () => import("./src/cli/serve.ts"),
  service: () => import("./src/cli/service.ts"),
  plan: () => import("./src/cli/plan.ts"),
  profile: () => import("./src/cli/profile.ts"),
};

const usage = `edgetrain — adapt vision models on edge devices

Usage: edgetrain <command> [options]

Commands:
  demo       run the main job on the embedded model and data
  predict    classify images with an ONNX model (error when labels are given)
  adapt      test-time adaptation on an unlabeled stream (bn, tent, eata, sar, ecotta)
  train      transfer learning with labels on the top blocks (full, bias, mobiletl)
  serve      continual adaptation as a service: HTTP API, spool folder, checkpoints, sd_notify
  service    "service install" writes a systemd unit that runs serve
  plan       the method, batch and store that fit a memory budget, with the predicted peak
  profile    probe this machine's WebGPU adapter and throughput, write a device profile
  bench      kernel throughput and the time of a TENT step on this machine

Run "edgetrain <command> --help" for a command's options.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage);
    return name ? 0 : 2;
  }
  if (name === "--version") {
    console.log("edgetrain 0.1.0");
    return 0;
  }
  const load = commands[name];
  if (!load) {
    console.error(`edgetrain: unknown command "${name}" (known: ${Object.keys(commands).join(", ")})`);
    return 2;
  }
  try {
    const { default: run } = await load();
    return await run(rest);
  } catch (e) {
    const err = e as Error;
    if (Deno.env.get("EDGETRAIN_DEBUG")?.includes("stack")) console.error(err.stack);
    console.error(`edgetrain ${name}: ${err.message.split("\n")[0]}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
