// 2-D convolution (NCHW, grouped, strided, dilated): kernels.ts conv2d, conv2d_grad_input,
// conv2d_grad_weight; the CPU backend is the reference.
//
// conv_tiled is an implicit GEMM with register tiling and no workgroup memory (see matmul.wgsl for why):
// an invocation owns 4 neighbouring output positions of one row x ROWS output channels. Per kernel row it
// loads the source segment the 4 windows span with 16-byte loads (shifted into place in registers), and
// the weights, laid out beforehand by conv_weights as [group][k][row] (padded to ROWS), with 16-byte loads
// across output channels. On llvmpipe every load costs a loop over the SIMD lanes whatever its width, so
// vec4 loads of both operands are what make it fast; on GPUs the same shape gives coalesced loads.
//
// The same entry computes the input gradient (the transposed convolution) without atomics: for each stride
// phase (ih % sh, iw % sw) only a fixed subset of taps reaches dy, and over that subset the gradient is a
// stride-1 correlation of dy with the flipped sub-kernel, written to every sh-th row and sw-th column.

struct Tiled {
  src_c: u32, // channels per image of the gathered operand (x forward, dy for the input gradient)
  src_h: u32,
  src_w: u32,
  groups: u32,
  cing: u32, // gathered channels per group
  khe: u32, // kernel rows taken (effective kernel)
  dh: u32, // source rows between kernel rows
  sh: u32, // source rows between output rows
  off_h: u32, // i32: source row of kernel row 0 at output row 0
  off_w: u32, // i32: source column of tap 0 at output column 0
  rows: u32, // output channels per group
  rows_pad: u32, // rows rounded up to ROWS in the weight layout
  pos_h: u32, // output positions computed: pos_h x pos_w
  pos_w: u32,
  out_c: u32, // output channels per image
  out_h: u32,
  out_w: u32,
  // Position (a, b) is written at (opy + osh*a, opx + osw*b) of the output plane.
  osh: u32,
  osw: u32,
  opy: u32,
  opx: u32,
  off_x: u32,
  off_y: u32,
  off_bias: u32,
  base_x: u32,
  base_y: u32,
  base_z: u32,
}

override WG_X: u32 = 64;
// Output channels per invocation, a multiple of 4 (the host uses 4: 8 doubles the accumulators and runs
// 2x slower on llvmpipe).
override ROWS: u32 = 4;
// Taps per kernel row, source columns between output columns, between taps.
override KW: u32 = 3;
override SW: u32 = 1;
override DW: u32 = 1;
override BIAS: bool = false;
// Source elements the 4 windows of a kernel row span, and the 16-byte loads that cover them at any shift.
override SEG: u32 = 3u * SW + (KW - 1u) * DW + 1u;
override NV: u32 = (SEG + 6u) / 4u;

// The source binding covers a multiple of 4 elements (the host pads it), so every element is in a vec4.
@group(0) @binding(0) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> wt4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<uniform> p: Tiled;

// Elements [4i, 4i+4) of the source, clamped into the binding: reads outside it only feed padding columns
// and rows, which are zeroed.
fn load4(i: i32) -> vec4<f32> {
  return src4[clamp(i, 0, i32(arrayLength(&src4)) - 1)];
}

