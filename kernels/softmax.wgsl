// Row-wise softmax / log-softmax of x [rows, cols] (kernels.ts softmax), max-subtracted so exp() stays in
// range. softmax_rows: one workgroup per row (long rows); softmax_small: one invocation per row (few
// columns, e.g. class logits), where a workgroup per row would idle most of its invocations.

override WG: u32 = 256u; // a power of two
override LOG: bool = false;

struct Params {
  rows: u32,
  cols: u32,
  x_off: u32,
  out_off: u32,
  gx: u32, // workgroups along x (grids over 65535 workgroups are 2D)
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> sh: array<f32, WG>;

fn write_row(xb: u32, ob: u32, j: u32, mx: f32, sum: f32) {
  let v = x[xb + j] - mx;
  if (LOG) {
    out[ob + j] = v - log(sum);
  } else {
    out[ob + j] = exp(v) / sum;
  }
}

@compute @workgroup_size(WG)
fn softmax_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var r = gid.x; r < p.rows; r += nwg.x * WG) {
    let xb = p.x_off + r * p.cols;
    let ob = p.out_off + r * p.cols;
    var mx = x[xb];
    for (var j = 1u; j < p.cols; j++) {
      mx = max(mx, x[xb + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.cols; j++) {
      sum += exp(x[xb + j] - mx);
    }
    for (var j = 0u; j < p.cols; j++) {
      write_row(xb, ob, j, mx, sum);
    }
  }
}

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * p.gx + wid.x;
  if (r >= p.rows) {
    return;
  }
  let xb = p.x_off + r * p.cols;
  let ob = p.out_off + r * p.cols;
  var mx = x[xb];
  for (var j = lid; j < p.cols; j += WG) {
    mx = max(mx, x[xb + j]);
  }
  sh[lid] = mx;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step /= 2u) {
    if (lid < step) {
      sh[lid] = max(sh[lid], sh[lid + step]);
    }
    workgroupBarrier();
  }
  mx = sh[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var j = lid; j < p.cols; j += WG) {
    sum += exp(x[xb + j] - mx);
  }
  sh[lid] = sum;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step /= 2u) {
    if (lid < step) {
      sh[lid] += sh[lid + step];
    }
    workgroupBarrier();
  }
  sum = sh[0];
  for (var j = lid; j < p.cols; j += WG) {
    write_row(xb, ob, j, mx, sum);
  }
}
