// Data movement and selection (kernels.ts strided_copy, where); the CPU backend is the reference.
//
// Both walk a dense index over a shape of rank <= 6 with a grid-stride loop and decompose it into per-dim
// indices once per element; each operand moves by its own strides. Strides and offsets are i32 values
// carried in u32 words: the sums wrap modulo 2^32, so a negative stride (a reversed slice) or an offset that
// maps a global index into a bound window works as long as the final address is in range. The host merges
// dims that are contiguous for every operand first, so most copies decompose over one or two dims.

override WG: u32 = 256u;

// strided_copy. Words of `dims`: shape[0..6], x strides[6..12], out strides[12..18] (leading dims of a
// lower rank are 1 with stride 0).
struct CopyParams {
  dims: array<vec4<u32>, 5>,
  n: u32,
  x_off: u32,
  out_off: u32,
}
@group(0) @binding(0) var<storage, read> sc_x: array<u32>;
@group(0) @binding(1) var<storage, read_write> sc_out: array<u32>;
@group(0) @binding(2) var<uniform> sc_p: CopyParams;

fn sc_word(i: u32) -> u32 {
  return sc_p.dims[i / 4u][i % 4u];
}

@compute @workgroup_size(WG)
fn strided_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = sc_p.n;
  for (var i = gid.x; i < n; i += nwg.x * WG) {
    var rem = i;
    var ix = sc_p.x_off;
    var io = sc_p.out_off;
    for (var d = 5u; rem != 0u; d--) {
      let s = sc_word(d);
      let q = rem / s;
      let idx = rem - q * s;
      ix += idx * sc_word(6u + d);
      io += idx * sc_word(12u + d);
      rem = q;
    }
    // A bit copy: f32 and u32 storages alike.
    sc_out[io] = sc_x[ix];
  }
}

// where. Words of `dims`: shape[0..6], cond strides[6..12], a strides[12..18], b strides[18..24]; the
// output is dense.
struct WhereParams {
  dims: array<vec4<u32>, 6>,
  n: u32,
  c_off: u32,
  a_off: u32,
  b_off: u32,
  out_off: u32,
}
@group(0) @binding(0) var<storage, read> wh_c: array<f32>;
@group(0) @binding(1) var<storage, read> wh_a: array<f32>;
@group(0) @binding(2) var<storage, read> wh_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> wh_out: array<f32>;
@group(0) @binding(4) var<uniform> wh_p: WhereParams;

fn wh_word(i: u32) -> u32 {
  return wh_p.dims[i / 4u][i % 4u];
}

@compute @workgroup_size(WG)
fn where_select(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = wh_p.n;
  for (var i = gid.x; i < n; i += nwg.x * WG) {
    var rem = i;
    var ic = wh_p.c_off;
    var ia = wh_p.a_off;
    var ib = wh_p.b_off;
    for (var d = 5u; rem != 0u; d--) {
      let s = wh_word(d);
      let q = rem / s;
      let idx = rem - q * s;
      ic += idx * wh_word(6u + d);
      ia += idx * wh_word(12u + d);
      ib += idx * wh_word(18u + d);
      rem = q;
    }
    // Compare the bits, so a NaN condition counts as true (it is not 0), as on the CPU.
    let c = bitcast<u32>(wh_c[ic]) & 0x7fffffffu;
    wh_out[wh_p.out_off + i] = select(wh_b[ib], wh_a[ia], c != 0u);
  }
}
