/**
 * The adapter bank's settings, events and views (banked.ts is the bank): what the CLI, the stream loop's
 * observers, the service and the reports read.
 */
import type { AdapterKind } from "../../nn/adapters.ts";

export type AdapterChoice = "bn" | AdapterKind;
export type OpenFrom = "window" | "source" | "nearest";
export const OPEN_FROM: readonly OpenFrom[] = ["window", "source", "nearest"];

export interface BankSettings {
  /** Slots, the source's included (>= 2). */
  slots: number;
  adapter: AdapterChoice;
  /** Selection (selector.ts): frames to open a slot, frames to confirm a switch, distance threshold. */
  window?: number;
  confirm?: number;
  threshold?: number;
  /** Pull to the source per learning step (adapted_core.ts, 0.01). */
  pull?: number;
  /**
   * What a new slot starts from: the source with its BN statistics taken from the frames that opened it
   * (`window`, the default), the source as it is, or the nearest slot's state.
   */
  open?: OpenFrom;
  /** LoRA rank (4). */
  rank?: number;
  /** Adapters' learning rate (default 1e-3). */
  lr?: number;
  /** The governor's run: every slot holds a state from the first chunk (the most memory the bank takes). */
  plan?: boolean;
}

export type AdapterAction = "switch" | "open" | "merge" | "evict";

/** One change of the bank: a stream event the observers get (stream.ts). */
export interface AdapterEvent {
  action: AdapterAction;
  /** The slot left (switch, open), merged away or evicted (-1: none). */
  from: number;
  /** The slot that answers from now on (switch, open) or that absorbed `from` (merge). */
  to: number;
  /** Key distance that decided it (switch: to the chosen slot; open: to the nearest; merge: between them). */
  distance: number;
  /** Frames of the stream before the chunk it happened at. */
  frame: number;
}

/** What the bank did over the chunk(s) since the stream last asked. */
export interface AdapterChunk {
  active: number;
  /** Distance of the chunk's frames to the slot that answered them (null before there are enough frames). */
  distance: number | null;
  /** Distance of the recent frames to the slot that was active before the decision (the drift signal). */
  drift: number | null;
  events: AdapterEvent[];
}

export interface SlotView {
  id: number;
  frames: number;
  last_used: number;
  opened: number;
  /** Distance of the most recent frames to the slot's key. */
  key_distance: number | null;
  active: boolean;
}

export interface BankSummary {
  adapter: AdapterChoice;
  /** Slots the bank may hold, and open now. */
  slots: number;
  open: number;
  /** Device bytes of the stored slots (ledger "adapters"). */
  bytes: number;
  bytes_per_slot: number;
  switches: number;
  opened: number;
  merged: number;
  evicted: number;
  active: number;
}
