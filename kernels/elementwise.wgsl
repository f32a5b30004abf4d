// Elementwise kernels of kernels.ts: fill, copy, unary, unary_grad, binary, axpy.
//
// Every invocation walks its elements with a grid-stride loop, so a capped grid covers any n. A storage
// larger than maxStorageBufferBindingSize is processed in chunks, each bound as a window whose start is
// rounded down to the offset alignment: `*_off` is where the chunk's first element sits in its window.

override WG: u32 = 256u;
// Op code, fixed per pipeline: one of the OP_UNARY_* or OP_BINARY_* below (tools/gen_kernels.ts turns them
// into OP_CODES for the host, keyed by kernels.ts's UnaryOp / BinaryOp names).
override OP: u32 = 0u;

const OP_UNARY_IDENTITY: u32 = 0u;
const OP_UNARY_NEG: u32 = 1u;
const OP_UNARY_RELU: u32 = 2u;
const OP_UNARY_RELU6: u32 = 3u;
const OP_UNARY_CLIP: u32 = 4u;
const OP_UNARY_HARDSWISH: u32 = 5u;
const OP_UNARY_HARDSIGMOID: u32 = 6u;
const OP_UNARY_SIGMOID: u32 = 7u;
const OP_UNARY_EXP: u32 = 8u;
const OP_UNARY_LOG: u32 = 9u;
const OP_UNARY_SQRT: u32 = 10u;
const OP_UNARY_RSQRT: u32 = 11u;
const OP_UNARY_SQUARE: u32 = 12u;
const OP_UNARY_ABS: u32 = 13u;
const OP_UNARY_SIGN: u32 = 14u;
const OP_UNARY_ERF: u32 = 15u;

const OP_BINARY_ADD: u32 = 0u;
const OP_BINARY_SUB: u32 = 1u;
const OP_BINARY_MUL: u32 = 2u;
const OP_BINARY_DIV: u32 = 3u;
const OP_BINARY_MAX: u32 = 4u;
const OP_BINARY_MIN: u32 = 5u;
const OP_BINARY_POW: u32 = 6u;
const OP_BINARY_EQ: u32 = 7u;

// fill: the value's bit pattern, so one entry fills f32 and u32 storages.
struct FillParams {
  n: u32,
  out_off: u32,
  bits: u32,
}
@group(0) @binding(0) var<storage, read_write> fill_out: array<u32>;
@group(0) @binding(1) var<uniform> fill_p: FillParams;

@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x; i < fill_p.n; i += nwg.x * WG) {
    fill_out[fill_p.out_off + i] = fill_p.bits;
  }
}

// copy: bit copy, for f32 and u32 alike.
struct CopyParams {
  n: u32,
  x_off: u32,
  out_off: u32,
}
@group(0) @binding(0) var<storage, read> copy_x: array<u32>;
@group(0) @binding(1) var<storage, read_write> copy_out: array<u32>;
@group(0) @binding(2) var<uniform> copy_p: CopyParams;

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x; i < copy_p.n; i += nwg.x * WG) {
    copy_out[copy_p.out_off + i] = copy_x[copy_p.x_off + i];
  }
}

fn hardsigmoid(v: f32) -> f32 {
  return clamp(v / 6.0 + 0.5, 0.0, 1.0);
}

// erf in f32, absolute error < 2e-7: the Taylor series near 0 (keeps small arguments' relative accuracy),
// Abramowitz & Stegun 7.1.26 beyond (|error| <= 1.5e-7).
fn erf_f(v: f32) -> f32 {
  let a = abs(v);
  if (a < 0.5) {
    let z = v * v;
    return 1.1283791670955126 * v *
      (1.0 + z * (-1.0 / 3.0 + z * (0.1 + z * (-1.0 / 42.0 + z * (1.0 / 216.0 + z * (-1.0 / 1320.0))))));
  }
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(v) * (1.0 - poly * exp(-a * a));
}

// A float from its bits at runtime: a NaN or infinite const-expression is a shader-creation error in WGSL.
fn from_bits(u: u32) -> f32 {
  return bitcast<f32>(u);
}

// numpy's real power (kernels.ts BinaryOp pow).
fn pow_f(a: f32, b: f32) -> f32 {
  if (b == 2.0) { return a * a; }
  if (b == 1.0) { return a; }
  if (b == 0.5) { return sqrt(a); }
  if (b == 0.0) { return 1.0; }
  if (a < 0.0) {
    if (b != floor(b)) { return from_bits(0x7fc00000u); }
    let m = pow(-a, b);
    return select(m, -m, fract(b * 0.5) != 0.0);
  }
  if (a == 0.0) { return select(from_bits(0x7f800000u), 0.0, b > 0.0); }
  return pow(a, b);
}

fn unary_f(v: f32, alpha: f32, beta: f32) -> f32 {
  switch OP {
    case OP_UNARY_NEG: { return -v; }
    case OP_UNARY_RELU: { return select(0.0, v, v > 0.0); }
    case OP_UNARY_RELU6: { return min(max(v, 0.0), 6.0); }
    case OP_UNARY_CLIP: { return min(max(v, alpha), beta); }
    case OP_UNARY_HARDSWISH: { return v * hardsigmoid(v); }
    case OP_UNARY_HARDSIGMOID: { return hardsigmoid(v); }
    case OP_UNARY_SIGMOID: { return 1.0 / (1.0 + exp(-v)); }
    case OP_UNARY_EXP: { return exp(v); }
    case OP_UNARY_LOG: { return log(v); }
    case OP_UNARY_SQRT: { return sqrt(v); }
    case OP_UNARY_RSQRT: { return inverseSqrt(v); }
    case OP_UNARY_SQUARE: { return v * v; }
    case OP_UNARY_ABS: { return abs(v); }
    case OP_UNARY_SIGN: { return sign(v); }
    case OP_UNARY_ERF: { return erf_f(v); }
    default: { return v; }
  }
}

