// Depthwise convolutions (one input channel per group, at most 4 outputs each): forward, input gradient and
// weight gradient, direct, four channels per SIMD vector.
//
// Four planes are transposed into one zero-padded interleaved block, P[y][x][lane], so every tap of every
// output position is one 16-byte load that serves four channels: strides, dilation and padding cost nothing
// in the inner loop, and small planes (4x4 .. 14x14, where a vector across the width would be mostly padding
// and loop overhead) run as fast as large ones. Outputs are computed a row at a time into an interleaved
// row and transposed back into the four NCHW planes. The input gradient is the adjoint: each output
// position's gradient is scattered into a zeroed padded block, whose interior is then transposed out.
#include "conv.h"
#include "common.h"

#define LANES 4

typedef struct {
  int hp, wp;   // padded block: rows, columns
  int block;    // floats of the padded block: hp * wp * 4
  int row;      // floats of one interleaved row of outputs: ow * 4 (rounded up to 8 positions)
  int floats;   // scratch a task needs
} Layout;

static struct {
  const Conv* c;
  Layout l;
  const float *x, *w, *bias, *dy;
  float *y, *dx, *dw;
  float* buf; // per-thread buffers, when scratch is too small
  int groups4; // channel groups of 4
  int per;     // units per task
} dw_;

static Layout layout(const Conv* c, int rows) {
  Layout l;
  l.hp = c->h + 2 * c->ph;
  l.wp = c->w + 2 * c->pw;
  l.block = l.hp * l.wp * LANES;
  l.row = cdiv(imax(c->ow, c->w), 8) * 8 * LANES;
  l.floats = l.block + rows * l.row;
  return l;
}

static float* buffer(int tid) {
  return dw_.buf ? dw_.buf + (size_t)tid * cdiv(dw_.l.floats, 16) * 16 : scratch(tid);
}

INLINE void transpose4(v4* r0, v4* r1, v4* r2, v4* r3) {
  v4 t0 = wasm_i32x4_shuffle(*r0, *r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(*r0, *r1, 2, 6, 3, 7);
  v4 t2 = wasm_i32x4_shuffle(*r2, *r3, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(*r2, *r3, 2, 6, 3, 7);
  *r0 = wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5);
  *r1 = wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7);
  *r2 = wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5);
  *r3 = wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7);
}

// Interleave `len` elements of four rows (NULL: zeros) into dst[i][lane].
static void interleave(const float* const* src, int len, float* dst) {
  int i = 0;
  if (src[0] && src[1] && src[2] && src[3]) {
    for (; i + 4 <= len; i += 4) {
      v4 a = LD(src[0] + i), b = LD(src[1] + i), c = LD(src[2] + i), d = LD(src[3] + i);
      transpose4(&a, &b, &c, &d);
      ST(dst + 4 * i, a);
      ST(dst + 4 * i + 4, b);
      ST(dst + 4 * i + 8, c);
      ST(dst + 4 * i + 12, d);
    }
  }
  for (; i < len; i++) {
    for (int l = 0; l < LANES; l++) dst[4 * i + l] = src[l] ? src[l][i] : 0.0f;
  }
}

// The inverse: dst[lane][i] = src[i][lane] for the lanes whose row is not NULL; `add` accumulates.
static void deinterleave(const float* src, int len, float* const* dst, int add) {
  int i = 0;
  if (dst[0] && dst[1] && dst[2] && dst[3] && !add) {
    for (; i + 4 <= len; i += 4) {
      v4 a = LD(src + 4 * i), b = LD(src + 4 * i + 4), c = LD(src + 4 * i + 8), d = LD(src + 4 * i + 12);
      transpose4(&a, &b, &c, &d);
      ST(dst[0] + i, a);
      ST(dst[1] + i, b);
      ST(dst[2] + i, c);
      ST(dst[3] + i, d);
    }
  }
  for (; i < len; i++) {
    for (int l = 0; l < LANES; l++) {
      if (dst[l]) dst[l][i] = add ? dst[l][i] + src[4 * i + l] : src[4 * i + l];
    }
  }
}

// The padded, interleaved block of four h x w planes (NULL lanes are zeros).
static void pack_block(const Conv* c, const Layout* l, const float* const* planes, float* p) {
  int wp4 = l->wp * LANES;
  for (int y = 0; y < l->hp; y++) {
    float* row = p + (size_t)y * wp4;
    int iy = y - c->ph;
    if (iy < 0 || iy >= c->h) {
      for (int i = 0; i < wp4; i += 4) ST(row + i, ZERO);
      continue;
    }
    for (int i = 0; i < c->pw * LANES; i += 4) ST(row + i, ZERO);
    for (int i = (c->pw + c->w) * LANES; i < wp4; i += 4) ST(row + i, ZERO);
    const float* src[LANES];
    for (int k = 0; k < LANES; k++) src[k] = planes[k] ? planes[k] + (size_t)iy * c->w : 0;
    interleave(src, c->w, row + c->pw * LANES);
  }
}

