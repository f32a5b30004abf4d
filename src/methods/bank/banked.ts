/**
 * The adapter bank (`--bank`): a method that remembers each domain it has seen, finds it again, and never
 * forgets the source. It decorates any streaming method (streaming.ts): before a chunk is answered, the
 * chunk's domain key (keys.ts) picks the slot (selector.ts) — stay, switch to a known domain, or open a slot
 * for a new one (from the source, or from the nearest slot), merging the two closest slots or evicting the
 * least used when the bank is full; the chosen slot's state (slots.ts) is swapped into the method, whose
 * memory of frames and collapse guard start afresh (they belong to the domain being left); then the method
 * answers and learns as it would without the bank (adapted_core.ts adds the adapter kind and the pull to the
 * source). Slot 0 is the source domain: keyed by the source BN statistics, never evicted.
 *
 * Why a decorator of the streaming method and not of its core: the slot must be chosen before the chunk is
 * answered, and a switch must empty the frame memory and the collapse guard's snapshots, which the streaming
 * method owns; what happens at every learning step (the adapters' optimizer, the pull) is the core
 * decorator's, since the streaming method may learn several times in one chunk.
 */
import type { Module } from "../../nn/module.ts";
import type { Tensor } from "../../tensor.ts";
import type { StepResult, TtaMethod } from "../tta.ts";
import { type StreamCore, StreamingMethod, type StreamingOptions } from "../streaming.ts";
import { AdaptedCore } from "./adapted_core.ts";
import { type Key, KeyProbe, mergeKey } from "./keys.ts";
import { roomFor } from "./room.ts";
import { type Decision, DriftSelector } from "./selector.ts";
import { mergeStates, SlotStore } from "./slots.ts";
import type {
  AdapterChoice,
  AdapterChunk,
  AdapterEvent,
  BankSettings,
  BankSummary,
  SlotView,
} from "./types.ts";
import { FrameWindow, statisticsFrom } from "./window.ts";

const KINDS: AdapterChoice[] = ["bn", "lora", "conv1x1"];
const CONFIG = "adapter_bank.config";
const META = "slots.meta";

export class BankedMethod implements TtaMethod {
  readonly name: TtaMethod["name"];
  readonly model: Module;
  readonly probe: KeyProbe;
  readonly selector: DriftSelector;
  readonly slots: SlotStore;
  active = 0;
  /** Frames seen. */
  frame = 0;
  readonly counts = { switches: 0, opened: 0, merged: 0, evicted: 0 };
  #ready = false;
  #chunk: AdapterChunk = { active: 0, distance: null, drift: null, events: [] };
  /** The frames a slot opens from (--bank-open window), or null. */
  readonly #window: FrameWindow | null;

  private constructor(
    readonly inner: StreamingMethod,
    readonly core: AdaptedCore,
    probe: KeyProbe,
    readonly settings: BankSettings,
  ) {
    this.name = inner.name;
    this.model = inner.model;
    this.probe = probe;
    this.selector = new DriftSelector(probe.channels, settings);
    this.#window = (settings.open ?? "window") === "window" ? new FrameWindow(this.selector.window) : null;
    this.slots = new SlotStore(
      core.adapters?.params[0]?.backend ?? firstBackend(inner.model),
      settings.slots,
    );
  }

  /** The bank around a method's core, with the stream settings the method would run with alone. */
  static wrap(core: StreamCore, stream: StreamingOptions, s: BankSettings): BankedMethod {
    if (!KINDS.includes(s.adapter)) {
      throw new Error(`--adapter "${s.adapter}" is not one of ${KINDS.join(", ")}`);
    }
    const probe = new KeyProbe(core.model);
    const adapted = new AdaptedCore(core, {
      kind: s.adapter,
      pull: s.pull,
      rank: s.rank,
      lr: s.lr,
      exclude: probe.front,
    });
    return new BankedMethod(new StreamingMethod(adapted, stream), adapted, probe, s);
  }

  /** Slot 0: the source, keyed by the source statistics. */
  async #init(): Promise<void> {
    if (this.#ready) return;
    this.selector.keys.set(0, await this.probe.sourceKey(this.selector.memory));
    this.slots.write(0, await this.inner.coreState());
    this.slots.info[0] = { frames: 0, lastUsed: 0, opened: 0 };
    this.active = 0;
    this.#ready = true;
  }

