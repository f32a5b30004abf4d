/** CPU reference kernels for data movement and selection: strided_copy, where. */
import type { CpuKernel } from "../cpu.ts";
import type { Storage } from "../backend.ts";
import type { CpuMemory } from "../cpu.ts";

function array(s: Storage, mem: CpuMemory) {
  return s.dtype === "u32" ? mem.u(s) : mem.f(s);
}

/**
 * Visit every index of `shape` in row-major order, calling fn with the running element offset of each
 * strided operand (an odometer: each step adds one stride, each carry takes a dim's span back off).
 */
export function forStrided(
  shape: readonly number[],
  bases: readonly number[],
  strides: readonly (readonly number[])[],
  fn: (offsets: number[]) => void,
): void {
  const rank = shape.length;
  const total = shape.reduce((p, d) => p * d, 1);
  if (total === 0) return;
  const idx = new Array<number>(rank).fill(0);
  const at = [...bases];
  for (let i = 0; i < total; i++) {
    fn(at);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      for (let k = 0; k < at.length; k++) at[k] += strides[k][d];
      if (idx[d] < shape[d]) break;
      for (let k = 0; k < at.length; k++) at[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

export const strided_copy: CpuKernel<"strided_copy"> = ({ x, out, attrs }, mem) => {
  const src = array(x, mem), dst = array(out, mem);
  const { shape } = attrs;
  forStrided(shape, [attrs.x.offset, attrs.out.offset], [attrs.x.strides, attrs.out.strides], ([i, o]) => {
    dst[o] = src[i];
  });
};

export const where: CpuKernel<"where"> = ({ cond, a, b, out, attrs }, mem) => {
  const C = mem.f(cond), A = mem.f(a), B = mem.f(b), O = mem.f(out);
  let k = 0;
  forStrided(attrs.shape, [0, 0, 0], [attrs.condStrides, attrs.aStrides, attrs.bStrides], ([ic, ia, ib]) => {
    O[k++] = C[ic] !== 0 ? A[ia] : B[ib];
  });
};