// One interleaved output row: out[ow][lane] = bias + sum over taps of w[tap][lane] * P[...][lane].
static void forward_row(const Conv* c, const Layout* l, const float* p, const v4* wt, v4 bias, int oh, float* out) {
  int taps = c->kh * c->kw, wp4 = l->wp * LANES, step = c->sw * LANES;
  const float* base = p + (size_t)oh * c->sh * wp4;
  if (taps == 9) {
    int o[9];
    for (int t = 0; t < 9; t++) o[t] = (t / 3) * c->dh * wp4 + (t % 3) * c->dw * LANES;
    v4 w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7], w8 = wt[8];
    for (int ow = 0; ow < c->ow; ow++) {
      const float* q = base + ow * step;
      v4 a = FMA(w0, LD(q + o[0]), bias);
      v4 b = wasm_f32x4_mul(w1, LD(q + o[1]));
      a = FMA(w2, LD(q + o[2]), a);
      b = FMA(w3, LD(q + o[3]), b);
      a = FMA(w4, LD(q + o[4]), a);
      b = FMA(w5, LD(q + o[5]), b);
      a = FMA(w6, LD(q + o[6]), a);
      b = FMA(w7, LD(q + o[7]), b);
      a = FMA(w8, LD(q + o[8]), a);
      ST(out + ow * LANES, wasm_f32x4_add(a, b));
    }
    return;
  }
  for (int ow = 0; ow < c->ow; ow++) {
    const float* q = base + ow * step;
    v4 a = bias;
    for (int t = 0; t < taps; t++) a = FMA(wt[t], LD(q + (t / c->kw) * c->dh * wp4 + (t % c->kw) * c->dw * LANES), a);
    ST(out + ow * LANES, a);
  }
}

// Weights of four output channels as vectors per tap (channels past cout: zeros).
static void weights4(const Conv* c, int co0, v4* wt) {
  int taps = c->kh * c->kw;
  for (int t = 0; t < taps; t++) {
    float v[LANES];
    for (int l = 0; l < LANES; l++) v[l] = co0 + l < c->cout ? dw_.w[(size_t)(co0 + l) * taps + t] : 0.0f;
    wt[t] = wasm_f32x4_make(v[0], v[1], v[2], v[3]);
  }
}

static void forward_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow;
  float* p = buffer(tid);
  float* row = p + l->block;
  v4 wt[64];
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u / dw_.groups4, co0 = (u % dw_.groups4) * LANES;
    const float* planes[LANES];
    float* outs[LANES];
    float b[LANES];
    for (int k = 0; k < LANES; k++) {
      int co = co0 + k;
      planes[k] = co < c->cout ? dw_.x + ((size_t)img * c->cin + co / m) * c->h * c->w : 0;
      outs[k] = co < c->cout ? dw_.y + ((size_t)img * c->cout + co) * ohw : 0;
      b[k] = co < c->cout && dw_.bias ? dw_.bias[co] : 0.0f;
    }
    pack_block(c, l, planes, p);
    weights4(c, co0, wt);
    v4 bias = wasm_f32x4_make(b[0], b[1], b[2], b[3]);
    for (int oh = 0; oh < c->oh; oh++) {
      forward_row(c, l, p, wt, bias, oh, row);
      float* dst[LANES];
      for (int k = 0; k < LANES; k++) dst[k] = outs[k] ? outs[k] + (size_t)oh * c->ow : 0;
      deinterleave(row, c->ow, dst, 0);
    }
  }
}

// Input gradient of four input channels: lanes are input channels ci0..ci0+3; for a multiplier m the m output
// channels of each are scattered one after another into the same block.
static void grad_input_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw, wp4 = l->wp * LANES;
  float* acc = buffer(tid);
  float* row = acc + l->block;
  v4 wt[64];
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u / dw_.groups4, ci0 = (u % dw_.groups4) * LANES;
    for (int i = 0; i < l->block; i += 4) ST(acc + i, ZERO);
    for (int mm = 0; mm < m; mm++) {
      const float* dys[LANES];
      for (int t_ = 0; t_ < taps; t_++) {
        float v[LANES];
        for (int k = 0; k < LANES; k++) {
          v[k] = ci0 + k < c->cin ? dw_.w[(size_t)((ci0 + k) * m + mm) * taps + t_] : 0.0f;
        }
        wt[t_] = wasm_f32x4_make(v[0], v[1], v[2], v[3]);
      }
      for (int k = 0; k < LANES; k++) {
        dys[k] = ci0 + k < c->cin ? dw_.dy + ((size_t)img * c->cout + (ci0 + k) * m + mm) * ohw : 0;
      }
      for (int oh = 0; oh < c->oh; oh++) {
        const float* src[LANES];
        for (int k = 0; k < LANES; k++) src[k] = dys[k] ? dys[k] + (size_t)oh * c->ow : 0;
        interleave(src, c->ow, row);
        float* base = acc + (size_t)oh * c->sh * wp4;
        for (int t_ = 0; t_ < taps; t_++) {
          v4 w = wt[t_];
          float* q = base + (t_ / c->kw) * c->dh * wp4 + (t_ % c->kw) * c->dw * LANES;
          for (int ow = 0; ow < c->ow; ow++) {
            float* d = q + ow * c->sw * LANES;
            ST(d, FMA(w, LD(row + ow * LANES), LD(d)));
          }
        }
      }
    }
    for (int iy = 0; iy < c->h; iy++) {
      float* dst[LANES];
      for (int k = 0; k < LANES; k++) {
        dst[k] = ci0 + k < c->cin ? dw_.dx + (((size_t)img * c->cin + ci0 + k) * c->h + iy) * c->w : 0;
      }
      deinterleave(acc + (size_t)(iy + c->ph) * wp4 + c->pw * LANES, c->w, dst, 0);
    }
  }
}

