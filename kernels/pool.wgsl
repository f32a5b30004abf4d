// 2-D max and average pooling (kernels.ts pool2d, pool2d_grad; Pool2dAttrs); the CPU backend is the
// reference.
//
// pool2d: one invocation per output element, neighbours along a row reading neighbouring windows.
// pool2d_grad: one invocation per input element, gathering from the (few) windows that contain it, so no
// atomics are needed and each dx element is written once. Max routes by the argmax the forward wrote; avg
// recomputes each window's divisor.

override WG: u32 = 256u;
override OP: u32 = 0u;
const OP_POOL_MAX: u32 = 0u;
const OP_POOL_AVG: u32 = 1u;

// The argmax of a max window without input taps (kernels.ts): its gradient goes nowhere.
const NO_TAP: u32 = 0xffffffffu;

struct PoolParams {
  planes: u32, // n * c in this dispatch
  h: u32,
  w: u32,
  kh: u32,
  kw: u32,
  sh: u32,
  sw: u32,
  pad_top: u32,
  pad_left: u32,
  pad_bottom: u32,
  pad_right: u32,
  dh: u32,
  dw: u32,
  out_h: u32,
  out_w: u32,
  count_include_pad: u32,
  with_argmax: u32,
  x_off: u32,
  out_off: u32,
  idx_off: u32,
}

@group(0) @binding(0) var<storage, read> pf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> pf_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> pf_idx: array<u32>;
@group(0) @binding(3) var<uniform> pf_p: PoolParams;

@group(0) @binding(0) var<storage, read> pg_dy: array<f32>;
@group(0) @binding(1) var<storage, read> pg_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> pg_dx: array<f32>;
@group(0) @binding(3) var<uniform> pg_p: PoolParams;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn from_bits(u: u32) -> f32 {
  return bitcast<f32>(u);
}

// Divisor of average window (oh, ow) in signed coordinates (kernels.ts Pool2dAttrs).
fn avg_divisor(p: PoolParams, oh: u32, ow: u32) -> f32 {
  let h0 = i32(oh * p.sh) - i32(p.pad_top);
  let w0 = i32(ow * p.sw) - i32(p.pad_left);
  if (p.count_include_pad != 0u) {
    let h1 = min(h0 + i32(p.kh), i32(p.h + p.pad_bottom));
    let w1 = min(w0 + i32(p.kw), i32(p.w + p.pad_right));
    return f32((h1 - h0) * (w1 - w0));
  }
  let rows = max(min(h0 + i32(p.kh), i32(p.h)) - max(h0, 0), 0);
  let cols = max(min(w0 + i32(p.kw), i32(p.w)) - max(w0, 0), 0);
  return f32(rows * cols);
}

@compute @workgroup_size(WG)
fn pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = pf_p;
  let oplane = p.out_h * p.out_w;
  let total = p.planes * oplane;
  for (var o = gid.x; o < total; o += nwg.x * WG) {
    let plane = o / oplane;
    let r = o - plane * oplane;
    let oh = r / p.out_w;
    let ow = r - oh * p.out_w;
    let h0 = i32(oh * p.sh) - i32(p.pad_top);
    let w0 = i32(ow * p.sw) - i32(p.pad_left);
    let xb = p.x_off + plane * p.h * p.w;
    var best = from_bits(0xff800000u); // -inf
    var at = NO_TAP;
    var sum = 0.0;
    for (var i = 0u; i < p.kh; i++) {
      let ih = h0 + i32(i * p.dh);
      if (ih < 0 || ih >= i32(p.h)) {
        continue;
      }
      for (var j = 0u; j < p.kw; j++) {
        let iw = w0 + i32(j * p.dw);
        if (iw < 0 || iw >= i32(p.w)) {
          continue;
        }
        let k = u32(ih) * p.w + u32(iw);
        let v = pf_x[xb + k];
        if (OP == OP_POOL_MAX) {
          // The first maximum wins; a NaN beats everything and stays (PyTorch).
          if (v > best || (is_nan(v) && !is_nan(best)) || at == NO_TAP) {
            best = v;
            at = k;
          }
        } else {
          sum += v;
        }
      }
    }
    if (OP == OP_POOL_MAX) {
      pf_out[p.out_off + o] = best;
      if (p.with_argmax != 0u) {
        pf_idx[p.idx_off + o] = at;
      }
    } else {
      let d = avg_divisor(p, oh, ow);
      pf_out[p.out_off + o] = select(0.0, sum / d, d > 0.0);
    }
  }
}

@compute @workgroup_size(WG)
fn pool2d_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = pg_p;
  let iplane = p.h * p.w;
  let oplane = p.out_h * p.out_w;
  let total = p.planes * iplane;
  for (var e = gid.x; e < total; e += nwg.x * WG) {
    let plane = e / iplane;
    let k = e - plane * iplane;
    let ih = i32(k / p.w);
    let iw = i32(k % p.w);
    let ob = plane * oplane;
    var acc = 0.0;
    // Windows whose tap (i, j) lands on (ih, iw): oh * sh = ih + pad_top - i * dh, likewise ow.
    for (var i = 0u; i < p.kh; i++) {
      let th = ih + i32(p.pad_top) - i32(i * p.dh);
      if (th < 0 || th % i32(p.sh) != 0) {
        continue;
      }
      let oh = u32(th) / p.sh;
      if (oh >= p.out_h) {
        continue;
      }
      for (var j = 0u; j < p.kw; j++) {
        let tw = iw + i32(p.pad_left) - i32(j * p.dw);
        if (tw < 0 || tw % i32(p.sw) != 0) {
          continue;
        }
        let ow = u32(tw) / p.sw;
        if (ow >= p.out_w) {
          continue;
        }
        let o = ob + oh * p.out_w + ow;
        if (OP == OP_POOL_MAX) {
          if (pg_idx[p.idx_off + o] == k) {
            acc += pg_dy[p.out_off + o];
          }
        } else {
          acc += pg_dy[p.out_off + o] / avg_divisor(p, oh, ow);
        }
      }
    }
    pg_dx[p.x_off + e] = acc;
  }
}
