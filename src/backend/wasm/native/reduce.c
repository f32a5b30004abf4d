// reduce ([outer, size, inner] -> [outer, inner]: sum, mean, max) and row-wise softmax / log-softmax.
#include "common.h"
#include "mathfun.h"

enum { R_SUM, R_MEAN, R_MAX };

static struct {
  int op, outer, size, inner, per;
  const float* x;
  float* out;
} rd;

#define BLOCK 256

// Sum of one row (inner == 1): SIMD blocks added into a double.
static float row_reduce(const float* p, int len, int op) {
  if (op == R_MAX) {
    v4 m = SPLAT(-__builtin_inff());
    int i = 0;
    for (; i + 4 <= len; i += 4) m = wasm_f32x4_max(m, LD(p + i));
    float r = wasm_f32x4_extract_lane(m, 0);
    for (int k = 1; k < 4; k++) {
      float v = k == 1 ? wasm_f32x4_extract_lane(m, 1) : k == 2 ? wasm_f32x4_extract_lane(m, 2) : wasm_f32x4_extract_lane(m, 3);
      r = wasm_f32x4_extract_lane(wasm_f32x4_max(SPLAT(r), SPLAT(v)), 0);
    }
    for (; i < len; i++) r = wasm_f32x4_extract_lane(wasm_f32x4_max(SPLAT(r), SPLAT(p[i])), 0);
    return r;
  }
  double s = 0.0;
  for (int b = 0; b < len; b += 4 * BLOCK) {
    int e = imin(len, b + 4 * BLOCK);
    v4 a0 = ZERO, a1 = ZERO;
    int i = b;
    for (; i + 8 <= e; i += 8) {
      a0 = wasm_f32x4_add(a0, LD(p + i));
      a1 = wasm_f32x4_add(a1, LD(p + i + 4));
    }
    float t = hsum(wasm_f32x4_add(a0, a1));
    for (; i < e; i++) t += p[i];
    s += t;
  }
  return (float)(op == R_MEAN ? s / len : s);
}

static void rows_task(int t, int tid) {
  (void)tid;
  for (int o = t * rd.per; o < imin(rd.outer, (t + 1) * rd.per); o++) {
    rd.out[o] = row_reduce(rd.x + (size_t)o * rd.size, rd.size, rd.op);
  }
}

// inner > 1: vectors across inner, blocks of BLOCK rows summed in f32 then added into doubles in scratch.
static void cols_task(int t, int tid) {
  int total = rd.outer * cdiv(rd.inner, 256);
  (void)total;
  int segs = cdiv(rd.inner, 256);
  double* acc = (double*)scratch(tid);
  for (int u = t * rd.per; u < imin(rd.outer * segs, (t + 1) * rd.per); u++) {
    int o = u / segs, i0 = (u % segs) * 256, i1 = imin(rd.inner, i0 + 256);
    const float* base = rd.x + (size_t)o * rd.size * rd.inner;
    float* out = rd.out + (size_t)o * rd.inner;
    if (rd.op == R_MAX) {
      int i = i0;
      for (; i + 4 <= i1; i += 4) {
        v4 m = SPLAT(-__builtin_inff());
        for (int s = 0; s < rd.size; s++) m = wasm_f32x4_max(m, LD(base + (size_t)s * rd.inner + i));
        ST(out + i, m);
      }
      for (; i < i1; i++) {
        v4 m = SPLAT(-__builtin_inff());
        for (int s = 0; s < rd.size; s++) m = wasm_f32x4_max(m, SPLAT(base[(size_t)s * rd.inner + i]));
        out[i] = wasm_f32x4_extract_lane(m, 0);
      }
      continue;
    }
    for (int i = i0; i < i1; i++) acc[i - i0] = 0.0;
    for (int s0 = 0; s0 < rd.size; s0 += BLOCK) {
      int s1 = imin(rd.size, s0 + BLOCK);
      int i = i0;
      for (; i + 4 <= i1; i += 4) {
        v4 a = ZERO;
        for (int s = s0; s < s1; s++) a = wasm_f32x4_add(a, LD(base + (size_t)s * rd.inner + i));
        acc[i - i0] += wasm_f32x4_extract_lane(a, 0);
        acc[i - i0 + 1] += wasm_f32x4_extract_lane(a, 1);
        acc[i - i0 + 2] += wasm_f32x4_extract_lane(a, 2);
        acc[i - i0 + 3] += wasm_f32x4_extract_lane(a, 3);
      }
      for (; i < i1; i++) {
        float a = 0.0f;
        for (int s = s0; s < s1; s++) a += base[(size_t)s * rd.inner + i];
        acc[i - i0] += a;
      }
    }
    for (int i = i0; i < i1; i++) out[i] = (float)(rd.op == R_MEAN ? acc[i - i0] / rd.size : acc[i - i0]);
  }
}

