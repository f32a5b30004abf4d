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
import type { AdaptDescriptor, StreamSettings } from "../methods/descriptor.ts";
import { parseOrder, type StreamOrder, streamOrder } from "../data/order.ts";
import { oneOf, parseNumber } from "./args.ts";
import { type AdapterChoice, type BankSettings, OPEN_FROM, type OpenFrom } from "../methods/bank/mod.ts";
import { ADAPTER_KINDS } from "../nn/adapters.ts";
import { planSlots, type SlotPlan } from "../methods/bank/plan.ts";
import { DEFAULT_MARGIN } from "../governor/planner.ts";
import type { Backend } from "../backend/backend.ts";
import { autoBudget, type Governed } from "./plan.ts";
import { UsageError } from "./errors.ts";

export const STREAM_FLAGS = {
  batch: { type: "string" as const, default: "64" },
  memory: { type: "string" as const, default: "auto" },
  every: { type: "string" as const },
  "stats-from": { type: "string" as const, default: "bank" },
  "stats-momentum": { type: "string" as const },
  "stats-warmup": { type: "boolean" as const, default: false },
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
  --stats-momentum A        how far each learning step moves them (default 0.1; RoTTA: 0.05)
  --stats-warmup            the n-th step after a reset moves them by 1/n (faster start on shuffled streams;
                            harms streams that show one class at a time)
  --order given|iid|sorted|dirichlet:A   replay each --images in this order (default given; sorted: one
                            class after another; dirichlet: classes in bursts, smaller A = longer) --seed S`;

export interface StreamFlags {
  chunk: number;
  every?: number;
  statsFrom: "bank" | "stream";
  momentum?: number;
  warmup: boolean;
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
  const warmup = flags["stats-warmup"] === true;
  return { chunk, every, statsFrom: flags["stats-from"] as "bank" | "stream", momentum, warmup, order, seed };
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
    warmup: f.warmup,
    collapseGuard,
  };
}

/** The adapter bank's flags (src/methods/bank/), shared by adapt and serve. */
export const BANK_FLAGS = {
  bank: { type: "boolean" as const, default: false },
  "bank-slots": { type: "string" as const, default: "auto" },
  adapter: { type: "string" as const },
  "bank-threshold": { type: "string" as const },
  "bank-pull": { type: "string" as const },
  "bank-open": { type: "string" as const, default: "window" },
};

export const BANK_HELP =
  `  --bank                    keep one adapted state per domain (an adapter bank): each chunk's domain is
                            recognised from the statistics of the first BN layers' inputs (no labels) and
                            answered by its own slot; slot 0 is the source (docs/adapters.md)
  --bank-slots N|auto       slots, the source's included (default auto: as many as the budget allows, up to 8)
  --adapter bn|lora|conv1x1 what a slot adapts: BN affine (default), LoRA on 1x1 convs, or a 1x1 residual
                            adapter per block; BN statistics always follow the domain
  --bank-threshold X        symmetric-KL distance within which frames belong to a slot (default 0.1;
                            0.3 for a camera that shows one class for a while: docs/adapters.md)
  --bank-pull X             per learning step, move trained weights X of the way back to the source (0.01)
  --bank-open window|source|nearest   a new slot starts from the source with BN statistics of the frames
                            that opened it (default), from the source as it is, or from the nearest slot`;

export interface BankFlags {
  /** null: --bank-slots auto (the governor's). */
  slots: number | null;
  settings: Omit<BankSettings, "slots">;
}

/** The bank's settings from the flags, or null without --bank (bank flags without it are an error). */
export function parseBankFlags(flags: Record<string, unknown>): BankFlags | null {
  const given = ["adapter", "bank-threshold", "bank-pull"].filter((k) => flags[k] !== undefined);
  if (flags["bank-slots"] !== "auto") given.push("bank-slots");
  if (flags["bank-open"] !== "window") given.push("bank-open");
  if (!flags.bank) {
    if (given.length) throw new UsageError(`--${given[0]} needs --bank`);
    return null;
  }
  const adapter = (flags.adapter as string | undefined) ?? "bn";
  oneOf("adapter", adapter, [...ADAPTER_KINDS]);
  oneOf("bank-open", flags["bank-open"] as string, [...OPEN_FROM]);
  const slots = flags["bank-slots"] === "auto"
    ? null
    : parseNumber("bank-slots", flags["bank-slots"] as string, { integer: true, min: 2 })!;
  const threshold = parseNumber("bank-threshold", flags["bank-threshold"] as string | undefined, { min: 0 });
  if (threshold === 0) throw new UsageError("--bank-threshold must be > 0");
  const pull = parseNumber("bank-pull", flags["bank-pull"] as string | undefined, { min: 0 });
  if (pull !== undefined && pull >= 1) throw new UsageError(`--bank-pull must be below 1, got ${pull}`);
  return {
    slots,
    settings: {
      adapter: adapter as AdapterChoice,
      threshold,
      pull,
      open: flags["bank-open"] as OpenFrom,
    },
  };
}

/** Refuses a bank the method cannot use (it adapts nothing, or a trained adapter and it never learns). */
export function checkBankMethod(flags: BankFlags | null, method: AdaptDescriptor): void {
  if (!flags) return;
  if (!method.adapts) throw new UsageError(`--bank needs a method that adapts, not ${method.name}`);
  if (flags.settings.adapter !== "bn" && !method.backward) {
    throw new UsageError(
      `--adapter ${flags.settings.adapter} needs a method that learns, not ${method.name}`,
    );
  }
}

/**
 * The bank a run keeps: the flags' settings with `--bank-slots`, or as many slots as the governor finds room
 * for next to the planned run (the plan's usable budget, else the automatic one).
 */
export async function governBank(
  flags: BankFlags,
  gov: Governed,
  backend: Backend,
  stream: { chunk?: number; statsFrom?: "bank" | "stream" } = {},
): Promise<{ settings: BankSettings; plan: SlotPlan | null }> {
  const settings: BankSettings = { ...flags.settings, slots: flags.slots ?? 2 };
  if (flags.slots !== null) return { settings, plan: null };
  const usable = gov.plan?.usable_bytes ?? Math.floor(autoBudget(backend).bytes * (1 - DEFAULT_MARGIN));
  const plan = await planSlots(
    gov.estimator,
    {
      method: gov.method,
      batch: gov.batch,
      store: gov.store,
      guard: true,
      ...stream,
    },
    settings,
    usable,
  );
  return { settings: { ...settings, slots: plan.slots }, plan };
}