  async step(x: Tensor): Promise<StepResult> {
    await this.#init();
    const n = x.shape[0];
    if (this.#window) this.#window.remember(x);
    const decision = this.selector.observe(await this.probe.moments(x), this.active);
    await this.#carryOut(decision, x);
    if (this.settings.plan) await this.#fillAll();
    const result = await this.inner.step(x);
    const info = this.slots.info[this.active]!;
    info.frames += n;
    info.lastUsed = this.frame;
    this.frame += n;
    this.#chunk.active = this.active;
    this.#chunk.drift = decision.drift ?? this.#chunk.drift;
    this.#chunk.distance = decision.action === "stay" ? decision.drift : decision.distance;
    if (decision.action === "open") this.#chunk.distance = 0;
    return result;
  }

  /** What happened since the last call (the stream loop asks after every chunk). */
  takeChunk(): AdapterChunk {
    const c = this.#chunk;
    this.#chunk = { active: this.active, distance: null, drift: null, events: [] };
    return c;
  }

  async #carryOut(d: Decision, x: Tensor): Promise<void> {
    if (d.action === "stay") return;
    const from = this.active;
    this.slots.write(from, await this.inner.coreState());
    if (d.action === "switch") {
      await this.#load(d.to);
      this.selector.moved(d.to);
      this.counts.switches++;
      this.#event({ action: "switch", from, to: d.to, distance: d.distance, frame: this.frame });
      return;
    }
    let id = this.slots.free();
    if (id < 0) id = await this.#makeRoom(d.key);
    const open = this.settings.open ?? "window";
    const base = open === "nearest" && d.nearest >= 0 && this.slots.has(d.nearest) ? d.nearest : -1;
    if (base >= 0) await this.#load(base);
    else this.inner.reset();
    if (this.#window) {
      const frames = this.#window.frames(x);
      try {
        await statisticsFrom(this.model, this.core, frames);
      } finally {
        if (frames !== x) frames.dispose();
      }
    }
    this.slots.write(id, await this.inner.coreState());
    this.slots.info[id] = { frames: 0, lastUsed: this.frame, opened: this.frame };
    this.active = id;
    this.selector.moved(id, d.key);
    this.counts.opened++;
    this.#event({ action: "open", from, to: id, distance: d.distance, frame: this.frame });
  }

