// Depthwise convolution (one input channel per group, cout = groups * multiplier): kernels.ts conv2d and
// conv2d_grad_input for that case.
//
// An invocation computes OUTS (4, 8 or 16) neighbouring outputs of one row of one channel. Per kernel row it
// loads the source segment their windows span once, with 16-byte loads shifted into place in registers,
// and reuses it for every tap: 3x3 stride 1 with 8 outputs needs 3-4 vector loads and 3 weight loads for
// 24 multiply-adds. Tap count, stride and dilation along the row are override constants, so the segment
// stays in registers. The channel comes from the workgroup id: weight loads are uniform in a workgroup.
//
// The input gradient runs one dispatch per stride phase, like conv.wgsl's conv_tiled: a stride-1
// correlation of dy with the flipped sub-kernel of the taps that reach that phase.

struct Dw {
  src_c: u32, // channels per image of the gathered operand
  src_h: u32,
  src_w: u32,
  out_c: u32,
  // Output channel oc gathers source channels (oc / div) * mul + m for m < cnt.
  div: u32,
  mul: u32,
  cnt: u32,
  // Weight channel: 0 = the output channel (forward), 1 = the source channel (input gradient).
  wsel: u32,
  khe: u32,
  dh: u32,
  sh: u32,
  off_h: u32, // i32
  off_w: u32, // i32
  // Tap (a, b) is weight row kh0 + a*kh_step, column kw0 + b*kw_step of a kh x kw kernel.
  kh0: u32,
  kh_step: u32, // i32
  kw0: u32,
  kw_step: u32, // i32
  kh: u32,
  kw: u32,
  pos_h: u32,
  pos_w: u32,
  out_h: u32,
  out_w: u32,
  osh: u32,
  osw: u32,
  opy: u32,
  opx: u32,
  off_x: u32,
  off_wt: u32,
  off_y: u32,
  off_bias: u32,
  base_x: u32,
  base_y: u32,
  base_z: u32,
}

override WG_X: u32 = 64;
// Kernel taps per row, source columns between outputs, between taps.
override KW: u32 = 3;
override SW: u32 = 1;
override DW: u32 = 1;
override BIAS: bool = false;
// Outputs per invocation along a row: 4, 8 or 16. (Two output rows per invocation sharing source rows, with
// the weights held in a register array, ran 4x slower on llvmpipe: the nested tap loops stop unrolling and
// the arrays spill to memory.)
override OUTS: u32 = 8;
// Source columns the windows span, and the 16-byte loads that cover them at any shift.
override SEG: u32 = (OUTS - 1u) * SW + (KW - 1u) * DW + 1u;
override NV: u32 = (SEG + 6u) / 4u;

// The source binding covers a multiple of 4 elements (the host pads it), so every element is in a vec4.
@group(0) @binding(0) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Dw;

// Elements [4i, 4i+4) of the source, clamped into the binding: reads outside it only feed padding.
fn load4(i: i32) -> vec4<f32> {
  return x4[clamp(i, 0, i32(arrayLength(&x4)) - 1)];
}

@compute @workgroup_size(WG_X)
fn depthwise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = (wg.x + p.base_x) * WG_X + lid.x;
  let tiles_w = (p.pos_w + OUTS - 1u) / OUTS;
  if (tile >= tiles_w * p.pos_h) {
    return;
  }
  let oy = tile / tiles_w;
  let ox = (tile % tiles_w) * OUTS;
  let plane = wg.z + p.base_z; // img * out_c + oc
  let oc = plane % p.out_c;
  let img = plane / p.out_c;
  let ih0 = i32(oy * p.sh) + i32(p.off_h);
  let iw0 = i32(ox * SW) + i32(p.off_w);
  var acc: array<vec4<f32>, 4>;
  for (var m = 0u; m < p.cnt; m++) {
    let sc = (oc / p.div) * p.mul + m;
    let wc = select(oc, sc, p.wsel != 0u);
    let xplane = i32(p.off_x + (img * p.src_c + sc) * p.src_h * p.src_w);
    for (var ky = 0u; ky < p.khe; ky++) {
      let ih = ih0 + i32(ky * p.dh);
      let okh = ih >= 0 && ih < i32(p.src_h);
      let s = xplane + clamp(ih, 0, i32(p.src_h) - 1) * i32(p.src_w) + iw0;
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
        let lo = select(f[t], f[t + 1u], lead == 1);
        let hi = select(f[t + 2u], f[t + 3u], lead == 3);
        let iw = iw0 + i32(t);
        seg[t] = select(0.0, select(lo, hi, lead >= 2), okh && iw >= 0 && iw < i32(p.src_w));
      }
      let wrow = p.off_wt + wc * p.kh * p.kw + u32(i32(p.kh0) + i32(ky) * i32(p.kh_step)) * p.kw;
      for (var kx = 0u; kx < KW; kx++) {
        let wv = wt[wrow + u32(i32(p.kw0) + i32(kx) * i32(p.kw_step))];
        for (var h = 0u; h < OUTS / 4u; h++) {
          let o = 4u * h * SW + kx * DW;
          acc[h] += wv * vec4<f32>(seg[o], seg[o + SW], seg[o + 2u * SW], seg[o + 3u * SW]);
        }
      }
    }
  }
  var b = 0.0;
  if (BIAS) {
    b = bias[p.off_bias + oc];
  }
  let base = p.off_y + plane * p.out_h * p.out_w + (p.opy + p.osh * oy) * p.out_w + p.opx;
  for (var i = 0u; i < OUTS; i++) {
    if (ox + i < p.pos_w) {
      y[base + p.osw * (ox + i)] = acc[i / 4u][i % 4u] + b;
    }
  }
}
