/**
 * The adapter bank in the service's /metrics (Prometheus text): which slot answers, what each open slot has
 * answered and how far the recent frames are from its key, the bank's events and bytes. Per-slot values are
 * gauges, not counters: a slot id is reused after an eviction or a merge, and its count starts again.
 */
import type { MetricsText } from "../../service/metrics.ts";
import type { BankedMethod } from "./banked.ts";

export function renderBankMetrics(text: MetricsText, bank: BankedMethod): MetricsText {
  const slots = bank.slotViews();
  const s = bank.summary();
  const per = (f: (v: (typeof slots)[number]) => number | null): [Record<string, string>, number][] =>
    slots.map((v) => [{ slot: String(v.id) }, f(v) ?? NaN]);
  return text
    .gauge(
      "edgetrain_adapter_active_slot",
      "The adapter slot answering now (0: the source domain).",
      s.active,
    )
    .gauge(
      "edgetrain_adapter_slots_open",
      "Adapter slots holding a domain, of edgetrain_adapter_slots.",
      s.open,
    )
    .gauge("edgetrain_adapter_slots", "Adapter slots the bank may hold.", s.slots)
    .gauge(
      "edgetrain_adapter_bytes",
      "Device bytes of the stored adapter slots (ledger category adapters).",
      s.bytes,
    )
    .gauge(
      "edgetrain_adapter_slot_frames",
      "Frames each open slot has answered since it was opened.",
      per((v) => v.frames),
    )
    .gauge(
      "edgetrain_adapter_slot_last_used_frame",
      "Stream frame at which each slot last answered.",
      per((v) => v.last_used),
    )
    .gauge(
      "edgetrain_adapter_slot_key_distance",
      "Symmetric KL between the most recent frames and each slot's key (NaN before any frames).",
      per((v) => v.key_distance),
    )
    .counter("edgetrain_adapter_events_total", "Adapter bank events over the state's life, by action.", [
      [{ action: "switch" }, s.switches],
      [{ action: "open" }, s.opened],
      [{ action: "merge" }, s.merged],
      [{ action: "evict" }, s.evicted],
    ]);
}
