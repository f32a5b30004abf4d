// Elementwise kernels: fill, copy, unary, unary_grad, binary, axpy, mask_pack, mask_grad.
//
// Large arrays are split into chunks over the pool; below ~64K elements a kernel runs on the calling thread,
// where it finishes before a worker would have woken up.
#include "common.h"
#include "mathfun.h"

// Unary op codes, in the order of UNARY_OPS in ../kernels_elementwise.ts.
enum {
  U_IDENTITY, U_NEG, U_RELU, U_RELU6, U_CLIP, U_HARDSWISH, U_HARDSIGMOID, U_SIGMOID, U_EXP, U_LOG, U_SQRT,
  U_RSQRT, U_SQUARE, U_ABS, U_SIGN
};
enum { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN };

#define CHUNK (1 << 15)

static struct {
  int op, n, accumulate;
  float alpha, beta;
  const float *x, *y;
  float* out;
} ew;

static int chunks(int n) { return split_count(n, CHUNK, 8 * pool_threads()); }

static void run_chunks(task_fn fn, int n) {
  ew.n = n;
  parallel_for(fn, chunks(n), pool_threads());
}

// Element range of chunk t.
#define RANGE(t)                                                   \
  int nt_ = chunks(ew.n);                                          \
  int lo = (int)((long long)ew.n * (t) / nt_) & ~3;                \
  int hi = (t) == nt_ - 1 ? ew.n : (int)((long long)ew.n * ((t) + 1) / nt_) & ~3;

// ---- fill / copy / axpy -------------------------------------------------------------------------------

static void fill_task(int t, int tid) {
  (void)tid;
  RANGE(t);
  v4 v = SPLAT(ew.alpha);
  float* o = ew.out;
  int i = lo;
  for (; i + 4 <= hi; i += 4) ST(o + i, v);
  for (; i < hi; i++) o[i] = ew.alpha;
}

EXPORT void fill(float* out, int n, float value) {
  ew.out = out, ew.alpha = value;
  run_chunks(fill_task, n);
}

static void copy_task(int t, int tid) {
  (void)tid;
  RANGE(t);
  __builtin_memmove(ew.out + lo, ew.x + lo, (size_t)(hi - lo) * 4);
}

EXPORT void copy(const float* x, float* out, int n) {
  if (n <= 0) return;
  // Overlapping ranges of one storage: one memmove keeps the forward-copy result the CPU loop gives when the
  // destination lies before the source (the only overlap ops produce).
  if ((x < out + n && out < x + n) || n < 4 * CHUNK) {
    __builtin_memmove(out, x, (size_t)n * 4);
    return;
  }
  ew.x = x, ew.out = out;
  run_chunks(copy_task, n);
}

static void axpy_task(int t, int tid) {
  (void)tid;
  RANGE(t);
  v4 a = SPLAT(ew.alpha);
  const float* x = ew.x;
  float* o = ew.out;
  int i = lo;
  if (ew.accumulate) {
    for (; i + 4 <= hi; i += 4) ST(o + i, FMA(a, LD(x + i), LD(o + i)));
    for (; i < hi; i++) o[i] += ew.alpha * x[i];
  } else {
    for (; i + 4 <= hi; i += 4) ST(o + i, wasm_f32x4_mul(a, LD(x + i)));
    for (; i < hi; i++) o[i] = ew.alpha * x[i];
  }
}

EXPORT void axpy(const float* x, float* out, int n, float alpha, int accumulate) {
  ew.x = x, ew.out = out, ew.alpha = alpha, ew.accumulate = accumulate;
  run_chunks(axpy_task, n);
}

// ---- unary / unary_grad -------------------------------------------------------------------------------

INLINE v4 hardsigmoid4(v4 v) {
  v4 h = FMA(v, SPLAT(1.0f / 6.0f), SPLAT(0.5f));
  return wasm_f32x4_min(wasm_f32x4_max(h, ZERO), SPLAT(1.0f));
}

