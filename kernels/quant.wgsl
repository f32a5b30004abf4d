// Saved-activation codecs (kernels.ts quantize, dequantize, f16_pack, f16_unpack); the CPU reference is
// src/backend/cpu/quant.ts.
//
// A tensor over the storage binding limit runs in chunks that start at a multiple of the group size and of
// 8 elements, so a chunk owns whole groups and whole packed words. `first` is the chunk's first element in
// the whole tensor (it selects the params entry); `*_off` is where the chunk starts inside each bound window.

override WG: u32 = 256u;
// Bits per code: 8 or 4.
override BITS: u32 = 8u;

struct Chunk {
  n: u32,
  first: u32,
  group: u32,
  x_off: u32,
  out_off: u32,
}

fn levels() -> f32 {
  return f32((1u << BITS) - 1u);
}

// Pass 1 of quantize: one invocation per group finds min and max (exact: comparisons only).
@group(0) @binding(0) var<storage, read> mm_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> mm_params: array<f32>;
@group(0) @binding(2) var<uniform> mm_p: Chunk;

@compute @workgroup_size(WG)
fn quant_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = mm_p;
  let groups = (p.n + p.group - 1u) / p.group;
  let g0 = p.first / p.group;
  for (var g = gid.x; g < groups; g += nwg.x * WG) {
    let s = g * p.group;
    let e = min(s + p.group, p.n);
    var lo = mm_x[p.x_off + s];
    var hi = lo;
    for (var i = s + 1u; i < e; i++) {
      let v = mm_x[p.x_off + i];
      lo = min(lo, v);
      hi = max(hi, v);
    }
    mm_params[2u * (g0 + g)] = (hi - lo) / levels();
    mm_params[2u * (g0 + g) + 1u] = lo;
  }
}

// Pass 2 of quantize: one invocation per output word owns all of its codes, so no atomics are needed.
@group(0) @binding(0) var<storage, read> pk_x: array<f32>;
@group(0) @binding(1) var<storage, read> pk_params: array<f32>;
@group(0) @binding(2) var<storage, read_write> pk_out: array<u32>;
@group(0) @binding(3) var<uniform> pk_p: Chunk;

@compute @workgroup_size(WG)
fn quant_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = pk_p;
  let per = 32u / BITS;
  let words = (p.n + per - 1u) / per;
  for (var w = gid.x; w < words; w += nwg.x * WG) {
    var bits = 0u;
    let count = min(per, p.n - w * per);
    for (var j = 0u; j < count; j++) {
      let i = w * per + j;
      let g = (p.first + i) / p.group;
      let scale = pk_params[2u * g];
      var q = 0u;
      if (scale > 0.0) {
        let r = (pk_x[p.x_off + i] - pk_params[2u * g + 1u]) / scale;
        q = u32(clamp(floor(r + 0.5), 0.0, levels()));
      }
      bits |= q << (j * BITS);
    }
    pk_out[p.out_off + w] = bits;
  }
}

@group(0) @binding(0) var<storage, read> dq_packed: array<u32>;
@group(0) @binding(1) var<storage, read> dq_params: array<f32>;
@group(0) @binding(2) var<storage, read_write> dq_out: array<f32>;
@group(0) @binding(3) var<uniform> dq_p: Chunk;

@compute @workgroup_size(WG)
fn dequantize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = dq_p;
  let per = 32u / BITS;
  let mask = (1u << BITS) - 1u;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let q = (dq_packed[p.x_off + i / per] >> ((i % per) * BITS)) & mask;
    let g = (p.first + i) / p.group;
    dq_out[p.out_off + i] = dq_params[2u * g + 1u] + f32(q) * dq_params[2u * g];
  }
}

// f16 conversion on bit patterns (inputs and outputs bound as u32): exact and identical to the CPU
// reference, and immune to a device flushing f32 subnormals or canonicalising NaNs.
fn f16_bits(x: u32) -> u32 {
  let sign = (x >> 16u) & 0x8000u;
  let ex = i32((x >> 23u) & 0xffu);
  var mant = x & 0x7fffffu;
  if (ex == 255) {
    return sign | 0x7c00u | select(0u, 0x200u | (mant >> 13u), mant != 0u);
  }
  let e = ex - 112;
  if (e >= 31) {
    return sign | 0x7c00u;
  }
  if (e <= 0) {
    if (e < -10) {
      return sign;
    }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    var half = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (half & 1u) == 1u)) {
      half += 1u;
    }
    return sign | half;
  }
  var half = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u) == 1u)) {
    half += 1u;
  }
  return sign | half;
}

fn f32_bits(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    // Subnormal halves are normal f32 values: m * 2^-24, exact.
    return sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8);
  }
  if (e == 31u) {
    return sign | 0x7f800000u | (m << 13u);
  }
  return sign | ((e + 112u) << 23u) | (m << 13u);
}

@group(0) @binding(0) var<storage, read> hp_x: array<u32>;
@group(0) @binding(1) var<storage, read_write> hp_out: array<u32>;
@group(0) @binding(2) var<uniform> hp_p: Chunk;

@compute @workgroup_size(WG)
fn f16_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = hp_p;
  let words = (p.n + 1u) / 2u;
  for (var w = gid.x; w < words; w += nwg.x * WG) {
    let lo = f16_bits(hp_x[p.x_off + 2u * w]);
    var hi = 0u;
    if (2u * w + 1u < p.n) {
      hi = f16_bits(hp_x[p.x_off + 2u * w + 1u]);
    }
    hp_out[p.out_off + w] = lo | (hi << 16u);
  }
}

@group(0) @binding(0) var<storage, read> hu_packed: array<u32>;
@group(0) @binding(1) var<storage, read_write> hu_out: array<u32>;
@group(0) @binding(2) var<uniform> hu_p: Chunk;

@compute @workgroup_size(WG)
fn f16_unpack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = hu_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let h = (hu_packed[p.x_off + i / 2u] >> ((i % 2u) * 16u)) & 0xffffu;
    hu_out[p.out_off + i] = f32_bits(h);
  }
}
