// reduce (kernels.ts): reduce the middle axis of x viewed as [outer, size, inner] into [outer, inner].
//
// The size axis is cut into `chunks` segments of `len` elements, so a few long rows still occupy many
// workgroups; with chunks > 1 the result is a partial [outer, chunks, inner] that a second dispatch reduces
// (src/backend/webgpu/kernel_reduce.ts). Segment g covers row o = g / chunks, part k = g % chunks.
//   reduce_rows (inner == 1): one workgroup per segment, a tree reduction in workgroup memory.
//   reduce_cols (any inner): one invocation per (segment, inner index); neighbours read neighbouring
//   addresses, so it is the fast one when inner is large.

override WG: u32 = 256u; // a power of two
// OP_REDUCE_SUM (mean passes scale = 1/size) or OP_REDUCE_MAX (NaN propagates, as in PyTorch).
override OP: u32 = 0u;
const OP_REDUCE_SUM: u32 = 0u;
const OP_REDUCE_MAX: u32 = 1u;

struct Params {
  segs: u32, // segments in this dispatch
  seg0: u32, // global index of its first segment
  chunks: u32,
  size: u32,
  len: u32,
  inner: u32,
  // Element offsets that map a global index into the bound windows; they wrap modulo 2^32 on purpose.
  x_off: u32,
  out_off: u32,
  gx: u32, // workgroups along x (grids over 65535 workgroups are 2D)
  // reduce_cols: inner indices per segment (<= inner; fewer when a row is too wide for one window), and
  // whether to combine with what out already holds (a reduction split into several dispatches).
  width: u32,
  accumulate: u32,
  scale: f32,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> sh: array<f32, WG>;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn combine(a: f32, b: f32) -> f32 {
  if (OP == OP_REDUCE_SUM) {
    return a + b;
  }
  if (is_nan(a)) {
    return a;
  }
  if (is_nan(b)) {
    return b;
  }
  return max(a, b);
}

fn finish(v: f32) -> f32 {
  return select(v, v * p.scale, OP == OP_REDUCE_SUM);
}

@compute @workgroup_size(WG)
fn reduce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = wid.y * p.gx + wid.x;
  if (w >= p.segs) {
    return;
  }
  let g = p.seg0 + w;
  let o = g / p.chunks;
  let s0 = (g - o * p.chunks) * p.len;
  let s1 = min(p.size, s0 + p.len);
  let base = p.x_off + o * p.size;
  // max starts from the segment's first element (max is idempotent), which avoids an -inf literal.
  var acc = select(0.0, x[base + s0], OP == OP_REDUCE_MAX);
  // The sum loop is spelled out: llvmpipe runs it ~1.5x faster than through combine().
  if (OP == OP_REDUCE_SUM) {
    for (var s = s0 + lid; s < s1; s += WG) {
      acc += x[base + s];
    }
  } else {
    for (var s = s0 + lid; s < s1; s += WG) {
      acc = combine(acc, x[base + s]);
    }
  }
  sh[lid] = acc;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step /= 2u) {
    if (lid < step) {
      sh[lid] = combine(sh[lid], sh[lid + step]);
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    out[p.out_off + g] = finish(sh[0]);
  }
}

@compute @workgroup_size(WG)
fn reduce_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let total = p.segs * p.width;
  for (var t = gid.x; t < total; t += nwg.x * WG) {
    let w = t / p.width;
    let j = t - w * p.width;
    let g = p.seg0 + w;
    let o = g / p.chunks;
    let s0 = (g - o * p.chunks) * p.len;
    let s1 = min(p.size, s0 + p.len);
    let base = p.x_off + o * p.size * p.inner + j;
    var acc = select(0.0, x[base + s0 * p.inner], OP == OP_REDUCE_MAX);
    if (OP == OP_REDUCE_SUM) {
      for (var s = s0; s < s1; s++) {
        acc += x[base + s * p.inner];
      }
    } else {
      for (var s = s0; s < s1; s++) {
        acc = combine(acc, x[base + s * p.inner]);
      }
    }
    let at = p.out_off + g * p.inner + j;
    if (p.accumulate != 0u) {
      acc = combine(acc, out[at]);
    }
    out[at] = finish(acc);
  }
}
