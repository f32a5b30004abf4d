/**
 * CPU reference kernels of the saved-activation codecs (kernels.ts quantize, dequantize, f16_pack, f16_unpack).
 *
 * Arithmetic is rounded to f32 at every step (Math.fround) so that the reference computes what a device does,
 * also on the f64 gradient-check backend. f16 conversion works on bit patterns, so it is bit-exact on every
 * backend (kernels/quant.wgsl runs the same integer steps).
 */
import type { CpuKernel } from "../cpu.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of f32(v). */
export function f32Bits(v: number): number {
  f32[0] = v;
  return u32[0];
}

function fromBits(bits: number): number {
  u32[0] = bits;
  return f32[0];
}

/** binary16 bits of the f32 with bit pattern `x`, round to nearest even. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  // Inf stays inf; NaN keeps its top payload bits and is forced quiet so it cannot become inf.
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // f16 biased exponent: exp - 127 + 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // |x| < 2^-25 rounds to 0 even at the largest such value (below half the smallest subnormal, 2^-24).
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e; // 14..24: the f16 subnormal unit is 2^-24
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1))) half++; // a carry gives the smallest normal
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++; // a carry out of 0x7bff gives inf
  return sign | half;
}

/** f32 bits of the binary16 value `h` (exact). */
export function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return (sign | f32Bits(m * 2 ** -24)) >>> 0;
  if (e === 31) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
}

export const f16_pack: CpuKernel<"f16_pack"> = ({ x, out, attrs }, mem) => {
  const xs = mem.f(x), words = mem.u(out);
  const { n } = attrs;
  for (let w = 0; w < Math.ceil(n / 2); w++) {
    const lo = f32BitsToF16(f32Bits(xs[2 * w]));
    const hi = 2 * w + 1 < n ? f32BitsToF16(f32Bits(xs[2 * w + 1])) : 0;
    words[w] = (lo | (hi << 16)) >>> 0;
  }
};

export const f16_unpack: CpuKernel<"f16_unpack"> = ({ packed, out, attrs }, mem) => {
  const words = mem.u(packed), dst = mem.f(out);
  for (let i = 0; i < attrs.n; i++) {
    const h = (words[i >>> 1] >>> ((i & 1) * 16)) & 0xffff;
    dst[i] = fromBits(f16ToF32Bits(h));
  }
};

function checkBits(kernel: string, bits: number, groupSize: number): void {
  if (bits !== 4 && bits !== 8) throw new Error(`${kernel}(): bits must be 4 or 8, got ${bits}`);
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new Error(`${kernel}(): groupSize must be a positive integer, got ${groupSize}`);
  }
}

export const quantize: CpuKernel<"quantize"> = ({ x, params, out, attrs }, mem) => {
  const { n, bits, groupSize } = attrs;
  checkBits("quantize", bits, groupSize);
  const xs = mem.f(x), ps = mem.f(params), words = mem.u(out);
  const levels = (1 << bits) - 1;
  const per = 32 / bits;
  const groups = Math.ceil(n / groupSize);
  for (let g = 0; g < groups; g++) {
    const end = Math.min(n, (g + 1) * groupSize);
    let lo = Math.fround(xs[g * groupSize]), hi = lo;
    for (let i = g * groupSize + 1; i < end; i++) {
      const v = Math.fround(xs[i]);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    ps[2 * g] = Math.fround(Math.fround(hi - lo) / levels);
    ps[2 * g + 1] = lo;
  }
  words.fill(0, 0, Math.ceil(n / per));
  for (let i = 0; i < n; i++) {
    const g = Math.floor(i / groupSize);
    const scale = Math.fround(ps[2 * g]), lo = Math.fround(ps[2 * g + 1]);
    let q = 0;
    if (scale > 0) {
      const r = Math.fround(Math.fround(Math.fround(xs[i]) - lo) / scale);
      q = Math.min(levels, Math.max(0, Math.floor(Math.fround(r + 0.5))));
    }
    words[Math.floor(i / per)] |= q << ((i % per) * bits);
  }
};

export const dequantize: CpuKernel<"dequantize"> = ({ packed, params, out, attrs }, mem) => {
  const { n, bits, groupSize } = attrs;
  checkBits("dequantize", bits, groupSize);
  const words = mem.u(packed), ps = mem.f(params), dst = mem.f(out);
  const mask = (1 << bits) - 1;
  const per = 32 / bits;
  for (let i = 0; i < n; i++) {
    const g = Math.floor(i / groupSize);
    const q = (words[Math.floor(i / per)] >>> ((i % per) * bits)) & mask;
    dst[i] = Math.fround(Math.fround(ps[2 * g + 1]) + Math.fround(q * Math.fround(ps[2 * g])));
  }
};