@compute @workgroup_size(WG_X)
fn conv_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = (wg.x + p.base_x) * WG_X + lid.x;
  let tiles_w = (p.pos_w + 3u) / 4u;
  if (tile >= tiles_w * p.pos_h) {
    return;
  }
  let oy = tile / tiles_w;
  let ox = (tile % tiles_w) * 4u;
  let r0 = (wg.y + p.base_y) * ROWS;
  let z = wg.z + p.base_z;
  let grp = z % p.groups;
  let img = z / p.groups;
  let ih0 = i32(oy * p.sh) + i32(p.off_h);
  let iw0 = i32(ox * SW) + i32(p.off_w);
  let src_hw = p.src_h * p.src_w;
  let ktaps = p.khe * KW;
  var acc: array<vec4<f32>, 8>; // acc[(r / 4) * 4 + j]: 4 rows at position j
  for (var ci = 0u; ci < p.cing; ci++) {
    let plane = i32(p.off_x + (img * p.src_c + grp * p.cing + ci) * src_hw);
    let kbase = (grp * p.cing + ci) * ktaps;
    for (var ky = 0u; ky < p.khe; ky++) {
      let ih = ih0 + i32(ky * p.dh);
      let okh = ih >= 0 && ih < i32(p.src_h);
      let s = plane + clamp(ih, 0, i32(p.src_h) - 1) * i32(p.src_w) + iw0;
      let lead = s & 3;
      let first = (s - lead) / 4;
      var f: array<f32, 72>;
      for (var v = 0u; v < NV; v++) {
        let q = load4(first + i32(v));
        f[4u * v] = q.x;
        f[4u * v + 1u] = q.y;
        f[4u * v + 2u] = q.z;
        f[4u * v + 3u] = q.w;
      }
      var seg: array<f32, 64>;
      for (var t = 0u; t < SEG; t++) {
        // Shift by the segment's misalignment, and zero the padding columns.
        let lo = select(f[t], f[t + 1u], lead == 1);
        let hi = select(f[t + 2u], f[t + 3u], lead == 3);
        let iw = iw0 + i32(t);
        seg[t] = select(0.0, select(lo, hi, lead >= 2), okh && iw >= 0 && iw < i32(p.src_w));
      }
      for (var kx = 0u; kx < KW; kx++) {
        let wrow = ((kbase + ky * KW + kx) * p.rows_pad + r0) / 4u;
        for (var r = 0u; r < ROWS / 4u; r++) {
          let wv = wt4[wrow + r];
          acc[r * 4u] += wv * seg[kx * DW];
          acc[r * 4u + 1u] += wv * seg[SW + kx * DW];
          acc[r * 4u + 2u] += wv * seg[2u * SW + kx * DW];
          acc[r * 4u + 3u] += wv * seg[3u * SW + kx * DW];
        }
      }
    }
  }
  let plane_out = p.out_h * p.out_w;
  let orow = (p.opy + p.osh * oy) * p.out_w + p.opx;
  for (var r = 0u; r < ROWS; r++) {
    let row = r0 + r;
    if (row < p.rows) {
      let c = grp * p.rows + row;
      var b = 0.0;
      if (BIAS) {
        b = bias[p.off_bias + c];
      }
      let base = p.off_y + (img * p.out_c + c) * plane_out + orow;
      for (var j = 0u; j < 4u; j++) {
        if (ox + j < p.pos_w) {
          dst[base + p.osw * (ox + j)] = acc[(r / 4u) * 4u + j][r % 4u] + b;
        }
      }
    }
  }
}

// The weight layout conv_tiled reads: out[(g*K + k)*rows_pad + r], k = (c*khe + a)*kwe + b, zero for
// r >= rows. The weight is w[co, ci, kh, kw] with kh = kh0 + a*kh_step, kw = kw0 + b*kw_step, and
// (co, ci) = (r, c) for the forward pass or (c, r) for the input gradient (swap).
struct Layout {
  total: u32,
  rows: u32,
  rows_pad: u32,
  cols: u32,
  khe: u32,
  kwe: u32,
  coutg: u32,
  cing: u32,
  kh: u32,
  kw: u32,
  kh0: u32,
  kh_step: u32, // i32
  kw0: u32,
  kw_step: u32, // i32
  swap: u32,
  off_w: u32,
}

@group(0) @binding(0) var<storage, read> w_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> w_out: array<f32>;
@group(0) @binding(2) var<uniform> lay: Layout;

@compute @workgroup_size(64)
fn conv_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x; i < lay.total; i += nwg.x * 64u) {
    let r = i % lay.rows_pad;
    let k = (i / lay.rows_pad) % (lay.cols * lay.khe * lay.kwe);
    let g = i / (lay.rows_pad * lay.cols * lay.khe * lay.kwe);
    var v = 0.0;
    if (r < lay.rows) {
      let b = k % lay.kwe;
      let a = (k / lay.kwe) % lay.khe;
      let c = k / (lay.kwe * lay.khe);
      let co = select(r, c, lay.swap != 0u);
      let ci = select(c, r, lay.swap != 0u);
      let kh = u32(i32(lay.kh0) + i32(a) * i32(lay.kh_step));
      let kw = u32(i32(lay.kw0) + i32(b) * i32(lay.kw_step));
      v = w_in[lay.off_w + ((g * lay.coutg + co) * lay.cing + ci) * lay.kh * lay.kw + kh * lay.kw + kw];
    }
    w_out[i] = v;
  }
}