INLINE v4 sigmoid4(v4 v) {
  return wasm_f32x4_div(SPLAT(1.0f), wasm_f32x4_add(SPLAT(1.0f), exp4(wasm_f32x4_neg(v))));
}

INLINE v4 sign4(v4 v) {
  v4 r = wasm_v128_bitselect(SPLAT(1.0f), v, wasm_f32x4_gt(v, ZERO));
  return wasm_v128_bitselect(SPLAT(-1.0f), r, wasm_f32x4_lt(v, ZERO));
}

// [lo, hi) strictly inside, as 1.0 or 0.0.
INLINE v4 inside4(v4 v, v4 lo, v4 hi, v4 one) {
  return wasm_v128_and(wasm_v128_and(wasm_f32x4_gt(v, lo), wasm_f32x4_lt(v, hi)), one);
}

INLINE v4 unary4(int op, v4 v, v4 alpha, v4 beta) {
  switch (op) {
    case U_NEG: return wasm_f32x4_neg(v);
    case U_RELU: return wasm_v128_and(v, wasm_f32x4_gt(v, ZERO));
    case U_RELU6: return wasm_f32x4_min(wasm_f32x4_max(v, ZERO), SPLAT(6.0f));
    case U_CLIP: return wasm_f32x4_min(wasm_f32x4_max(v, alpha), beta);
    case U_HARDSWISH: return wasm_f32x4_mul(v, hardsigmoid4(v));
    case U_HARDSIGMOID: return hardsigmoid4(v);
    case U_SIGMOID: return sigmoid4(v);
    case U_EXP: return exp4(v);
    case U_LOG: return log4(v);
    case U_SQRT: return wasm_f32x4_sqrt(v);
    case U_RSQRT: return wasm_f32x4_div(SPLAT(1.0f), wasm_f32x4_sqrt(v));
    case U_SQUARE: return wasm_f32x4_mul(v, v);
    case U_ABS: return wasm_f32x4_abs(v);
    case U_SIGN: return sign4(v);
    default: return v;
  }
}

// dy * f'(x), PyTorch's choices at the kinks (kernels.ts unary_grad). The reference multiplies in double and
// rounds once, so where f'(x) alone would overflow or lose range in f32 the product is formed otherwise:
// exp as (dy * e^(x/2)) * e^(x/2), log as dy / x, sqrt as (dy / 2) / sqrt(x), rsqrt as ((-dy / 2) / x) /
// sqrt(x); and sigmoid' without the
// cancellation of 1 - s.
INLINE v4 grad4(int op, v4 v, v4 dy, v4 alpha, v4 beta) {
  const v4 one = SPLAT(1.0f);
  switch (op) {
    case U_IDENTITY: return wasm_f32x4_mul(dy, one);
    case U_NEG: return wasm_f32x4_neg(dy);
    case U_RELU: return wasm_f32x4_mul(dy, wasm_v128_and(wasm_f32x4_gt(v, ZERO), one));
    case U_RELU6: return wasm_f32x4_mul(dy, inside4(v, ZERO, SPLAT(6.0f), one));
    case U_CLIP: return wasm_f32x4_mul(dy, inside4(v, alpha, beta, one));
    case U_HARDSIGMOID: return wasm_f32x4_mul(dy, inside4(v, SPLAT(-3.0f), SPLAT(3.0f), SPLAT(1.0f / 6.0f)));
    case U_HARDSWISH: {
      v4 mid = wasm_f32x4_div(FMA(v, SPLAT(2.0f), SPLAT(3.0f)), SPLAT(6.0f));
      v4 r = wasm_v128_bitselect(one, mid, wasm_f32x4_gt(v, SPLAT(3.0f)));
      return wasm_f32x4_mul(dy, wasm_v128_bitselect(ZERO, r, wasm_f32x4_lt(v, SPLAT(-3.0f))));
    }
    case U_SIGMOID: // s(x) * s(-x): 1 - s(x) would cancel in f32 for large x
      return wasm_f32x4_mul(dy, wasm_f32x4_mul(sigmoid4(v), sigmoid4(wasm_f32x4_neg(v))));
    case U_EXP: {
      v4 h = exp4(wasm_f32x4_mul(v, SPLAT(0.5f)));
      return wasm_f32x4_mul(wasm_f32x4_mul(dy, h), h);
    }
    case U_LOG: return wasm_f32x4_div(dy, v);
    case U_SQRT: return wasm_f32x4_div(wasm_f32x4_mul(dy, SPLAT(0.5f)), wasm_f32x4_sqrt(v));
    case U_RSQRT: return wasm_f32x4_div(wasm_f32x4_div(wasm_f32x4_mul(dy, SPLAT(-0.5f)), v), wasm_f32x4_sqrt(v));
    case U_SQUARE: return wasm_f32x4_mul(dy, wasm_f32x4_add(v, v));
    case U_ABS: return wasm_f32x4_mul(dy, sign4(v));
    default: return wasm_f32x4_mul(dy, ZERO); // sign
  }
}

