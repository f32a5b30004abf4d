// Optimizer steps in place (kernels.ts adam, sgd), PyTorch semantics. Bias corrections and other per-step
// scalars are computed on the host in f64 and passed as f32 uniforms.

override WG: u32 = 256u;

struct AdamParams {
  n: u32,
  p_off: u32,
  g_off: u32,
  m_off: u32,
  v_off: u32,
  decoupled: u32,
  weight_decay: f32,
  decay: f32, // 1 - lr * weight_decay (AdamW)
  beta1: f32,
  one_minus_beta1: f32,
  beta2: f32,
  one_minus_beta2: f32,
  step_size: f32, // lr / (1 - beta1^t)
  sqrt_bc2: f32, // sqrt(1 - beta2^t)
  eps: f32,
}
@group(0) @binding(0) var<storage, read_write> adam_param: array<f32>;
@group(0) @binding(1) var<storage, read> adam_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(4) var<uniform> adam_p: AdamParams;

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let q = adam_p;
  for (var i = gid.x; i < q.n; i += nwg.x * WG) {
    var p = adam_param[q.p_off + i];
    var g = adam_grad[q.g_off + i];
    if (q.decoupled != 0u) {
      p *= q.decay;
    } else {
      g += q.weight_decay * p;
    }
    let m = q.beta1 * adam_m[q.m_off + i] + q.one_minus_beta1 * g;
    let v = q.beta2 * adam_v[q.v_off + i] + q.one_minus_beta2 * g * g;
    adam_m[q.m_off + i] = m;
    adam_v[q.v_off + i] = v;
    adam_param[q.p_off + i] = p - q.step_size * m / (sqrt(v) / q.sqrt_bc2 + q.eps);
  }
}

struct SgdParams {
  n: u32,
  p_off: u32,
  g_off: u32,
  b_off: u32,
  first_step: u32,
  nesterov: u32,
  lr: f32,
  momentum: f32,
  one_minus_dampening: f32,
  weight_decay: f32,
}
@group(0) @binding(0) var<storage, read_write> sgd_param: array<f32>;
@group(0) @binding(1) var<storage, read> sgd_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> sgd_buf: array<f32>;
@group(0) @binding(3) var<uniform> sgd_p: SgdParams;

@compute @workgroup_size(WG)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let q = sgd_p;
  for (var i = gid.x; i < q.n; i += nwg.x * WG) {
    let p = sgd_param[q.p_off + i];
    let g = sgd_grad[q.g_off + i] + q.weight_decay * p;
    var buf = g;
    if (q.first_step == 0u) {
      buf = q.momentum * sgd_buf[q.b_off + i] + q.one_minus_dampening * g;
    }
    sgd_buf[q.b_off + i] = buf;
    let d = select(buf, g + q.momentum * buf, q.nesterov != 0u);
    sgd_param[q.p_off + i] = p - q.lr * d;
  }
}

// momentum 0: PyTorch keeps no buffer, so none is bound.
@compute @workgroup_size(WG)
fn sgd_plain(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let q = sgd_p;
  for (var i = gid.x; i < q.n; i += nwg.x * WG) {
    let p = sgd_param[q.p_off + i];
    sgd_param[q.p_off + i] = p - q.lr * (sgd_grad[q.g_off + i] + q.weight_decay * p);
  }
}
