// Batch normalisation: per-channel statistics, apply, and the two backward kernels (kernels.ts bn_*).
//
// Reductions run per channel over n planes of hw elements: SIMD partial sums over blocks of at most 1024
// elements, added into a double, so a channel of 10^5 elements keeps the reference's accuracy. Statistics
// take two passes (mean, then squared deviations), as the CPU reference, because E[x^2] - E[x]^2 cancels.
#include "common.h"

static struct {
  int n, c, hw, training, per;
  float eps;
  const float *x, *mean, *var, *gamma, *beta, *dy, *xhat, *sdy, *sdyx;
  float *out, *xh, *o1, *o2;
} bn;

#define BLOCK 1024

// sum of p[i] - mu over i < len.
static double plane_sum(const float* p, int len, float mu) {
  double s = 0.0;
  v4 m = SPLAT(mu);
  for (int b = 0; b < len; b += BLOCK) {
    int e = imin(len, b + BLOCK);
    v4 a0 = ZERO, a1 = ZERO;
    int i = b;
    for (; i + 8 <= e; i += 8) {
      a0 = wasm_f32x4_add(a0, wasm_f32x4_sub(LD(p + i), m));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_sub(LD(p + i + 4), m));
    }
    float t = hsum(wasm_f32x4_add(a0, a1));
    for (; i < e; i++) t += p[i] - mu;
    s += t;
  }
  return s;
}

// sum of (p[i] - mu)^2, or of p[i] * q[i] when q is given.
static double plane_dot(const float* p, const float* q, int len, float mu) {
  double s = 0.0;
  v4 m = SPLAT(mu);
  for (int b = 0; b < len; b += BLOCK) {
    int e = imin(len, b + BLOCK);
    v4 a0 = ZERO, a1 = ZERO;
    int i = b;
    float t = 0.0f;
    if (q) {
      for (; i + 8 <= e; i += 8) {
        a0 = FMA(LD(p + i), LD(q + i), a0);
        a1 = FMA(LD(p + i + 4), LD(q + i + 4), a1);
      }
      t = hsum(wasm_f32x4_add(a0, a1));
      for (; i < e; i++) t += p[i] * q[i];
    } else {
      for (; i + 8 <= e; i += 8) {
        v4 d0 = wasm_f32x4_sub(LD(p + i), m), d1 = wasm_f32x4_sub(LD(p + i + 4), m);
        a0 = FMA(d0, d0, a0);
        a1 = FMA(d1, d1, a1);
      }
      t = hsum(wasm_f32x4_add(a0, a1));
      for (; i < e; i++) t += (p[i] - mu) * (p[i] - mu);
    }
    s += t;
  }
  return s;
}

static int channel_tasks(int c, int n, int hw) { return imin(c, split_count((double)c * n * hw, 1 << 15, 8 * pool_threads())); }

static void stats_task(int t, int tid) {
  (void)tid;
  for (int ch = t * bn.per; ch < imin(bn.c, (t + 1) * bn.per); ch++) {
    double s = 0.0;
    for (int b = 0; b < bn.n; b++) s += plane_sum(bn.x + ((size_t)b * bn.c + ch) * bn.hw, bn.hw, 0.0f);
    double count = (double)bn.n * bn.hw;
    float mu = (float)(s / count);
    double ss = 0.0;
    for (int b = 0; b < bn.n; b++) ss += plane_dot(bn.x + ((size_t)b * bn.c + ch) * bn.hw, 0, bn.hw, mu);
    bn.o1[ch] = mu;
    bn.o2[ch] = (float)(ss / count);
  }
}

EXPORT void bn_stats(const float* x, float* mean, float* var, int n, int c, int hw) {
  bn.x = x, bn.o1 = mean, bn.o2 = var, bn.n = n, bn.c = c, bn.hw = hw;
  int tasks = channel_tasks(c, n, hw);
  bn.per = cdiv(c, tasks);
  parallel_for(stats_task, cdiv(c, bn.per), pool_threads());
}

static void grad_reduce_task(int t, int tid) {
  (void)tid;
  for (int ch = t * bn.per; ch < imin(bn.c, (t + 1) * bn.per); ch++) {
    double s = 0.0, sh = 0.0;
    for (int b = 0; b < bn.n; b++) {
      size_t off = ((size_t)b * bn.c + ch) * bn.hw;
      s += plane_sum(bn.dy + off, bn.hw, 0.0f);
      sh += plane_dot(bn.dy + off, bn.xhat + off, bn.hw, 0.0f);
    }
    bn.o1[ch] = (float)s;
    bn.o2[ch] = (float)sh;
  }
}

