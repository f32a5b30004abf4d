/** What a wasm kernel wrapper sees: the C entry points, storage addresses, and views for CPU fallbacks. */
import type { Storage } from "../backend.ts";
import type { CpuMemory } from "../cpu.ts";
import type { KernelArgs, KernelName } from "../kernels.ts";
import type { WasmExports } from "./runtime.ts";

export interface WasmContext {
  readonly exports: WasmExports;
  /** Byte address of a live storage of this backend. */
  addr(s: Storage): number;
  /** Byte address, or 0 (the C side's NULL) for an absent optional storage. */
  addrOr0(s: Storage | undefined): number;
  /** Float32Array / Uint32Array views of storages, for the CPU reference kernels that serve cold kernels. */
  readonly cpu: CpuMemory;
  /** Write small int32 arguments (shapes, strides) to a reserved area; returns the address of each array. */
  ints(...arrays: number[][]): number[];
}

export type WasmKernel<K extends KernelName> = (args: KernelArgs<K>, ctx: WasmContext) => void;

/** Kernels index memory without bounds checks: every element an attribute implies must exist first. */
export function need(kernel: string, name: string, s: Storage, elements: number): void {
  if (!Number.isFinite(elements) || elements < 0) {
    throw new Error(`${kernel}: the attributes give ${name} an invalid extent of ${elements} elements`);
  }
  if (s.length < elements) {
    throw new Error(`${kernel}: ${name} holds ${s.length} elements, the attributes need ${elements}`);
  }
}

/** Attributes that the C side takes as int32 must be non-negative integers that fit. */
export function ints(kernel: string, attrs: Record<string, number>): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new Error(`${kernel}: attribute ${k} must be a non-negative integer, got ${v}`);
    }
  }
}