// Weight gradient of four output channels, summed over every image: one accumulator per tap.
static void grad_weight_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw, wp4 = l->wp * LANES;
  float* p = buffer(tid);
  float* row = p + l->block;
  v4 acc[64];
  double sum[64][LANES];
  for (int u = t * dw_.per; u < imin(dw_.groups4, (t + 1) * dw_.per); u++) {
    int co0 = u * LANES;
    for (int t_ = 0; t_ < taps; t_++) {
      for (int k = 0; k < LANES; k++) sum[t_][k] = 0.0;
    }
    for (int img = 0; img < c->n; img++) {
      const float* planes[LANES];
      const float* dys[LANES];
      for (int k = 0; k < LANES; k++) {
        int co = co0 + k;
        planes[k] = co < c->cout ? dw_.x + ((size_t)img * c->cin + co / m) * c->h * c->w : 0;
        dys[k] = co < c->cout ? dw_.dy + ((size_t)img * c->cout + co) * ohw : 0;
      }
      pack_block(c, l, planes, p);
      for (int t_ = 0; t_ < taps; t_++) acc[t_] = ZERO;
      for (int oh = 0; oh < c->oh; oh++) {
        const float* src[LANES];
        for (int k = 0; k < LANES; k++) src[k] = dys[k] ? dys[k] + (size_t)oh * c->ow : 0;
        interleave(src, c->ow, row);
        const float* base = p + (size_t)oh * c->sh * wp4;
        for (int t_ = 0; t_ < taps; t_++) {
          const float* q = base + (t_ / c->kw) * c->dh * wp4 + (t_ % c->kw) * c->dw * LANES;
          v4 a = acc[t_];
          for (int ow = 0; ow < c->ow; ow++) a = FMA(LD(row + ow * LANES), LD(q + ow * c->sw * LANES), a);
          acc[t_] = a;
        }
      }
      for (int t_ = 0; t_ < taps; t_++) {
        float v[LANES] __attribute__((aligned(16)));
        ST(v, acc[t_]);
        for (int k = 0; k < LANES; k++) sum[t_][k] += v[k];
      }
    }
    for (int k = 0; k < LANES && co0 + k < c->cout; k++) {
      for (int t_ = 0; t_ < taps; t_++) dw_.dw[(size_t)(co0 + k) * taps + t_] = (float)sum[t_][k];
    }
  }
}

// Shared state, scratch, and units (image x channel group, or channel groups) per task from the work per unit.
static int setup(const Conv* c, int channels, int units, double flops_per_unit) {
  dw_.c = c;
  dw_.l = layout(c, 1);
  dw_.groups4 = cdiv(channels, LANES);
  int threads = pool_threads();
  dw_.buf = 0;
  if ((size_t)dw_.l.floats * 4 > (size_t)scratch_bytes()) {
    dw_.buf = ws_alloc(threads * cdiv(dw_.l.floats, 16) * 16 * 4);
  }
  int tasks = split_count(flops_per_unit * units, 2e5, 8 * threads);
  dw_.per = cdiv(units, tasks);
  return cdiv(units, dw_.per);
}

// More than 64 taps per kernel (larger than 8x8) take the GEMM path (conv.c): the tap vectors live on the stack.
int depthwise_fits(const Conv* c) { return c->kh * c->kw <= 64; }

void depthwise_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y) {
  double per = LANES * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  int tasks = setup(c, c->cout, c->n * cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.w = w, dw_.bias = bias, dw_.y = y;
  parallel_for(forward_task, tasks, pool_threads());
}

void depthwise_grad_input(const Conv* c, const float* dy, const float* w, float* dx) {
  int m = c->cout / c->groups;
  double per = LANES * (2.0 * m * c->oh * c->ow * c->kh * c->kw + 2 * c->h * c->w);
  int tasks = setup(c, c->cin, c->n * cdiv(c->cin, LANES), per);
  dw_.dy = dy, dw_.w = w, dw_.dx = dx;
  parallel_for(grad_input_task, tasks, pool_threads());
}

void depthwise_grad_weight(const Conv* c, const float* x, const float* dy, float* dw) {
  double per = LANES * c->n * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  int tasks = setup(c, c->cout, cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.dy = dy, dw_.dw = dw;
  parallel_for(grad_weight_task, tasks, pool_threads());
}
