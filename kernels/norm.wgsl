// Batch normalisation (kernels.ts bn_stats, bn_apply, bn_grad_reduce, bn_grad_input) over x [n, c, hw].
//
// Per-channel reductions cut the channel's m = n*hw elements (flat index j: sample j / hw, position j % hw)
// into `chunks` pieces of `len`, one workgroup each, so a few channels still fill the device. With one
// chunk the kernel writes the result; otherwise it writes partials that a second dispatch merges.
// Statistics are two-pass within a chunk (mean, then squared deviations) and chunks merge with Chan et al.'s
// pairwise update: E[x^2] - E[x]^2 in f32 cancels catastrophically when |mean| >> std.

override WG: u32 = 256u; // a power of two

struct ReduceParams {
  c: u32,
  hw: u32,
  m: u32,
  chunks: u32,
  len: u32,
  k0: u32, // first chunk of this dispatch
  c0: u32, // first channel of this dispatch (grids over 65535 channels are split)
  x_off: u32, // wraps modulo 2^32: maps a global element index into the bound window
  y_off: u32,
}
@group(0) @binding(0) var<storage, read> st_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> st_mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_var: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_part: array<f32>;
@group(0) @binding(4) var<uniform> st_p: ReduceParams;

// bn_grad_reduce: dy (0), xhat (1), sumDy (2), sumDyXhat (3), partials of each (4, 5).
@group(0) @binding(0) var<storage, read> gr_dy: array<f32>;
@group(0) @binding(1) var<storage, read> gr_xhat: array<f32>;
@group(0) @binding(2) var<storage, read_write> gr_sum: array<f32>;
@group(0) @binding(3) var<storage, read_write> gr_sumh: array<f32>;
@group(0) @binding(4) var<storage, read_write> gr_part: array<f32>;
@group(0) @binding(5) var<storage, read_write> gr_parth: array<f32>;
@group(0) @binding(6) var<uniform> gr_p: ReduceParams;

var<workgroup> sh: array<f32, WG>;

fn wg_sum(lid: u32, v: f32) -> f32 {
  sh[lid] = v;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step /= 2u) {
    if (lid < step) {
      sh[lid] += sh[lid + step];
    }
    workgroupBarrier();
  }
  let r = sh[0];
  workgroupBarrier();
  return r;
}

fn elem(p: ReduceParams, ch: u32, j: u32) -> u32 {
  let b = j / p.hw;
  return (b * p.c + ch) * p.hw + (j - b * p.hw);
}

// Returns (count, mean, M2) of chunk k of channel ch.
fn chunk_stats(ch: u32, k: u32, lid: u32) -> vec3<f32> {
  let p = st_p;
  let j0 = k * p.len;
  let j1 = min(p.m, j0 + p.len);
  var s = 0.0;
  for (var j = j0 + lid; j < j1; j += WG) {
    s += st_x[p.x_off + elem(p, ch, j)];
  }
  let count = f32(j1 - j0);
  let mean = wg_sum(lid, s) / count;
  var ss = 0.0;
  for (var j = j0 + lid; j < j1; j += WG) {
    let d = st_x[p.x_off + elem(p, ch, j)] - mean;
    ss += d * d;
  }
  return vec3<f32>(count, mean, wg_sum(lid, ss));
}

@compute @workgroup_size(WG)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = st_p.c0 + wid.y;
  let r = chunk_stats(ch, 0u, lid);
  if (lid == 0u) {
    st_mean[ch] = r.y;
    st_var[ch] = r.z / r.x;
  }
}

@compute @workgroup_size(WG)
fn bn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = st_p.c0 + wid.y;
  let k = st_p.k0 + wid.x;
  let r = chunk_stats(ch, k, lid);
  if (lid == 0u) {
    let at = (ch * st_p.chunks + k) * 3u;
    st_part[at] = r.x;
    st_part[at + 1u] = r.y;
    st_part[at + 2u] = r.z;
  }
}

// One invocation per channel merges its chunks' (count, mean, M2) in order.
@compute @workgroup_size(WG)
fn bn_stats_merge(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var ch = gid.x; ch < st_p.c; ch += nwg.x * WG) {
    merge_channel(ch);
  }
}

fn merge_channel(ch: u32) {
  let base = ch * st_p.chunks * 3u;
  var n = st_part[base];
  var mean = st_part[base + 1u];
  var m2 = st_part[base + 2u];
  for (var k = 1u; k < st_p.chunks; k++) {
    let nb = st_part[base + k * 3u];
    let delta = st_part[base + k * 3u + 1u] - mean;
    let total = n + nb;
    mean += delta * (nb / total);
    m2 += st_part[base + k * 3u + 2u] + delta * delta * (n * nb / total);
    n = total;
  }
  st_mean[ch] = mean;
  st_var[ch] = m2 / n;
}

