/**
 * Flag parsing shared by the subcommands: node:util parseArgs (strict), plus parsers for sizes ("256MiB"),
 * numbers and lists, each failing with a UsageError that names the flag and the value.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "./errors.ts";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export function parseFlags<T extends Options>(
  command: string,
  args: string[],
  options: T,
): ReturnType<
  typeof parseArgs<{ options: T; args: string[]; strict: true; allowPositionals: false }>
>["values"] {
  try {
    return parseArgs({ options, args, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message} (see "edgetrain ${command} --help")`);
  }
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
};

/** "256MiB", "1.5GiB", "64M", "1000000" → bytes. */
export function parseBytes(flag: string, value: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`--${flag} "${value}" is not a size (examples: 256MiB, 1.5GiB, 64MB, 1000000)`);
  }
  return Math.round(Number(m[1]) * unit);
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function parseNumber(
  flag: string,
  value: string | undefined,
  options: { integer?: boolean; min?: number; max?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const v = Number(value);
  const bad = !Number.isFinite(v) || (options.integer && !Number.isInteger(v)) ||
    (options.min !== undefined && v < options.min) || (options.max !== undefined && v > options.max);
  if (bad) {
    const range = [
      options.min !== undefined ? `>= ${options.min}` : "",
      options.max !== undefined ? `<= ${options.max}` : "",
    ]
      .filter(Boolean).join(" and ");
    throw new UsageError(
      `--${flag} "${value}" must be ${options.integer ? "an integer" : "a number"}${
        range ? ` ${range}` : ""
      }`,
    );
  }
  return v;
}

/** "0.1,0.2,0.3" → [0.1, 0.2, 0.3]. */
export function parseNumberList(flag: string, value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(",").map((s) => s.trim());
  const nums = parts.map(Number);
  if (parts.some((p) => p === "") || nums.some((n) => !Number.isFinite(n))) {
    throw new UsageError(`--${flag} "${value}" must be a number or a comma-separated list of numbers`);
  }
  return nums;
}

export function oneOf<T extends string>(
  flag: string,
  value: string | undefined,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${flag} "${value}" is not one of ${allowed.join(", ")}`);
  }
  return value as T;
}