// One body per op so each loop is branch-free; the tail goes through a zero-padded vector.
#define UNARY_LOOP(EXPR)                                                   \
  for (; i + 4 <= hi; i += 4) {                                            \
    v4 v = LD(x + i);                                                      \
    ST(o + i, EXPR);                                                       \
  }                                                                        \
  if (i < hi) {                                                            \
    float t[4] __attribute__((aligned(16))) = {0, 0, 0, 0};                \
    for (int k = 0; i + k < hi; k++) t[k] = x[i + k];                      \
    v4 v = LD(t);                                                          \
    ST(t, EXPR);                                                           \
    for (int k = 0; i + k < hi; k++) o[i + k] = t[k];                      \
  }

static void unary_task(int t, int tid) {
  (void)tid;
  RANGE(t);
  const float* x = ew.x;
  float* o = ew.out;
  v4 alpha = SPLAT(ew.alpha), beta = SPLAT(ew.beta);
  int i = lo;
  switch (ew.op) {
    case U_RELU: UNARY_LOOP(unary4(U_RELU, v, alpha, beta)); break;
    case U_RELU6: UNARY_LOOP(unary4(U_RELU6, v, alpha, beta)); break;
    case U_CLIP: UNARY_LOOP(unary4(U_CLIP, v, alpha, beta)); break;
    case U_HARDSWISH: UNARY_LOOP(unary4(U_HARDSWISH, v, alpha, beta)); break;
    case U_HARDSIGMOID: UNARY_LOOP(unary4(U_HARDSIGMOID, v, alpha, beta)); break;
    case U_SIGMOID: UNARY_LOOP(unary4(U_SIGMOID, v, alpha, beta)); break;
    case U_EXP: UNARY_LOOP(unary4(U_EXP, v, alpha, beta)); break;
    case U_LOG: UNARY_LOOP(unary4(U_LOG, v, alpha, beta)); break;
    default: UNARY_LOOP(unary4(ew.op, v, alpha, beta)); break;
  }
}

EXPORT void unary(const float* x, float* out, int n, int op, float alpha, float beta) {
  ew.x = x, ew.out = out, ew.op = op, ew.alpha = alpha, ew.beta = beta;
  run_chunks(unary_task, n);
}

