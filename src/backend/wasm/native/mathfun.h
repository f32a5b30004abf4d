// Vector exp and log for the elementwise kernels: Cephes' single-precision expf/logf polynomials (S. L.
// Moshier), within 2 ulp on the normal range, with the IEEE special cases of Math.exp/Math.log (inf, 0, NaN,
// subnormal inputs and results) handled explicitly so results match the CPU reference there too.
#pragma once
#include "common.h"

INLINE v4 exp4(v4 x) {
  const v4 log2e = SPLAT(1.44269504088896341f);
  v4 xc = wasm_f32x4_max(wasm_f32x4_min(x, SPLAT(88.7228394f)), SPLAT(-103.972084f));
  v4 fx = wasm_f32x4_nearest(wasm_f32x4_mul(xc, log2e));
  v4 r = wasm_f32x4_sub(xc, wasm_f32x4_mul(fx, SPLAT(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(fx, SPLAT(-2.12194440e-4f)));
  v4 z = wasm_f32x4_mul(r, r);
  v4 y = SPLAT(1.9875691500E-4f);
  y = FMA(y, r, SPLAT(1.3981999507E-3f));
  y = FMA(y, r, SPLAT(8.3334519073E-3f));
  y = FMA(y, r, SPLAT(4.1665795894E-2f));
  y = FMA(y, r, SPLAT(1.6666665459E-1f));
  y = FMA(y, r, SPLAT(5.0000001201E-1f));
  y = FMA(y, z, wasm_f32x4_add(r, SPLAT(1.0f)));
  // 2^n as two factors 2^(n/2) * 2^(n - n/2): each stays a normal float for n down to -150 (subnormal results).
  v4 n = wasm_i32x4_trunc_sat_f32x4(fx);
  v4 n1 = wasm_i32x4_shr(n, 1);
  v4 n2 = wasm_i32x4_sub(n, n1);
  v4 s1 = wasm_i32x4_shl(wasm_i32x4_add(n1, wasm_i32x4_splat(127)), 23);
  v4 s2 = wasm_i32x4_shl(wasm_i32x4_add(n2, wasm_i32x4_splat(127)), 23);
  y = wasm_f32x4_mul(wasm_f32x4_mul(y, s1), s2);
  y = wasm_v128_bitselect(SPLAT(__builtin_inff()), y, wasm_f32x4_gt(x, SPLAT(88.7228394f)));
  y = wasm_v128_bitselect(ZERO, y, wasm_f32x4_lt(x, SPLAT(-103.972084f)));
  return wasm_v128_bitselect(x, y, wasm_f32x4_ne(x, x));
}

INLINE v4 log4(v4 x) {
  // Subnormal inputs: scale by 2^23 first, take 23 off the exponent.
  v4 tiny = wasm_f32x4_lt(x, SPLAT(1.17549435e-38f));
  v4 xs = wasm_v128_bitselect(wasm_f32x4_mul(x, SPLAT(8388608.0f)), x, tiny);
  v4 bits = xs;
  v4 e = wasm_i32x4_sub(wasm_u32x4_shr(bits, 23), wasm_i32x4_splat(126));
  e = wasm_i32x4_sub(e, wasm_v128_and(tiny, wasm_i32x4_splat(23)));
  v4 m = wasm_v128_or(wasm_v128_and(bits, wasm_i32x4_splat(0x007fffff)), wasm_i32x4_splat(0x3f000000));
  v4 ef = wasm_f32x4_convert_i32x4(e);
  v4 small = wasm_f32x4_lt(m, SPLAT(0.707106781186547524f));
  ef = wasm_f32x4_sub(ef, wasm_v128_and(small, SPLAT(1.0f)));
  m = wasm_f32x4_sub(wasm_f32x4_add(m, wasm_v128_and(small, m)), SPLAT(1.0f));
  v4 z = wasm_f32x4_mul(m, m);
  v4 y = SPLAT(7.0376836292E-2f);
  y = FMA(y, m, SPLAT(-1.1514610310E-1f));
  y = FMA(y, m, SPLAT(1.1676998740E-1f));
  y = FMA(y, m, SPLAT(-1.2420140846E-1f));
  y = FMA(y, m, SPLAT(1.4249322787E-1f));
  y = FMA(y, m, SPLAT(-1.6668057665E-1f));
  y = FMA(y, m, SPLAT(2.0000714765E-1f));
  y = FMA(y, m, SPLAT(-2.4999993993E-1f));
  y = FMA(y, m, SPLAT(3.3333331174E-1f));
  y = wasm_f32x4_mul(wasm_f32x4_mul(y, m), z);
  y = FMA(ef, SPLAT(-2.12194440e-4f), y);
  y = FMA(z, SPLAT(-0.5f), y);
  v4 r = wasm_f32x4_add(m, y);
  r = FMA(ef, SPLAT(0.693359375f), r);
  // log(0) = -inf, log(negative) = NaN, log(inf) = inf, log(NaN) = NaN.
  r = wasm_v128_bitselect(SPLAT(-__builtin_inff()), r, wasm_f32x4_eq(x, ZERO));
  r = wasm_v128_bitselect(SPLAT(__builtin_nanf("")), r, wasm_f32x4_lt(x, ZERO));
  r = wasm_v128_bitselect(x, r, wasm_f32x4_eq(x, SPLAT(__builtin_inff())));
  return wasm_v128_bitselect(x, r, wasm_f32x4_ne(x, x));
}

INLINE float expf_(float x) { return wasm_f32x4_extract_lane(exp4(SPLAT(x)), 0); }
INLINE float logf_(float x) { return wasm_f32x4_extract_lane(log4(SPLAT(x)), 0); }