EXPORT void reduce(const float* x, float* out, int op, int outer, int size, int inner) {
  rd.x = x, rd.out = out, rd.op = op, rd.outer = outer, rd.size = size, rd.inner = inner;
  if (outer <= 0 || inner <= 0) return;
  if (size <= 0) {
    for (int i = 0; i < outer * inner; i++) out[i] = op == R_MAX ? -__builtin_inff() : op == R_MEAN ? __builtin_nanf("") : 0.0f;
    return;
  }
  int units = inner == 1 ? outer : outer * cdiv(inner, 256);
  int tasks = imin(units, split_count((double)outer * size * inner, 1 << 15, 8 * pool_threads()));
  rd.per = cdiv(units, tasks);
  parallel_for(inner == 1 ? rows_task : cols_task, cdiv(units, rd.per), pool_threads());
}

// ---- softmax ------------------------------------------------------------------------------------------

static struct {
  int rows, cols, log, per;
  const float* x;
  float* out;
} sm;

static void softmax_task(int t, int tid) {
  (void)tid;
  for (int r = t * sm.per; r < imin(sm.rows, (t + 1) * sm.per); r++) {
    const float* x = sm.x + (size_t)r * sm.cols;
    float* y = sm.out + (size_t)r * sm.cols;
    // The max over the row; NaN is skipped here, as the reference's `>` skips it (it still poisons the sum).
    float mx = -__builtin_inff();
    for (int j = 0; j < sm.cols; j++) if (x[j] > mx) mx = x[j];
    v4 m = SPLAT(mx);
    v4 acc = ZERO;
    int j = 0;
    for (; j + 4 <= sm.cols; j += 4) acc = wasm_f32x4_add(acc, exp4(wasm_f32x4_sub(LD(x + j), m)));
    double sum = hsum(acc);
    for (; j < sm.cols; j++) sum += expf_(x[j] - mx);
    if (sm.log) {
      float lse = logf_((float)sum);
      v4 sub = SPLAT(lse);
      j = 0;
      for (; j + 4 <= sm.cols; j += 4) ST(y + j, wasm_f32x4_sub(wasm_f32x4_sub(LD(x + j), m), sub));
      for (; j < sm.cols; j++) y[j] = x[j] - mx - lse;
    } else {
      v4 inv = SPLAT((float)(1.0 / sum));
      j = 0;
      for (; j + 4 <= sm.cols; j += 4) ST(y + j, wasm_f32x4_mul(exp4(wasm_f32x4_sub(LD(x + j), m)), inv));
      for (; j < sm.cols; j++) y[j] = expf_(x[j] - mx) * (float)(1.0 / sum);
    }
  }
}

EXPORT void softmax(const float* x, float* out, int rows, int cols, int log) {
  sm.x = x, sm.out = out, sm.rows = rows, sm.cols = cols, sm.log = log;
  if (rows <= 0 || cols <= 0) return;
  int tasks = imin(rows, split_count((double)rows * cols * 20, 1 << 16, 8 * pool_threads()));
  sm.per = cdiv(rows, tasks);
  parallel_for(softmax_task, cdiv(rows, sm.per), pool_threads());
}
