// Batched matmul C_b = op(A_b) op(B_b) (+ bias) (+ C_b): kernels.ts "matmul", plus the per-row bias mode the
// 1x1 convolution fast path uses (out[n] = W @ X[n] + bias[cout]).
//
// Register tiling without workgroup memory: each invocation owns ROWS rows x 4 columns of C and walks K
// reading its operands straight from storage. Workgroup memory and barriers compile very slowly on
// llvmpipe's fallback paths and buy little there; on real GPUs the L1 cache serves the reuse that a shared
// tile would. Tile and workgroup sizes are override constants so one source serves every device.
//
// Two entry points: matmul_vec4 loads 16-byte vectors (needs K, N, strides and offsets in multiples of 4,
// and M too when A is transposed); matmul_scalar takes any shape. Rows and columns past the edge are
// clamped on load (no branches in the K loop) and masked on store.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  stride_a: u32,
  stride_b: u32,
  stride_c: u32,
  // Element offsets inside the bound ranges (binding offsets are rounded down to the device's alignment).
  off_a: u32,
  off_b: u32,
  off_c: u32,
  off_bias: u32,
  // First workgroup of this dispatch when a grid is split over several dispatches (65535 per dimension).
  base_x: u32,
  base_y: u32,
  base_z: u32,
  // C += sum over kb < kbatch of op(A + kb*kstride_a) op(B + kb*kstride_b): a reduction over images (the
  // 1x1 convolution's weight gradient) without a scratch buffer.
  kbatch: u32,
  kstride_a: u32,
  kstride_b: u32,
}

override WG_X: u32 = 8;
override WG_Y: u32 = 8;
// Rows of C per invocation: 4 or 8.
override ROWS: u32 = 4;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
// 0: no bias; 1: bias[n] per column (kernels.ts); 2: bias[m] per row (conv2d 1x1 path).
override BIAS: u32 = 0;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias4: array<f32>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p4: Params;

@group(0) @binding(0) var<storage, read> a1: array<f32>;
@group(0) @binding(1) var<storage, read> b1: array<f32>;
@group(0) @binding(2) var<storage, read> bias1: array<f32>;
@group(0) @binding(3) var<storage, read_write> c1: array<f32>;
@group(0) @binding(4) var<uniform> p1: Params;

