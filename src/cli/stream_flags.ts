/**
 * The flags that say how frames reach a streaming method, shared by `adapt` (which replays files as a camera
 * would deliver them) and `serve` (whose requests are the camera):
 *
 *   --batch N           frames that arrive together (1 = a camera sending frame by frame)
 *   --memory N|auto     memory bank frames = the minibatch of every learning step (auto: the planner's)
 *   --every K           learn after K new frames (default: the memory size)
 *   --stats-from bank|stream   what the target statistics follow (default bank)
 *   --order iid|sorted|dirichlet:A|given, --seed S   (adapt) the order the frames are replayed in
 */
import { subset } from "../data/images.ts";
import type { Domain } from "../methods/run.ts";
import type { StreamSettings } from "../methods/descriptor.ts";
import { parseOrder, type StreamOrder, streamOrder } from "../data/order.ts";
import { oneOf, parseNumber } from "./args.ts";
import { UsageError } from "./errors.ts";

export const STREAM_FLAGS = {
  batch: { type: "string" as const, default: "64" },
  memory: { type: "string" as const, default: "auto" },
  every: { type: "string" as const },
  "stats-from": { type: "string" as const, default: "bank" },
  "stats-momentum": { type: "string" as const },
  order: { type: "string" as const, default: "given" },
  seed: { type: "string" as const, default: "0" },
};

export const STREAM_HELP =
  `  --batch N                 frames that arrive together (default 64; 1 = a camera, frame by frame): every
                            answer comes before the method learns from it, whatever N
  --memory N|auto           frames the memory bank keeps = the minibatch of each learning step (default
                            auto: the largest the budget allows, up to 64)
  --every K                 learn after every K new frames (default: the memory size)
  --stats-from bank|stream  target BN statistics follow the class-balanced bank (default) or the last frames
  --stats-momentum A        how far each learning step moves them once settled (default 0.1; RoTTA: 0.05)
  --order given|iid|sorted|dirichlet:A   replay each --images in this order (default given; sorted: one
                            class after another; dirichlet: classes in bursts, smaller A = longer) --seed S`;

export interface StreamFlags {
  chunk: number;
  every?: number;
  statsFrom: "bank" | "stream";
  momentum?: number;
  order: StreamOrder;
  seed: number;
}

export function parseStreamFlags(flags: Record<string, unknown>): StreamFlags {
  const chunk = parseNumber("batch", flags.batch as string, { integer: true, min: 1 })!;
  const every = parseNumber("every", flags.every as string | undefined, { integer: true, min: 1 });
  oneOf("stats-from", flags["stats-from"] as string, ["bank", "stream"]);
  let order: StreamOrder;
  try {
    order = parseOrder(flags.order as string);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const seed = parseNumber("seed", flags.seed as string, { integer: true })!;
  const momentum = parseNumber("stats-momentum", flags["stats-momentum"] as string | undefined, {
    min: 0,
    max: 1,
  });
  return { chunk, every, statsFrom: flags["stats-from"] as "bank" | "stream", momentum, order, seed };
}

/** Each domain's frames in the requested order (the same seed, the same stream). */
export function orderStreams(domains: Domain[], f: StreamFlags): Domain[] {
  if (f.order.kind === "given") return domains;
  return domains.map((d) => ({
    ...d,
    set: subset(d.set, streamOrder(d.set.n, d.set.labels, f.order, f.seed)),
  }));
}

/** The method's stream settings for a memory of `capacity` frames. */
export function streamSettings(f: StreamFlags, capacity: number, collapseGuard: boolean): StreamSettings {
  return {
    capacity,
    every: f.every ?? capacity,
    statsFrom: f.statsFrom,
    momentum: f.momentum,
    collapseGuard,
  };
}
