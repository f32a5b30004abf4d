// Depthwise convolutions (one input channel per group, at most 4 outputs each): forward, input gradient and
// weight gradient, direct, four channels per SIMD vector.
//
// Four planes are transposed into one zero-padded interleaved block, P[y][x][lane], so every tap of every
// output position is one 16-byte load that serves four channels: strides, dilation and padding cost nothing
// in the inner loop, and small planes (4x4 .. 14x14, where a vector across the width would be mostly padding
// and loop overhead) need no special case. Outputs go into an interleaved plane that is transposed back into
// the four NCHW planes. The input gradient is a gather too (no output written twice): at stride 1 the
// forward loop over dy with the flipped kernel, at other strides a loop per stride phase.
#include "depthwise.h"

DwState dw_;

static Layout layout(const Conv* c) {
  Layout l;
  l.hp = c->h + 2 * c->ph;
  l.wp = c->w + 2 * c->pw;
  l.block = l.hp * l.wp * LANES;
  l.row = cdiv(imax(c->ow, c->w), 8) * 8 * LANES;
  l.plane = imax(c->oh * c->ow, c->h * c->w) * LANES;
  l.floats = l.block + l.row + l.plane;
  return l;
}

float* dw_buffer(int tid) {
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
void dw_interleave(const float* const* src, int len, float* dst) {
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
void dw_deinterleave(const float* src, int len, float* const* dst, int add) {
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

void dw_zero(float* p, int floats) {
  for (int i = 0; i < floats; i += 4) ST(p + i, ZERO);
}

// The interior of the padded, interleaved block of four h x w planes (NULL lanes are zeros). The padding is
// never written, so zeroing the block once (per task) keeps it zero for every unit packed after. Rows whose
// width is not a multiple of 4 would each end in scalar code: such planes are interleaved whole into `tmp`
// (the planes are contiguous) and copied in by rows.
void dw_pack_block(const Conv* c, const Layout* l, const float* const* planes, float* p, float* tmp) {
  int wp4 = l->wp * LANES;
  if (c->w % 4 && c->h > 1) {
    dw_interleave(planes, c->h * c->w, tmp);
    for (int iy = 0; iy < c->h; iy++) {
      __builtin_memcpy(p + (size_t)(iy + c->ph) * wp4 + c->pw * LANES, tmp + (size_t)iy * c->w * LANES,
                       (size_t)c->w * LANES * 4);
    }
    return;
  }
  for (int iy = 0; iy < c->h; iy++) {
    const float* src[LANES];
    for (int k = 0; k < LANES; k++) src[k] = planes[k] ? planes[k] + (size_t)iy * c->w : 0;
    dw_interleave(src, c->w, p + (size_t)(iy + c->ph) * wp4 + c->pw * LANES);
  }
}

// One interleaved output row: out[ow][lane] = bias + sum over taps of w[tap][lane] * P[...][lane].
static void forward_row(const Conv* c, const Layout* l, const float* p, const v4* wt, v4 bias, int oh, float* out) {
  int taps = c->kh * c->kw, wp4 = l->wp * LANES, step = c->sw * LANES;
  const float* base = p + (size_t)oh * c->sh * wp4;
  if (taps == 9 && c->kw == 3 && c->dw == 1 && (c->sw == 1 || c->sw == 2)) {
    // Two outputs per step share the window columns they both read: 12 loads (stride 1) or 15 (stride 2)
    // for 18 multiply-adds instead of 18.
    v4 w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7], w8 = wt[8];
    int r1 = c->dh * wp4, r2 = 2 * c->dh * wp4;
    int ow = 0;
#define DW_ROW(R, WA, WB, WC)                                                                \
  {                                                                                        \
    const float* r = (R);                                                                  \
    v4 c0 = LD(r), c1 = LD(r + 4), c2 = LD(r + 8);                                         \
    a0 = FMA(WA, c0, a0);                                                                  \
    a0 = FMA(WB, c1, a0);                                                                  \
    a0 = FMA(WC, c2, a0);                                                                  \
    if (c->sw == 1) {                                                                      \
      v4 c3 = LD(r + 12);                                                                  \
      a1 = FMA(WA, c1, a1);                                                                \
      a1 = FMA(WB, c2, a1);                                                                \
      a1 = FMA(WC, c3, a1);                                                                \
    } else {                                                                               \
      v4 c3 = LD(r + 12), c4 = LD(r + 16);                                                 \
      a1 = FMA(WA, c2, a1);                                                                \
      a1 = FMA(WB, c3, a1);                                                                \
      a1 = FMA(WC, c4, a1);                                                                \
    }                                                                                      \
  }
    for (; ow + 2 <= c->ow; ow += 2) {
      const float* q = base + ow * step;
      v4 a0 = bias, a1 = bias;
      DW_ROW(q, w0, w1, w2);
      DW_ROW(q + r1, w3, w4, w5);
      DW_ROW(q + r2, w6, w7, w8);
      ST(out + ow * LANES, a0);
      ST(out + ow * LANES + LANES, a1);
    }
#undef DW_ROW
    for (; ow < c->ow; ow++) {
      const float* q = base + ow * step;
      v4 a = bias;
      for (int t = 0; t < 9; t++) a = FMA(wt[t], LD(q + (t / 3) * r1 + (t % 3) * LANES), a);
      ST(out + ow * LANES, a);
    }
    return;
  }
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

// One unit: the packed block -> every output row into the interleaved plane -> the four NCHW planes.
void dw_conv_unit(const Conv* c, const Layout* l, float* p, const v4* wt, v4 bias, float* const* outs, int add) {
  float* plane = p + l->block + l->row;
  for (int oh = 0; oh < c->oh; oh++) forward_row(c, l, p, wt, bias, oh, plane + (size_t)oh * c->ow * LANES);
  dw_deinterleave(plane, c->oh * c->ow, outs, add);
}

static void forward_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow;
  float* p = dw_buffer(tid);
  v4 wt[64];
  int wco = -1;
  dw_zero(p, l->block);
  // Units in channel-group-major order: consecutive units share their weights.
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u % c->n, co0 = (u / c->n) * LANES;
    const float* planes[LANES];
    float* outs[LANES];
    float b[LANES];
    for (int k = 0; k < LANES; k++) {
      int co = co0 + k;
      planes[k] = co < c->cout ? dw_.x + ((size_t)img * c->cin + co / m) * c->h * c->w : 0;
      outs[k] = co < c->cout ? dw_.y + ((size_t)img * c->cout + co) * ohw : 0;
      b[k] = co < c->cout && dw_.bias ? dw_.bias[co] : 0.0f;
    }
    dw_pack_block(c, l, planes, p, p + l->block + l->row);
    if (co0 != wco) weights4(c, co0, wt), wco = co0;
    dw_conv_unit(c, l, p, wt, wasm_f32x4_make(b[0], b[1], b[2], b[3]), outs, 0);
  }
}

// Shared state, scratch, and units (image x channel group, or channel groups) per task from the work per unit.
int dw_setup(const Conv* c, int channels, int units, double flops_per_unit) {
  dw_.c = c;
  dw_.l = layout(c);
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

// More than 64 taps (kernels past 8x8) or stride classes take the GEMM path (conv.c): per-tap state is on the stack.
int depthwise_fits(const Conv* c) { return c->kh * c->kw <= 64 && c->sh * c->sw <= 64; }

void depthwise_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y) {
  double per = LANES * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  int tasks = dw_setup(c, c->cout, c->n * cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.w = w, dw_.bias = bias, dw_.y = y;
  parallel_for(forward_task, tasks, pool_threads());
}