// f'(x), with PyTorch's choices at the kinks (kernels.ts unary_grad).
fn unary_df(v: f32, alpha: f32, beta: f32) -> f32 {
  switch OP {
    case OP_UNARY_NEG: { return -1.0; }
    case OP_UNARY_RELU: { return select(0.0, 1.0, v > 0.0); }
    case OP_UNARY_RELU6: { return select(0.0, 1.0, v > 0.0 && v < 6.0); }
    case OP_UNARY_CLIP: { return select(0.0, 1.0, v > alpha && v < beta); }
    case OP_UNARY_HARDSWISH: {
      if (v < -3.0) { return 0.0; }
      if (v > 3.0) { return 1.0; }
      return (2.0 * v + 3.0) / 6.0;
    }
    case OP_UNARY_HARDSIGMOID: { return select(0.0, 1.0 / 6.0, v > -3.0 && v < 3.0); }
    case OP_UNARY_SIGMOID: {
      let s = 1.0 / (1.0 + exp(-v));
      return s * (1.0 - s);
    }
    case OP_UNARY_EXP: { return exp(v); }
    case OP_UNARY_LOG: { return 1.0 / v; }
    case OP_UNARY_SQRT: { return 0.5 / sqrt(v); }
    case OP_UNARY_RSQRT: { return -0.5 / (v * sqrt(v)); }
    case OP_UNARY_SQUARE: { return 2.0 * v; }
    case OP_UNARY_ABS: { return sign(v); }
    case OP_UNARY_SIGN: { return 0.0; }
    case OP_UNARY_ERF: { return 1.1283791670955126 * exp(-v * v); }
    default: { return 1.0; }
  }
}

struct UnaryParams {
  n: u32,
  x_off: u32,
  out_off: u32,
  alpha: f32,
  beta: f32,
}
@group(0) @binding(0) var<storage, read> unary_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> unary_out: array<f32>;
@group(0) @binding(2) var<uniform> unary_p: UnaryParams;

@compute @workgroup_size(WG)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = unary_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    unary_out[p.out_off + i] = unary_f(unary_x[p.x_off + i], p.alpha, p.beta);
  }
}

struct UnaryGradParams {
  n: u32,
  x_off: u32,
  dy_off: u32,
  out_off: u32,
  alpha: f32,
  beta: f32,
}
@group(0) @binding(0) var<storage, read> ug_x: array<f32>;
@group(0) @binding(1) var<storage, read> ug_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> ug_out: array<f32>;
@group(0) @binding(3) var<uniform> ug_p: UnaryGradParams;

@compute @workgroup_size(WG)
fn unary_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = ug_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    ug_out[p.out_off + i] = ug_dy[p.dy_off + i] * unary_df(ug_x[p.x_off + i], p.alpha, p.beta);
  }
}

// binary: the output is dense over a rank-6 shape; each input moves by its own strides (0 = broadcast).
// Words of `dims`: shape[0..6], a strides[6..12], b strides[12..18]. Offsets wrap modulo 2^32 on purpose:
// a chunk's window may start after the sub-problem's base, and only the final sums must be in range.
struct BinaryParams {
  dims: array<vec4<u32>, 5>,
  n: u32,
  r0: u32,
  a_off: u32,
  b_off: u32,
  out_off: u32,
}
@group(0) @binding(0) var<storage, read> bin_a: array<f32>;
@group(0) @binding(1) var<storage, read> bin_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> bin_out: array<f32>;
@group(0) @binding(3) var<uniform> bin_p: BinaryParams;

fn bin_word(i: u32) -> u32 {
  return bin_p.dims[i / 4u][i % 4u];
}

fn binary_f(a: f32, b: f32) -> f32 {
  switch OP {
    case OP_BINARY_SUB: { return a - b; }
    case OP_BINARY_MUL: { return a * b; }
    case OP_BINARY_DIV: { return a / b; }
    case OP_BINARY_MAX: { return max(a, b); }
    case OP_BINARY_MIN: { return min(a, b); }
    case OP_BINARY_POW: { return pow_f(a, b); }
    case OP_BINARY_EQ: { return select(0.0, 1.0, a == b); }
    default: { return a + b; }
  }
}

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = bin_p.n;
  for (var i = gid.x; i < n; i += nwg.x * WG) {
    var rem = bin_p.r0 + i;
    var ia = bin_p.a_off;
    var ib = bin_p.b_off;
    for (var d = 5u; rem != 0u; d--) {
      let s = bin_word(d);
      let q = rem / s;
      let idx = rem - q * s;
      ia += idx * bin_word(6u + d);
      ib += idx * bin_word(12u + d);
      rem = q;
    }
    bin_out[bin_p.out_off + i] = binary_f(bin_a[ia], bin_b[ib]);
  }
}

struct AxpyParams {
  n: u32,
  x_off: u32,
  out_off: u32,
  accumulate: u32,
  alpha: f32,
}
@group(0) @binding(0) var<storage, read> axpy_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> axpy_out: array<f32>;
@group(0) @binding(2) var<uniform> axpy_p: AxpyParams;

@compute @workgroup_size(WG)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = axpy_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let v = p.alpha * axpy_x[p.x_off + i];
    // Not accumulating must not read out: its old contents may be NaN (a fresh pooled buffer).
    if (p.accumulate != 0u) {
      axpy_out[p.out_off + i] += v;
    } else {
      axpy_out[p.out_off + i] = v;
    }
  }
}
