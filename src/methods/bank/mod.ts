/**
 * The adapter bank (`--bank`, issue "continual adapters"): per-domain slots around any streaming method.
 * banked.ts is the method, selector.ts and keys.ts choose the slot, slots.ts stores them, adapted_core.ts
 * trains the adapter kind with the pull to the source; plan.ts sizes the bank for the governor.
 */
import type { MethodOptions } from "../descriptor.ts";
import { BankedMethod, type BankSettings } from "./banked.ts";

export {
  type AdapterChoice,
  type AdapterChunk,
  type AdapterEvent,
  BankedMethod,
  bankOf,
  type BankSettings,
  type BankSummary,
  OPEN_FROM,
  type OpenFrom,
  type SlotView,
} from "./banked.ts";

/** `options` with the bank around the method (the governor's `plan` switch carries over). */
export function withBank(options: MethodOptions, bank: BankSettings | undefined): MethodOptions {
  if (!bank) return options;
  const settings: BankSettings = { ...bank, plan: options.plan ?? false, lr: bank.lr ?? options.lr };
  return { ...options, wrap: (core, stream) => BankedMethod.wrap(core, stream, settings) };
}
