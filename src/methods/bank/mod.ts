/**
 * The adapter bank (`--bank`, issue "continual adapters"): per-domain slots around any streaming method.
 * banked.ts is the method; keys.ts and selector.ts choose the slot, slots.ts stores them, room.ts frees one
 * when the bank is full, window.ts holds the frames a slot opens from, adapted_core.ts trains the adapter kind
 * with the pull to the source, plan.ts sizes the bank for the governor, metrics.ts exports it to /metrics.
 */
import type { MethodOptions } from "../descriptor.ts";
import { BankedMethod } from "./banked.ts";
import type { BankSettings } from "./types.ts";

export { BankedMethod, bankOf } from "./banked.ts";
export {
  type AdapterChoice,
  type AdapterChunk,
  type AdapterEvent,
  type BankSettings,
  type BankSummary,
  OPEN_FROM,
  type OpenFrom,
  type SlotView,
} from "./types.ts";

/** `options` with the bank around the method (the governor's `plan` switch carries over). */
export function withBank(options: MethodOptions, bank: BankSettings | undefined): MethodOptions {
  if (!bank) return options;
  const settings: BankSettings = { ...bank, plan: options.plan ?? false, lr: bank.lr ?? options.lr };
  return { ...options, wrap: (core, stream) => BankedMethod.wrap(core, stream, settings) };
}