static void unary_grad_task(int t, int tid) {
  (void)tid;
  RANGE(t);
  const float* xs = ew.x;
  const float* g = ew.y;
  float* o = ew.out;
  v4 alpha = SPLAT(ew.alpha), beta = SPLAT(ew.beta);
  int i = lo;
  for (; i + 4 <= hi; i += 4) ST(o + i, grad4(ew.op, LD(xs + i), LD(g + i), alpha, beta));
  if (i < hi) {
    float a[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
    float b[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
    for (int k = 0; i + k < hi; k++) a[k] = xs[i + k], b[k] = g[i + k];
    ST(a, grad4(ew.op, LD(a), LD(b), alpha, beta));
    for (int k = 0; i + k < hi; k++) o[i + k] = a[k];
  }
}

EXPORT void unary_grad(const float* x, const float* dy, float* out, int n, int op, float alpha, float beta) {
  ew.x = x, ew.y = dy, ew.out = out, ew.op = op, ew.alpha = alpha, ew.beta = beta;
  run_chunks(unary_grad_task, n);
}

// ---- masks --------------------------------------------------------------------------------------------

// Chunks are whole words (multiples of 32 elements), so no two tasks write one word.
static void mask_pack_task(int t, int tid) {
  (void)tid;
  int words = cdiv(ew.n, 32);
  int nt = chunks(ew.n);
  int w0 = (int)((long long)words * t / nt), w1 = (int)((long long)words * (t + 1) / nt);
  const float* x = ew.x;
  uint32_t* out = (uint32_t*)ew.out;
  v4 lo = SPLAT(ew.alpha), hi = SPLAT(ew.beta);
  for (int w = w0; w < w1; w++) {
    int base = w * 32;
    uint32_t bits = 0;
    if (base + 32 <= ew.n) {
      for (int k = 0; k < 8; k++) {
        v4 v = LD(x + base + 4 * k);
        v4 in = wasm_v128_and(wasm_f32x4_gt(v, lo), wasm_f32x4_lt(v, hi));
        bits |= (uint32_t)wasm_i32x4_bitmask(in) << (4 * k);
      }
    } else {
      for (int k = 0; base + k < ew.n; k++) {
        float v = x[base + k];
        if (v > ew.alpha && v < ew.beta) bits |= 1u << k;
      }
    }
    out[w] = bits;
  }
}

EXPORT void mask_pack(const float* x, uint32_t* out, int n, float lo, float hi) {
  ew.x = x, ew.out = (float*)out, ew.alpha = lo, ew.beta = hi;
  run_chunks(mask_pack_task, n);
}

static void mask_grad_task(int t, int tid) {
  (void)tid;
  int words = cdiv(ew.n, 32);
  int nt = chunks(ew.n);
  int w0 = (int)((long long)words * t / nt), w1 = (int)((long long)words * (t + 1) / nt);
  const uint32_t* mask = (const uint32_t*)ew.x;
  const float* g = ew.y;
  float* o = ew.out;
  v4 scale = SPLAT(ew.alpha);
  const v4 lanes = wasm_i32x4_make(1, 2, 4, 8);
  for (int w = w0; w < w1; w++) {
    int base = w * 32;
    uint32_t bits = mask[w];
    if (base + 32 <= ew.n) {
      for (int k = 0; k < 8; k++) {
        v4 sel = wasm_i32x4_ne(wasm_v128_and(wasm_i32x4_splat((bits >> (4 * k)) & 15), lanes), wasm_i32x4_splat(0));
        ST(o + base + 4 * k, wasm_v128_and(wasm_f32x4_mul(LD(g + base + 4 * k), scale), sel));
      }
    } else {
      for (int k = 0; base + k < ew.n; k++) o[base + k] = (bits >> k) & 1 ? g[base + k] * ew.alpha : 0.0f;
    }
  }
}

EXPORT void mask_grad(const uint32_t* mask, const float* dy, float* out, int n, float scale) {
  ew.x = (const float*)mask, ew.y = dy, ew.out = out, ew.alpha = scale;
  run_chunks(mask_grad_task, n);
}

// ---- binary -------------------------------------------------------------------------------------------

INLINE v4 binary4(int op, v4 a, v4 b) {
  switch (op) {
    case B_ADD: return wasm_f32x4_add(a, b);
    case B_SUB: return wasm_f32x4_sub(a, b);
    case B_MUL: return wasm_f32x4_mul(a, b);
    case B_DIV: return wasm_f32x4_div(a, b);
    case B_MAX: return wasm_f32x4_max(a, b);
    default: return wasm_f32x4_min(a, b);
  }
}

static struct {
  int op, rank, rows, cols, segs, per;
  int shape[6], as[6], bs[6];
  const float *a, *b;
  float* out;
} bin;

// One row of the innermost dimension: a and b advance by sa/sb (0 broadcasts, 1 is contiguous).
static void binary_row(int op, const float* a, int sa, const float* b, int sb, float* o, int n) {
  int j = 0;
  if ((sa == 0 || sa == 1) && (sb == 0 || sb == 1)) {
    v4 av = SPLAT(a[0]), bv = SPLAT(b[0]);
    for (; j + 4 <= n; j += 4) {
      v4 x = sa ? LD(a + j) : av;
      v4 y = sb ? LD(b + j) : bv;
      ST(o + j, binary4(op, x, y));
    }
  }
  for (; j < n; j++) {
    v4 r = binary4(op, SPLAT(a[(size_t)j * sa]), SPLAT(b[(size_t)j * sb]));
    o[j] = wasm_f32x4_extract_lane(r, 0);
  }
}

// Rows per task, or (one or a few long rows) column segments per row.
static void binary_task(int t, int tid) {
  (void)tid;
  int r0, r1, c0 = 0, c1 = bin.cols;
  if (bin.segs > 1) {
    r0 = t / bin.segs, r1 = r0 + 1;
    int s = t % bin.segs;
    c0 = (int)((long long)bin.cols * s / bin.segs) & ~3;
    c1 = s == bin.segs - 1 ? bin.cols : (int)((long long)bin.cols * (s + 1) / bin.segs) & ~3;
  } else {
    r0 = t * bin.per, r1 = imin(bin.rows, r0 + bin.per);
  }
  int last = bin.rank - 1;
  for (int r = r0; r < r1; r++) {
    // Odometer position of row r over the outer dimensions.
    long long ia = 0, ib = 0;
    int rem = r;
    for (int d = last - 1; d >= 0; d--) {
      int i = rem % bin.shape[d];
      rem /= bin.shape[d];
      ia += (long long)i * bin.as[d];
      ib += (long long)i * bin.bs[d];
    }
    ia += (long long)c0 * bin.as[last];
    ib += (long long)c0 * bin.bs[last];
    binary_row(bin.op, bin.a + ia, bin.as[last], bin.b + ib, bin.bs[last],
               bin.out + (size_t)r * bin.cols + c0, c1 - c0);
  }
}

// shape/strides: rank int32s each, at the given addresses.
EXPORT void binary(const float* a, const float* b, float* out, int op, int rank, const int* shape,
                   const int* as, const int* bs) {
  bin.op = op, bin.a = a, bin.b = b, bin.out = out;
  // Merge dimensions that are contiguous in the output and in both inputs, so rows are as long as possible.
  int r = 0;
  for (int d = 0; d < rank; d++) {
    if (shape[d] == 1) continue;
    if (r > 0 && bin.as[r - 1] == as[d] * shape[d] && bin.bs[r - 1] == bs[d] * shape[d]) {
      bin.shape[r - 1] *= shape[d];
      bin.as[r - 1] = as[d];
      bin.bs[r - 1] = bs[d];
    } else {
      bin.shape[r] = shape[d], bin.as[r] = as[d], bin.bs[r] = bs[d];
      r++;
    }
  }
  if (r == 0) bin.shape[0] = 1, bin.as[0] = 0, bin.bs[0] = 0, r = 1;
  for (int d = 0; d < rank; d++) {
    if (shape[d] == 0) return;
  }
  bin.rank = r;
  bin.cols = bin.shape[r - 1];
  bin.rows = 1;
  for (int d = 0; d < r - 1; d++) bin.rows *= bin.shape[d];
  int tasks = chunks(bin.rows * bin.cols);
  bin.segs = tasks > bin.rows ? tasks / bin.rows : 1;
  bin.per = cdiv(bin.rows, imin(tasks, bin.rows));
  parallel_for(binary_task, bin.segs > 1 ? bin.rows * bin.segs : cdiv(bin.rows, bin.per), pool_threads());
}