EXPORT void bn_grad_reduce(const float* dy, const float* xhat, float* sum_dy, float* sum_dy_xhat, int n, int c,
                           int hw) {
  bn.dy = dy, bn.xhat = xhat, bn.o1 = sum_dy, bn.o2 = sum_dy_xhat, bn.n = n, bn.c = c, bn.hw = hw;
  int tasks = channel_tasks(c, n, hw);
  bn.per = cdiv(c, tasks);
  parallel_for(grad_reduce_task, cdiv(c, bn.per), pool_threads());
}

// Planes (image, channel) per task for the elementwise passes.
static int plane_tasks(void) {
  int planes = bn.n * bn.c;
  int tasks = imin(planes, split_count((double)planes * bn.hw, 1 << 15, 8 * pool_threads()));
  bn.per = cdiv(planes, tasks);
  return cdiv(planes, bn.per);
}

static void apply_task(int t, int tid) {
  (void)tid;
  for (int pl = t * bn.per; pl < imin(bn.n * bn.c, (t + 1) * bn.per); pl++) {
    int ch = pl % bn.c;
    float invstd = (float)(1.0 / __builtin_sqrt((double)bn.var[ch] + (double)bn.eps));
    float mu = bn.mean[ch], g = bn.gamma[ch], bt = bn.beta[ch];
    v4 m = SPLAT(mu), is = SPLAT(invstd), gv = SPLAT(g), bv = SPLAT(bt);
    const float* x = bn.x + (size_t)pl * bn.hw;
    float* y = bn.out + (size_t)pl * bn.hw;
    float* h = bn.xh ? bn.xh + (size_t)pl * bn.hw : 0;
    int i = 0;
    if (h) {
      for (; i + 4 <= bn.hw; i += 4) {
        v4 hv = wasm_f32x4_mul(wasm_f32x4_sub(LD(x + i), m), is);
        ST(h + i, hv);
        ST(y + i, FMA(gv, hv, bv));
      }
    } else {
      for (; i + 4 <= bn.hw; i += 4) ST(y + i, FMA(gv, wasm_f32x4_mul(wasm_f32x4_sub(LD(x + i), m), is), bv));
    }
    for (; i < bn.hw; i++) {
      float hv = (x[i] - mu) * invstd;
      if (h) h[i] = hv;
      y[i] = g * hv + bt;
    }
  }
}

EXPORT void bn_apply(const float* x, const float* mean, const float* var, const float* gamma, const float* beta,
                     float* out, float* xhat, int n, int c, int hw, float eps) {
  bn.x = x, bn.mean = mean, bn.var = var, bn.gamma = gamma, bn.beta = beta, bn.out = out, bn.xh = xhat;
  bn.n = n, bn.c = c, bn.hw = hw, bn.eps = eps;
  parallel_for(apply_task, plane_tasks(), pool_threads());
}

static void grad_input_task(int t, int tid) {
  (void)tid;
  double m = (double)bn.n * bn.hw;
  for (int pl = t * bn.per; pl < imin(bn.n * bn.c, (t + 1) * bn.per); pl++) {
    int ch = pl % bn.c;
    float k = (float)((double)bn.gamma[ch] / __builtin_sqrt((double)bn.var[ch] + (double)bn.eps));
    const float* dy = bn.dy + (size_t)pl * bn.hw;
    float* dx = bn.out + (size_t)pl * bn.hw;
    v4 kv = SPLAT(k);
    int i = 0;
    if (bn.training) {
      const float* h = bn.xhat + (size_t)pl * bn.hw;
      float mdy = (float)(bn.sdy[ch] / m), mdyx = (float)(bn.sdyx[ch] / m);
      v4 a = SPLAT(mdy), b = SPLAT(mdyx);
      for (; i + 4 <= bn.hw; i += 4) {
        v4 d = wasm_f32x4_sub(wasm_f32x4_sub(LD(dy + i), a), wasm_f32x4_mul(LD(h + i), b));
        ST(dx + i, wasm_f32x4_mul(kv, d));
      }
      for (; i < bn.hw; i++) dx[i] = k * (dy[i] - mdy - h[i] * mdyx);
    } else {
      for (; i + 4 <= bn.hw; i += 4) ST(dx + i, wasm_f32x4_mul(kv, LD(dy + i)));
      for (; i < bn.hw; i++) dx[i] = k * dy[i];
    }
  }
}

EXPORT void bn_grad_input(const float* dy, const float* xhat, const float* gamma, const float* var,
                          const float* sum_dy, const float* sum_dy_xhat, float* out, int n, int c, int hw,
                          float eps, int training) {
  bn.dy = dy, bn.xhat = xhat, bn.gamma = gamma, bn.var = var, bn.sdy = sum_dy, bn.sdyx = sum_dy_xhat;
  bn.out = out, bn.n = n, bn.c = c, bn.hw = hw, bn.eps = eps, bn.training = training;
  parallel_for(grad_input_task, plane_tasks(), pool_threads());
}