// Returns (sum dy, sum dy*xhat) of chunk k of channel ch.
fn chunk_grad_sums(ch: u32, k: u32, lid: u32) -> vec2<f32> {
  let p = gr_p;
  let j0 = k * p.len;
  let j1 = min(p.m, j0 + p.len);
  var s = 0.0;
  var sh2 = 0.0;
  for (var j = j0 + lid; j < j1; j += WG) {
    let e = elem(p, ch, j);
    let d = gr_dy[p.x_off + e];
    s += d;
    sh2 += d * gr_xhat[p.y_off + e];
  }
  let a = wg_sum(lid, s);
  return vec2<f32>(a, wg_sum(lid, sh2));
}

@compute @workgroup_size(WG)
fn bn_grad_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = gr_p.c0 + wid.y;
  let r = chunk_grad_sums(ch, 0u, lid);
  if (lid == 0u) {
    gr_sum[ch] = r.x;
    gr_sumh[ch] = r.y;
  }
}

// Partials as [c, chunks] each; kernel_norm.ts sums them with the reduce kernel.
@compute @workgroup_size(WG)
fn bn_grad_reduce_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = gr_p.c0 + wid.y;
  let k = gr_p.k0 + wid.x;
  let r = chunk_grad_sums(ch, k, lid);
  if (lid == 0u) {
    gr_part[ch * gr_p.chunks + k] = r.x;
    gr_parth[ch * gr_p.chunks + k] = r.y;
  }
}

// Elementwise parts: invocation i handles global element start + i; channel = (index / hw) % c.
struct ApplyParams {
  n: u32,
  start: u32,
  c: u32,
  hw: u32,
  x_off: u32,
  out_off: u32,
  h_off: u32,
  eps: f32,
  m: f32,
}
@group(0) @binding(0) var<storage, read> ap_x: array<f32>;
@group(0) @binding(1) var<storage, read> ap_mean: array<f32>;
@group(0) @binding(2) var<storage, read> ap_var: array<f32>;
@group(0) @binding(3) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> ap_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> ap_xhat: array<f32>;
@group(0) @binding(7) var<uniform> ap_p: ApplyParams;

fn channel(p: ApplyParams, i: u32) -> u32 {
  return ((p.start + i) / p.hw) % p.c;
}

fn normalized(p: ApplyParams, i: u32, ch: u32) -> f32 {
  return (ap_x[p.x_off + i] - ap_mean[ch]) / sqrt(ap_var[ch] + p.eps);
}

@compute @workgroup_size(WG)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = ap_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let ch = channel(p, i);
    ap_out[p.out_off + i] = ap_gamma[ch] * normalized(p, i, ch) + ap_beta[ch];
  }
}

@compute @workgroup_size(WG)
fn bn_apply_xhat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = ap_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let ch = channel(p, i);
    let h = normalized(p, i, ch);
    ap_xhat[p.h_off + i] = h;
    ap_out[p.out_off + i] = ap_gamma[ch] * h + ap_beta[ch];
  }
}

// bn_grad_input: dy (0), xhat (1), gamma (2), variance (3), sumDy (4), sumDyXhat (5), out (6).
@group(0) @binding(0) var<storage, read> gi_dy: array<f32>;
@group(0) @binding(1) var<storage, read> gi_xhat: array<f32>;
@group(0) @binding(2) var<storage, read> gi_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> gi_var: array<f32>;
@group(0) @binding(4) var<storage, read> gi_sum: array<f32>;
@group(0) @binding(5) var<storage, read> gi_sumh: array<f32>;
@group(0) @binding(6) var<storage, read_write> gi_out: array<f32>;
@group(0) @binding(7) var<uniform> gi_p: ApplyParams;

@compute @workgroup_size(WG)
fn bn_grad_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = gi_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let ch = channel(p, i);
    let k = gi_gamma[ch] / sqrt(gi_var[ch] + p.eps);
    let d = gi_dy[p.x_off + i] - gi_sum[ch] / p.m - gi_xhat[p.h_off + i] * (gi_sumh[ch] / p.m);
    gi_out[p.out_off + i] = k * d;
  }
}

// Evaluation mode: running statistics are constants, dx = gamma * invstd * dy.
@compute @workgroup_size(WG)
fn bn_grad_input_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = gi_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let ch = channel(p, i);
    gi_out[p.out_off + i] = gi_gamma[ch] / sqrt(gi_var[ch] + p.eps) * gi_dy[p.x_off + i];
  }
}