fn tile_origin(wg: vec3<u32>, lid: vec3<u32>, base: vec3<u32>) -> vec3<u32> {
  let g = wg + base;
  return vec3<u32>((g.x * WG_X + lid.x) * 4u, (g.y * WG_Y + lid.y) * ROWS, g.z);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let p = p4;
  let o = tile_origin(wg, lid, vec3<u32>(p.base_x, p.base_y, p.base_z));
  let col = o.x;
  let row = o.y;
  if (row >= p.m || col >= p.n) {
    return;
  }
  // Everything below is in vec4 units.
  let k4 = p.k / 4u;
  let n4 = p.n / 4u;
  let m4 = p.m / 4u;
  let col4 = col / 4u;
  var acc: array<vec4<f32>, 8>;
  // Row offsets of A clamped to the last row: loads stay in range, the surplus rows are not stored.
  var ra: array<u32, 8>;
  for (var i = 0u; i < ROWS; i++) {
    ra[i] = min(row + i, p.m - 1u) * k4;
  }
  for (var kb = 0u; kb < p.kbatch; kb++) {
    let base_a = (p.off_a + o.z * p.stride_a + kb * p.kstride_a) / 4u;
    let base_b = (p.off_b + o.z * p.stride_b + kb * p.kstride_b) / 4u;
    for (var kk = 0u; kk < k4; kk++) {
      // b[c] = B[k + c, col .. col + 3]
      var b: mat4x4<f32>;
      if (TRANS_B) {
        // B is [N, K]: four columns of op(B), each a vec4 along K, transposed in registers.
        let bb = base_b + col4 * 4u * k4 + kk;
        b = transpose(mat4x4<f32>(b4[bb], b4[bb + k4], b4[bb + 2u * k4], b4[bb + 3u * k4]));
      } else {
        let bb = base_b + kk * 4u * n4 + col4;
        b = mat4x4<f32>(b4[bb], b4[bb + n4], b4[bb + 2u * n4], b4[bb + 3u * n4]);
      }
      if (TRANS_A) {
        // A is [K, M]: vec4s run along M; four of them (k .. k+3) transpose into four rows of op(A).
        for (var h = 0u; h < ROWS / 4u; h++) {
          let ab = base_a + kk * 4u * m4 + min(row / 4u + h, m4 - 1u);
          let at = transpose(mat4x4<f32>(a4[ab], a4[ab + m4], a4[ab + 2u * m4], a4[ab + 3u * m4]));
          for (var i = 0u; i < 4u; i++) {
            let a = at[i];
            acc[h * 4u + i] += a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
          }
        }
      } else {
        for (var i = 0u; i < ROWS; i++) {
          let a = a4[base_a + ra[i] + kk];
          acc[i] += a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
        }
      }
    }
  }
  let base_c = (p.off_c + o.z * p.stride_c) / 4u;
  for (var i = 0u; i < ROWS; i++) {
    let r = row + i;
    if (r < p.m) {
      var v = acc[i];
      if (BIAS == 1u) {
        let bi = p.off_bias + col;
        v += vec4<f32>(bias4[bi], bias4[bi + 1u], bias4[bi + 2u], bias4[bi + 3u]);
      } else if (BIAS == 2u) {
        v += bias4[p.off_bias + r];
      }
      let ci = base_c + r * n4 + col4;
      if (ACCUMULATE) {
        v += c4[ci];
      }
      c4[ci] = v;
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_scalar(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let p = p1;
  let o = tile_origin(wg, lid, vec3<u32>(p.base_x, p.base_y, p.base_z));
  let col = o.x;
  let row = o.y;
  if (row >= p.m || col >= p.n) {
    return;
  }
  // op(A)[r, k] = a1[ra[r] + k * step_a]; op(B)[k, c] = b1[cb[c] + k * step_b].
  var step_a = 1u;
  var step_b = p.n;
  var ra: array<u32, 8>;
  var cb: vec4<u32>;
  for (var i = 0u; i < ROWS; i++) {
    let r = min(row + i, p.m - 1u);
    ra[i] = p.off_a + o.z * p.stride_a + select(r * p.k, r, TRANS_A);
  }
  if (TRANS_A) {
    step_a = p.m;
  }
  for (var j = 0u; j < 4u; j++) {
    let c = min(col + j, p.n - 1u);
    cb[j] = p.off_b + o.z * p.stride_b + select(c, c * p.k, TRANS_B);
  }
  if (TRANS_B) {
    step_b = 1u;
  }
  var acc: array<vec4<f32>, 8>;
  for (var kb = 0u; kb < p.kbatch; kb++) {
    let sa = kb * p.kstride_a;
    let sb = vec4<u32>(kb * p.kstride_b);
    for (var k = 0u; k < p.k; k++) {
      let ib = cb + sb + vec4<u32>(k * step_b);
      let b = vec4<f32>(b1[ib.x], b1[ib.y], b1[ib.z], b1[ib.w]);
      let ka = sa + k * step_a;
      for (var i = 0u; i < ROWS; i++) {
        acc[i] += a1[ra[i] + ka] * b;
      }
    }
  }
  let base_c = p.off_c + o.z * p.stride_c;
  for (var i = 0u; i < ROWS; i++) {
    let r = row + i;
    if (r < p.m) {
      for (var j = 0u; j < 4u; j++) {
        let c = col + j;
        if (c < p.n) {
          var v = acc[i][j];
          if (BIAS == 1u) {
            v += bias1[p.off_bias + c];
          } else if (BIAS == 2u) {
            v += bias1[p.off_bias + r];
          }
          let ci = base_c + r * p.n + c;
          if (ACCUMULATE) {
            v += c1[ci];
          }
          c1[ci] = v;
        }
      }
    }
  }
}
