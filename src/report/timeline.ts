/**
 * The stream as a timeline, for the report page (html.ts): an observer of the stream loop that keeps one
 * point per bucket of frames — errors where labels are known, summed entropy, the drift distance, the active
 * slot, the ledger's live bytes — and halves its resolution whenever it would exceed `maxPoints`, so a
 * service that runs for weeks keeps a bounded timeline of its whole life.
 */
import type { Ledger } from "../memory/ledger.ts";
import type { ChunkEvent, StreamObserver } from "../methods/stream.ts";

export interface TimelinePoint {
  /** First frame of the bucket, and frames in it. */
  frame: number;
  frames: number;
  /** Labelled frames answered wrong, of `labeled` (0 without labels). */
  wrong: number;
  labeled: number;
  /** Sum of the frames' softmax entropies. */
  entropy: number;
  /** Largest drift distance of the bucket's chunks (null: none known). */
  drift: number | null;
  /** The slot that answered most of the bucket's frames (-1: no adapter bank). */
  slot: number;
  /** The ledger's most live bytes while the bucket's chunks ran (answers and learning steps). */
  bytes: number;
  /** Bytes of the adapter bank's stored slots after the bucket (ledger category adapters). */
  slotBytes: number;
}

export interface TimelineMark {
  frame: number;
  label: string;
}

export interface TimelineEvent {
  frame: number;
  action: string;
  from: number;
  to: number;
  distance: number;
}

export interface TimelineData {
  points: TimelinePoint[];
  /** Where each stream segment (adapt's --images) starts. */
  domains: TimelineMark[];
  /** The adapter bank's switches, opens, merges, evictions, and resets. */
  events: TimelineEvent[];
  frames: number;
  peakBytes: number;
}

/** Points kept per slot while a bucket is open: frames answered by each slot. */
type SlotFrames = Map<number, number>;

export class Timeline {
  readonly points: TimelinePoint[] = [];
  readonly domains: TimelineMark[] = [];
  readonly events: TimelineEvent[] = [];
  #bucket: number;
  #open: { p: TimelinePoint; slots: SlotFrames } | null = null;
  #frames = 0;
  #peak = 0;

  constructor(
    readonly ledger: Ledger,
    readonly options: { maxPoints?: number; bucket?: number; maxEvents?: number } = {},
  ) {
    this.#bucket = options.bucket ?? 1;
  }

  get frames(): number {
    return this.#frames;
  }

  /** The observer to register on the stream loop (and, for adapt, on the run's domains and scores). */
  observer(): StreamObserver & {
    domain(e: { name: string }): void;
    scored(e: { wrong: number; labeled: number }): void;
  } {
    return {
      chunk: (e) => this.#chunk(e),
      domain: (e) => this.domains.push({ frame: this.#frames, label: e.name }),
      scored: (e) => {
        const p = this.points.at(-1);
        if (!p) return;
        p.wrong += e.wrong;
        p.labeled += e.labeled;
      },
      adapter: (e) =>
        this.#event({ frame: e.frame, action: e.action, from: e.from, to: e.to, distance: e.distance }),
      reset: (e) =>
        this.#event({ frame: this.#frames, action: `reset (${e.cause})`, from: -1, to: -1, distance: NaN }),
    };
  }

  #event(e: TimelineEvent): void {
    this.events.push(e);
    const most = this.options.maxEvents ?? 2000;
    if (this.events.length > most) this.events.splice(0, this.events.length - most);
  }

  #chunk(e: ChunkEvent): void {
    const snap = this.ledger.snapshot();
    const recent = this.ledger.takeRecentPeak();
    this.#peak = Math.max(this.#peak, recent);
    const slot = e.adapters?.active ?? -1;
    const drift = e.adapters?.drift ?? null;
    let open = this.#open;
    if (!open || open.p.frames >= this.#bucket) {
      open = {
        p: {
          frame: this.#frames,
          frames: 0,
          wrong: 0,
          labeled: 0,
          entropy: 0,
          drift: null,
          slot,
          bytes: 0,
          slotBytes: 0,
        },
        slots: new Map(),
      };
      this.#open = open;
      this.points.push(open.p);
    }
    const p = open.p;
    p.frames += e.rows;
    p.entropy += e.result.entropy * e.rows;
    if (drift !== null && Number.isFinite(drift)) p.drift = Math.max(p.drift ?? 0, drift);
    open.slots.set(slot, (open.slots.get(slot) ?? 0) + e.rows);
    p.slot = [...open.slots].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
    p.bytes = Math.max(p.bytes, recent);
    p.slotBytes = snap.live.adapters;
    this.#frames += e.rows;
    if (this.points.length > (this.options.maxPoints ?? 600)) this.#halve();
  }

  /** Pairs of points become one: the timeline keeps its span at half the resolution. */
  #halve(): void {
    const merged: TimelinePoint[] = [];
    for (let i = 0; i < this.points.length; i += 2) {
      const a = this.points[i], b = this.points[i + 1];
      if (!b) {
        merged.push(a);
        continue;
      }
      merged.push({
        frame: a.frame,
        frames: a.frames + b.frames,
        wrong: a.wrong + b.wrong,
        labeled: a.labeled + b.labeled,
        entropy: a.entropy + b.entropy,
        drift: a.drift === null ? b.drift : b.drift === null ? a.drift : Math.max(a.drift, b.drift),
        slot: b.frames > a.frames ? b.slot : a.slot,
        bytes: Math.max(a.bytes, b.bytes),
        slotBytes: b.slotBytes,
      });
    }
    this.points.splice(0, this.points.length, ...merged);
    this.#bucket *= 2;
    const last = this.points.at(-1)!;
    this.#open = { p: last, slots: new Map([[last.slot, last.frames]]) };
  }

  data(): TimelineData {
    return {
      points: this.points.map((p) => ({ ...p })),
      domains: [...this.domains],
      events: [...this.events],
      frames: this.#frames,
      peakBytes: this.#peak,
    };
  }
}