  /** Slot `id`'s state into the method, with a fresh frame memory and collapse guard. */
  async #load(id: number): Promise<void> {
    const state = await this.slots.read(id);
    this.inner.reset();
    this.inner.core.loadState(state);
    this.inner.settle();
    this.active = id;
  }

  /** Frees a slot for `incoming` (room.ts): merges the two closest domain slots or evicts the least used. */
  async #makeRoom(incoming: Key): Promise<number> {
    const keys = this.selector.keys, info = this.slots.info;
    const room = roomFor(info, keys, this.selector.threshold, incoming);
    if (room.action === "merge") {
      const { keep, gone } = room;
      const a = info[keep]!, b = info[gone]!;
      this.slots.write(
        keep,
        mergeStates(await this.slots.read(keep), a.frames, await this.slots.read(gone), b.frames),
      );
      keys.set(keep, mergeKey(keys.get(keep)!, keys.get(gone)!, this.selector.memory));
      info[keep] = {
        frames: a.frames + b.frames,
        lastUsed: Math.max(a.lastUsed, b.lastUsed),
        opened: Math.min(a.opened, b.opened),
      };
      this.counts.merged++;
      this.#event({ action: "merge", from: gone, to: keep, distance: room.distance, frame: this.frame });
    } else {
      this.counts.evicted++;
      this.#event({ action: "evict", from: room.gone, to: -1, distance: NaN, frame: this.frame });
    }
    this.#close(room.gone);
    return room.gone;
  }

  #close(id: number): void {
    this.slots.close(id);
    this.selector.keys.delete(id);
  }

  #event(e: AdapterEvent): void {
    this.#chunk.events.push(e);
  }

  /** The governor's worst case: every slot holds a full state. */
  async #fillAll(): Promise<void> {
    const state = await this.inner.coreState();
    for (let i = 0; i < this.slots.capacity; i++) this.slots.write(i, state);
  }

  /** The slots for GET /v1/state and the report. */
  slotViews(): SlotView[] {
    return this.slots.open().map((id) => {
      const s = this.slots.info[id]!;
      return {
        id,
        frames: s.frames,
        last_used: s.lastUsed,
        opened: s.opened,
        key_distance: this.selector.distanceTo(id),
        active: id === this.active,
      };
    });
  }

  summary(): BankSummary {
    const open = this.slots.open();
    return {
      adapter: this.settings.adapter,
      slots: this.slots.capacity,
      open: open.length,
      bytes: this.slots.bytes,
      bytes_per_slot: open.length ? Math.max(...open.map((i) => this.slots.bytesOf(i))) : 0,
      ...this.counts,
      active: this.active,
    };
  }

  /** Runs fn with the active slot's adapters folded into the weights (an export of a plain graph). */
  async folded<T>(fn: () => Promise<T>): Promise<T> {
    const undo = await this.core.adapters?.fold();
    try {
      return await fn();
    } finally {
      undo?.();
    }
  }

  trainables(): Tensor[] {
    return this.inner.trainables();
  }

  setLearningBatch(n: number): void {
    this.inner.setLearningBatch(n);
  }

  /** Back to the source: every domain slot forgotten. */
  reset(): void {
    this.inner.reset();
    this.#window?.clear();
    this.slots.dispose();
    this.selector.clear();
    this.active = 0;
    this.#ready = false;
  }

  #config(): Float32Array {
    return Float32Array.of(KINDS.indexOf(this.settings.adapter), this.slots.capacity, this.probe.channels);
  }

  /** The active state (through the method), every stored slot, keys, selection state and counters. */
  async state(): Promise<Record<string, Float32Array>> {
    await this.#init();
    const out = await this.inner.state();
    out[CONFIG] = this.#config();
    for (const id of this.slots.open()) {
      for (const [k, v] of Object.entries(await this.slots.read(id))) out[`slots.${id}.state.${k}`] = v;
      const s = this.slots.info[id]!;
      out[`slots.${id}.info`] = Float32Array.of(s.frames, s.lastUsed, s.opened);
    }
    Object.assign(out, this.selector.state("slots.selector"));
    Object.assign(out, await this.#window?.state("slots.frames") ?? {});
    const c = this.counts;
    out[META] = Float32Array.of(this.active, this.frame, c.switches, c.opened, c.merged, c.evicted);
    return out;
  }

  loadState(state: Record<string, Float32Array>): void {
    const config = state[CONFIG];
    const want = this.#config();
    if (!config || config.length !== want.length || config.some((v, i) => v !== want[i])) {
      const got = config ? `adapter ${KINDS[config[0]] ?? "?"}, ${config[1]} slots` : "no adapter bank";
      throw new Error(
        `The saved state has ${got}; this run has adapter ${this.settings.adapter}, ${this.slots.capacity} slots`,
      );
    }
    const meta = state[META];
    if (!meta) throw new Error("The saved state's adapter bank has no slot metadata");
    const rest: Record<string, Float32Array> = {};
    const stored = new Map<number, Record<string, Float32Array>>();
    for (const [k, v] of Object.entries(state)) {
      const m = /^slots\.(\d+)\.state\.(.+)$/.exec(k);
      if (m) {
        const id = Number(m[1]);
        if (!stored.has(id)) stored.set(id, {});
        stored.get(id)![m[2]] = v;
      } else if (k !== CONFIG && !k.startsWith("slots.")) rest[k] = v;
    }
    this.inner.loadState(rest);
    this.slots.dispose();
    for (const [id, s] of stored) {
      const info = state[`slots.${id}.info`];
      if (id >= this.slots.capacity || !info) {
        throw new Error(`The saved state's slot ${id} does not fit this bank`);
      }
      this.slots.write(id, s);
      this.slots.info[id] = { frames: info[0], lastUsed: info[1], opened: info[2] };
    }
    this.selector.loadState("slots.selector", state);
    this.#window?.loadState("slots.frames", state, this.slots.backend);
    [this.active, this.frame] = [meta[0], meta[1]];
    [this.counts.switches, this.counts.opened, this.counts.merged, this.counts.evicted] = meta.slice(2);
    this.#ready = true;
  }

  dispose(): void {
    this.inner.dispose();
    this.#window?.clear();
    this.slots.dispose();
  }
}

function firstBackend(model: Module) {
  return model.namedState()[0][1].backend;
}

/** The bank when `method` is one (stream loop, reports, the service). */
export function bankOf(method: TtaMethod): BankedMethod | null {
  return method instanceof BankedMethod ? method : null;
}
