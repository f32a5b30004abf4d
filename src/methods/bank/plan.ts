/**
 * How many slots the adapter bank gets when `--bank-slots` is not given: as many as fit the budget next to
 * the planned run, up to MAX_DEFAULT_SLOTS. A slot's cost is measured, not computed: the estimator runs the
 * method with the bank on the null backend, every slot holding a full state (BankSettings.plan), at 2 and 3
 * slots; the difference is one slot (its ledger bytes and what the process adds around them).
 */
import type { Estimate, EstimateOptions, Estimator } from "../../governor/estimate.ts";
import { need } from "../../governor/planner.ts";
import type { BankSettings } from "./types.ts";

/** Beyond this many domains a camera's bank is mostly merging; a user who wants more says so. */
export const MAX_DEFAULT_SLOTS = 8;

export interface SlotPlan {
  slots: number;
  /** Ledger bytes of one slot (category "adapters"), measured on the null backend. */
  bytes_per_slot: number;
  /** Ledger bytes of the whole bank at `slots`. */
  predicted_bytes: number;
  reason: string;
  /** The run's estimate with that bank. */
  estimate: Estimate;
}

export async function planSlots(
  estimator: Estimator,
  base: Omit<EstimateOptions, "bank">,
  bank: BankSettings,
  usableBytes: number,
): Promise<SlotPlan> {
  const at = (slots: number) => estimator.estimate({ ...base, bank: { ...bank, slots } });
  const two = await at(2), three = await at(3);
  const perSlot = three.peak_by_category.adapters - two.peak_by_category.adapters;
  const perSlotNeed = Math.max(need(three) - need(two), perSlot, 1);
  let slots = Math.max(
    2,
    Math.min(MAX_DEFAULT_SLOTS, 2 + Math.floor((usableBytes - need(two)) / perSlotNeed)),
  );
  let e = await at(slots);
  while (slots > 2 && need(e) > usableBytes) e = await at(--slots);
  const capped = slots === MAX_DEFAULT_SLOTS;
  return {
    slots,
    bytes_per_slot: perSlot,
    predicted_bytes: e.peak_by_category.adapters,
    reason: capped
      ? `${slots} slots (the default cap; each ${perSlot} B)`
      : `${slots} slots fit the budget (each ${perSlot} B)`,
    estimate: e,
  };
}