// dw[co, ci, ky, kx] = sum over images, oh, ow of dy * x. An invocation owns GW_ROWS output channels of one
// group x 4 flattened (ci, ky, kx) columns and runs the reduction over its part of the images itself:
// z = part * groups + group, part p sums images [p*n, (p+1)*n) into its own slot of the output.
struct Conv {
  n: u32,
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  kh: u32,
  kw: u32,
  sh: u32,
  sw: u32,
  ph: u32,
  pw: u32,
  dh: u32,
  dw: u32,
  groups: u32,
  oh: u32,
  ow: u32,
  off_x: u32,
  off_dy: u32,
  off_out: u32,
  base_x: u32,
  base_y: u32,
  base_z: u32,
}

override GW_WG_X: u32 = 16;
override GW_WG_Y: u32 = 4;
// Output channels per invocation: 1, 4 or 8.
override GW_ROWS: u32 = 4;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read> gw_x: array<f32>;
@group(0) @binding(1) var<storage, read> gw_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> gw_out: array<f32>;
@group(0) @binding(3) var<uniform> q: Conv;

@compute @workgroup_size(GW_WG_X, GW_WG_Y)
fn conv2d_grad_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let g3 = wg + vec3<u32>(q.base_x, q.base_y, q.base_z);
  let col0 = (g3.x * GW_WG_X + lid.x) * 4u;
  let row0 = (g3.y * GW_WG_Y + lid.y) * GW_ROWS;
  let grp = g3.z % q.groups;
  let part = g3.z / q.groups;
  let coutg = q.cout / q.groups;
  let cing = q.cin / q.groups;
  let taps = q.kh * q.kw;
  let cols = cing * taps;
  if (col0 >= cols || row0 >= coutg) {
    return;
  }
  let hw = q.h * q.w;
  let ohw = q.oh * q.ow;
  // Per column: input plane offset and the window offset of its tap.
  var cplane: vec4<u32>;
  var offy: vec4<i32>;
  var offx: vec4<i32>;
  for (var j = 0u; j < 4u; j++) {
    let col = min(col0 + j, cols - 1u);
    let tap = col % taps;
    cplane[j] = (grp * cing + col / taps) * hw;
    offy[j] = i32((tap / q.kw) * q.dh) - i32(q.ph);
    offx[j] = i32((tap % q.kw) * q.dw) - i32(q.pw);
  }
  var dyrow: array<u32, 8>;
  for (var i = 0u; i < GW_ROWS; i++) {
    dyrow[i] = (grp * coutg + min(row0 + i, coutg - 1u)) * ohw;
  }
  let hi = vec4<i32>(i32(q.h));
  let wi = vec4<i32>(i32(q.w));
  var acc: array<vec4<f32>, 8>;
  for (var img = part * q.n; img < (part + 1u) * q.n; img++) {
    let xb = q.off_x + img * q.cin * hw;
    let db = q.off_dy + img * q.cout * ohw;
    for (var oy = 0u; oy < q.oh; oy++) {
      let ih = vec4<i32>(i32(oy * q.sh)) + offy;
      let okh = ih >= vec4<i32>(0) & ih < hi;
      let rowoff = vec4<u32>(xb) + cplane + vec4<u32>(clamp(ih, vec4<i32>(0), hi - 1)) * q.w;
      for (var ox = 0u; ox < q.ow; ox++) {
        let iw = vec4<i32>(i32(ox * q.sw)) + offx;
        let ok = okh & iw >= vec4<i32>(0) & iw < wi;
        let idx = rowoff + vec4<u32>(clamp(iw, vec4<i32>(0), wi - 1));
        let xv = select(vec4<f32>(0.0), vec4<f32>(gw_x[idx.x], gw_x[idx.y], gw_x[idx.z], gw_x[idx.w]), ok);
        let e = db + oy * q.ow + ox;
        for (var i = 0u; i < GW_ROWS; i++) {
          acc[i] += gw_dy[dyrow[i] + e] * xv;
        }
      }
    }
  }
  for (var i = 0u; i < GW_ROWS; i++) {
    let co = row0 + i;
    if (co < coutg) {
      let base = q.off_out + part * q.cout * cols + (grp * coutg + co) * cols;
      for (var j = 0u; j < 4u; j++) {
        if (col0 + j < cols) {
          var v = acc[i][j];
          if (ACCUMULATE) {
            v += gw_out[base + col0 + j];
          }
          gw_out[base + col0 + j] = v;
        }
      }
    }
  }
}
