// Optimizer steps in place (kernels.ts adam, sgd), PyTorch semantics; bias corrections come from the host
// (computed in double there, as the reference does).
#include "common.h"

static struct {
  int n, decoupled, nesterov, first, has_buf;
  float lr, b1, b2, eps, wd, step_size, sqrt_bc2, momentum, dampening;
  float *p, *g, *m, *v;
} op;

#define CHUNK (1 << 15)

static int tasks(void) { return split_count(op.n, CHUNK, 8 * pool_threads()); }

static void adam_task(int t, int tid) {
  (void)tid;
  int nt = tasks();
  int lo = (int)((long long)op.n * t / nt) & ~3;
  int hi = t == nt - 1 ? op.n : (int)((long long)op.n * (t + 1) / nt) & ~3;
  v4 b1 = SPLAT(op.b1), b2 = SPLAT(op.b2), c1 = SPLAT(1.0f - op.b1), c2 = SPLAT(1.0f - op.b2);
  v4 wd = SPLAT(op.wd), decay = SPLAT(1.0f - op.lr * op.wd), ss = SPLAT(op.step_size);
  v4 sb = SPLAT(op.sqrt_bc2), eps = SPLAT(op.eps);
  int i = lo;
  for (; i + 4 <= hi; i += 4) {
    v4 p = LD(op.p + i), g = LD(op.g + i);
    if (op.decoupled) p = wasm_f32x4_mul(p, decay);
    else g = FMA(wd, p, g);
    v4 m = FMA(b1, LD(op.m + i), wasm_f32x4_mul(c1, g));
    v4 v = FMA(b2, LD(op.v + i), wasm_f32x4_mul(wasm_f32x4_mul(c2, g), g));
    ST(op.m + i, m);
    ST(op.v + i, v);
    v4 denom = wasm_f32x4_add(wasm_f32x4_div(wasm_f32x4_sqrt(v), sb), eps);
    ST(op.p + i, wasm_f32x4_sub(p, wasm_f32x4_div(wasm_f32x4_mul(ss, m), denom)));
  }
  for (; i < hi; i++) {
    float p = op.p[i], g = op.g[i];
    if (op.decoupled) p *= 1.0f - op.lr * op.wd;
    else g += op.wd * p;
    float m = op.b1 * op.m[i] + (1.0f - op.b1) * g;
    float v = op.b2 * op.v[i] + (1.0f - op.b2) * g * g;
    op.m[i] = m;
    op.v[i] = v;
    op.p[i] = p - op.step_size * m / (__builtin_sqrtf(v) / op.sqrt_bc2 + op.eps);
  }
}

EXPORT void adam(float* p, const float* g, float* m, float* v, int n, float lr, float b1, float b2, float eps,
                 float wd, int decoupled, float step_size, float sqrt_bc2) {
  op.p = p, op.g = (float*)g, op.m = m, op.v = v, op.n = n, op.lr = lr, op.b1 = b1, op.b2 = b2, op.eps = eps;
  op.wd = wd, op.decoupled = decoupled, op.step_size = step_size, op.sqrt_bc2 = sqrt_bc2;
  parallel_for(adam_task, tasks(), pool_threads());
}

static void sgd_task(int t, int tid) {
  (void)tid;
  int nt = tasks();
  int lo = (int)((long long)op.n * t / nt) & ~3;
  int hi = t == nt - 1 ? op.n : (int)((long long)op.n * (t + 1) / nt) & ~3;
  for (int i = lo; i < hi; i++) {
    float g = op.g[i] + op.wd * op.p[i];
    float d = g;
    if (op.has_buf) {
      float buf = op.first ? g : op.momentum * op.m[i] + (1.0f - op.dampening) * g;
      op.m[i] = buf;
      d = op.nesterov ? g + op.momentum * buf : buf;
    }
    op.p[i] -= op.lr * d;
  }
}

EXPORT void sgd(float* p, const float* g, float* buf, int n, float lr, float momentum, float dampening, float wd,
                int nesterov, int first) {
  op.p = p, op.g = (float*)g, op.m = buf, op.n = n, op.lr = lr, op.momentum = momentum;
  op.dampening = dampening, op.wd = wd, op.nesterov = nesterov, op.first = first, op.has_buf = momentum != 0.0f;
  parallel_for(sgd_task, tasks(), pool_threads());
}
