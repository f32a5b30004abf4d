/**
 * What a method module exports to register itself: one descriptor with its name, how to create it, and the
 * facts the CLI, the planner, the service and the memory policy need about it (src/methods/registry.ts lists
 * them; nothing else names a method).
 */
import type { ImageSet } from "../data/images.ts";
import type { PreprocessOptions } from "../data/preprocess.ts";
import type { Module } from "../nn/module.ts";
import type { OptimizerConfig } from "./backprop_method.ts";
import type { TransferPlan } from "./mobiletl.ts";
import type { TtaMethod } from "./tta.ts";
import { DEFAULT_MOMENTUM, type StreamWrap } from "./streaming.ts";

export interface MethodOptions {
  lr?: number;
  /** Clean source data (EcoTTA's warm-up). */
  warmup?: { set: ImageSet; preprocess?: PreprocessOptions };
  /** How errors name the model (its file). */
  name?: string;
  /**
   * The governor's switch: data-dependent branches take their most expensive side (every sample passes
   * EATA/SAR/EcoTTA filters, no reset). The estimator runs methods on the null backend, whose reads are
   * zeros, so without it a filter would keep nothing and the estimate would miss the backward pass.
   */
  plan?: boolean;
  /** Method-specific settings (tests and tools; e.g. EATA's margins). */
  extra?: Record<string, unknown>;
  /** How the method meets the stream (streaming.ts): memory bank, learning cadence, target statistics. */
  stream?: StreamSettings;
  /** What wraps the method's core instead of a plain StreamingMethod (the adapter bank: bank/mod.ts withBank). */
  wrap?: StreamWrap;
}

export interface StreamSettings {
  /** Memory bank frames = the minibatch of each learning step (64). */
  capacity?: number;
  /** Learn after this many new frames (default: capacity). */
  every?: number;
  /** Target statistics follow the bank (default) or the stream. */
  statsFrom?: "bank" | "stream";
  /** How far each learning step moves the target statistics (0.1; streaming.ts). */
  momentum?: number;
  /** The 1/n warm-up of the statistics after a reset (default off; streaming.ts). */
  warmup?: boolean;
  /** The collapse guard (default on). */
  collapseGuard?: boolean;
  /** The bank takes every frame while it has room (default true; false: RoTTA's strict quotas). */
  fillFirst?: boolean;
}

/** A flag only this method reads, for --help. */
export interface MethodFlag {
  flag: string;
  help: string;
}

interface DescriptorBase<N extends string> {
  readonly name: N;
  /** One line for --help. */
  readonly summary: string;
  /** Runs a backward pass (so it saves activations and an activation store matters). */
  readonly backward: boolean;
  /** What `--store auto` resolves to when no planner chooses. */
  readonly store: "fp32" | "mask";
  /** `--method auto` tries methods of higher rank first; 0: never chosen by auto. */
  readonly rank: number;
  /** Reference optimizer settings (absent: trains nothing). */
  readonly optimizer?: OptimizerConfig;
  readonly flags?: readonly MethodFlag[];
}

export interface AdaptDescriptor<N extends string = string> extends DescriptorBase<N> {
  readonly task: "adapt";
  /** False for the unadapted baseline: no collapse guard, no state to checkpoint. */
  readonly adapts: boolean;
  /**
   * Options under which real data passes every filter, so a measured run takes the same branches as the
   * planned one (governor tables and tests compare the two).
   */
  readonly open?: Record<string, unknown>;
  /** Why `--method auto` must not pick it for this run, or null. */
  unavailableForAuto?(run: { warmup: boolean }): string | null;
  create(model: Module, options: MethodOptions): Promise<TtaMethod>;
}

export interface TrainDescriptor<N extends string = string> extends DescriptorBase<N> {
  readonly task: "train";
  /** Choose what trains (setTrainable, modes, tags) for the top `topBlocks` blocks. */
  prepare(model: Module, options: { topBlocks?: number }): TransferPlan;
}

export type MethodDescriptor<N extends string = string> = AdaptDescriptor<N> | TrainDescriptor<N>;

/** The robust-BN settings a core gets from the stream settings (backprop_method.ts RobustStats). */
export function statsOf(o: MethodOptions): { track: boolean; momentum: number } {
  return {
    track: (o.stream?.statsFrom ?? "bank") === "bank",
    momentum: o.stream?.momentum ?? DEFAULT_MOMENTUM,
  };
}

/** A method's own options from MethodOptions: `extra`, then lr, plan and the statistics' settings. */
export function methodSettings(o: MethodOptions): Record<string, unknown> {
  return {
    ...o.extra,
    ...(o.lr !== undefined ? { lr: o.lr } : {}),
    ...(o.plan !== undefined ? { plan: o.plan } : {}),
    stats: statsOf(o),
  };
}
