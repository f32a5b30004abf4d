/**
 * A full bank frees a slot for a new domain: the two closest domain slots merge (their states and keys
 * weighted by their frames, slots.ts mergeStates) when they lie within twice the threshold — two slots of one
 * domain — and nearer each other than the newcomer; else the least used domain slot (fewest frames, then the
 * longest unused) is evicted. The source slot (0) always stays.
 */
import { type Key, keyDistance } from "./keys.ts";
import type { SlotInfo } from "./slots.ts";

export type Room =
  | { action: "merge"; keep: number; gone: number; distance: number }
  | { action: "evict"; gone: number };

export function roomFor(
  info: readonly (SlotInfo | null)[],
  keys: ReadonlyMap<number, Key>,
  threshold: number,
  incoming: Key,
): Room {
  const ids = info.flatMap((s, i) => (s && i !== 0 ? [i] : []));
  if (!ids.length) throw new Error("adapter bank: no domain slot to make room from");
  let pair: [number, number] | null = null, best = Infinity;
  for (const [k, i] of ids.entries()) {
    for (const j of ids.slice(k + 1)) {
      const d = keyDistance(keys.get(i)!, keys.get(j)!);
      if (d < best) [pair, best] = [[i, j], d];
    }
  }
  if (pair && best <= 2 * threshold && best < keyDistance(incoming, keys.get(pair[0])!)) {
    const [keep, gone] = info[pair[0]]!.frames >= info[pair[1]]!.frames ? pair : [pair[1], pair[0]];
    return { action: "merge", keep, gone, distance: best };
  }
  const gone = ids.reduce((v, i) =>
    info[i]!.frames < info[v]!.frames ||
      (info[i]!.frames === info[v]!.frames && info[i]!.lastUsed < info[v]!.lastUsed)
      ? i
      : v
  );
  return { action: "evict", gone };
}
