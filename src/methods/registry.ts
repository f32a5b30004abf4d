/**
 * Every method, once. The CLI (--method, --help), the planner (rank, backward), the service (its default,
 * what adapts), the memory policy (the store `auto` means) and the governor (create with `plan`) read this
 * list; a new method is its own file plus one line here.
 */
import type { Module } from "../nn/module.ts";
import type { StoreName } from "../memory/policy.ts";
import { bn, source } from "./bn_adapt.ts";
import type { AdaptDescriptor, MethodOptions, TrainDescriptor } from "./descriptor.ts";
import { eata } from "./eata.ts";
import { ecotta } from "./ecotta.ts";
import { rotta } from "./rotta.ts";
import { sar } from "./sar.ts";
import { tent } from "./tent.ts";
import { bias, full, mobiletl } from "./transfer.ts";
import type { TtaMethod } from "./tta.ts";

export const METHODS = [source, bn, tent, eata, sar, ecotta, rotta, full, bias, mobiletl] as const;

type Registered = typeof METHODS[number];
export type MethodName = Registered["name"];
export type AdaptMethodName = Extract<Registered, { task: "adapt" }>["name"];
export type TrainMethodName = Extract<Registered, { task: "train" }>["name"];

/** The method `serve` runs when none is given. */
export const SERVICE_DEFAULT: AdaptMethodName = "rotta";

export const ADAPT_METHODS: readonly AdaptDescriptor<AdaptMethodName>[] = METHODS.filter(
  (m): m is Extract<Registered, { task: "adapt" }> => m.task === "adapt",
);
export const TRAIN_METHODS: readonly TrainDescriptor<TrainMethodName>[] = METHODS.filter(
  (m): m is Extract<Registered, { task: "train" }> => m.task === "train",
);

export function isMethodName(name: string): name is MethodName {
  return METHODS.some((m) => m.name === name);
}

export function methodNamed(name: string): Registered {
  const m: Registered | undefined = METHODS.find((d) => d.name === name);
  if (!m) throw new Error(`Unknown method "${name}" (known: ${METHODS.map((d) => d.name).join(", ")})`);
  return m;
}

export function adaptMethod(name: string): AdaptDescriptor<AdaptMethodName> {
  const m = methodNamed(name);
  if (m.task !== "adapt") {
    throw new Error(`"${name}" is a train method; adapt methods: ${names("adapt").join(", ")}`);
  }
  return m;
}

export function trainMethod(name: string): TrainDescriptor<TrainMethodName> {
  const m = methodNamed(name);
  if (m.task !== "train") {
    throw new Error(`"${name}" is an adapt method; train methods: ${names("train").join(", ")}`);
  }
  return m;
}

/** Method names of a task, in registry order. */
export function names(task: "adapt" | "train"): string[] {
  return METHODS.filter((m) => m.task === task).map((m) => m.name);
}

/** A task's methods that `--method auto` may choose, strongest first. */
export function autoCandidates(task: "adapt" | "train"): Registered[] {
  return METHODS.filter((m) => m.task === task && m.rank > 0).sort((a, b) => b.rank - a.rank);
}

export function createMethod(name: string, model: Module, options: MethodOptions = {}): Promise<TtaMethod> {
  return adaptMethod(name).create(model, options);
}

/** The concrete store `auto` means for a method (its descriptor's), or `store` itself. */
export function resolveStore(store: StoreName, method?: string): Exclude<StoreName, "auto"> {
  if (store !== "auto") return store;
  return method === undefined ? "fp32" : methodNamed(method).store;
}

/** `--method` help lines: each method of a task with its summary and its own flags. */
export function methodHelp(task: "adapt" | "train", indent = "  "): string {
  const rows = METHODS.filter((m) => m.task === task);
  const width = Math.max(...rows.map((m) => m.name.length));
  const lines: string[] = [];
  for (const m of rows) {
    lines.push(`${indent}${m.name.padEnd(width)}  ${m.summary}`);
    for (const f of m.flags ?? []) lines.push(`${indent}${" ".repeat(width)}    ${f.flag}: ${f.help}`);
  }
  return lines.join("\n");
}
