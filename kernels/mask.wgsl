// 1-bit masks (kernels.ts mask_pack, mask_grad): element i in bit (i % 32) of word i / 32.
//
// Chunks of large tensors start at multiples of 32 elements, so a chunk never shares a word with another.

override WG: u32 = 256u;

// One invocation per word: it owns all 32 bits, so no atomics are needed.
struct PackParams {
  n: u32,
  words: u32,
  x_off: u32,
  out_off: u32,
  lo: f32,
  hi: f32,
}
@group(0) @binding(0) var<storage, read> pack_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> pack_out: array<u32>;
@group(0) @binding(2) var<uniform> pack_p: PackParams;

@compute @workgroup_size(WG)
fn mask_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = pack_p;
  for (var w = gid.x; w < p.words; w += nwg.x * WG) {
    let base = w * 32u;
    let count = min(32u, p.n - base);
    var bits = 0u;
    for (var b = 0u; b < count; b++) {
      let v = pack_x[p.x_off + base + b];
      if (v > p.lo && v < p.hi) {
        bits |= 1u << b;
      }
    }
    pack_out[p.out_off + w] = bits;
  }
}

struct GradParams {
  n: u32,
  mask_off: u32,
  dy_off: u32,
  out_off: u32,
  scale: f32,
}
@group(0) @binding(0) var<storage, read> grad_mask: array<u32>;
@group(0) @binding(1) var<storage, read> grad_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_out: array<f32>;
@group(0) @binding(3) var<uniform> grad_p: GradParams;

@compute @workgroup_size(WG)
fn mask_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let p = grad_p;
  for (var i = gid.x; i < p.n; i += nwg.x * WG) {
    let bit = (grad_mask[p.mask_off + i / 32u] >> (i % 32u)) & 1u;
    grad_out[p.out_off + i] = select(0.0, grad_dy[p.dy_off + i] * p.scale, bit != 0u);
  }
}
