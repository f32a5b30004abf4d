// Depthwise convolutions (one input channel per group, at most 4 outputs each): forward, input gradient and
// weight gradient, direct, four channels per SIMD vector.
//
// Four planes are transposed into one zero-padded interleaved block, P[y][x][lane], so every tap of every
// output position is one 16-byte load that serves four channels: strides, dilation and padding cost nothing
// in the inner loop, and small planes (4x4 .. 14x14, where a vector across the width would be mostly padding
// and loop overhead) need no special case. Outputs go into an interleaved plane that is transposed back into
// the four NCHW planes. The input gradient is a gather too (no output written twice): at stride 1 the
// forward loop over dy with the flipped kernel, at other strides a loop per stride phase.
#include "conv.h"
#include "common.h"

#define LANES 4

typedef struct {
  int hp, wp;   // padded block: rows, columns
  int block;    // floats of the padded block: hp * wp * 4
  int row;      // floats of one interleaved row: max(ow, w) * 4 (rounded up to 8 positions)
  int plane;    // floats of one interleaved plane: max(oh * ow, h * w) * 4
  int floats;   // scratch a task needs
} Layout;

static struct {
  const Conv* c;
  Layout l;
  const float *x, *w, *bias, *dy;
  float *y, *dx, *dw;
  const Conv* fwd; // the original convolution, when c is the transposed one of the stride-1 input gradient
  float* buf;       // per-thread buffers, when scratch is too small
  int groups4; // channel groups of 4
  int per;     // units per task
} dw_;

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

static void zero(float* p, int floats) {
  for (int i = 0; i < floats; i += 4) ST(p + i, ZERO);
}

// The interior of the padded, interleaved block of four h x w planes (NULL lanes are zeros). The padding is
// never written, so zeroing the block once (per task) keeps it zero for every unit packed after. Rows whose
// width is not a multiple of 4 would each end in scalar code: such planes are interleaved whole into `tmp`
// (the planes are contiguous) and copied in by rows.
static void pack_block(const Conv* c, const Layout* l, const float* const* planes, float* p, float* tmp) {
  int wp4 = l->wp * LANES;
  if (c->w % 4 && c->h > 1) {
    interleave(planes, c->h * c->w, tmp);
    for (int iy = 0; iy < c->h; iy++) {
      __builtin_memcpy(p + (size_t)(iy + c->ph) * wp4 + c->pw * LANES, tmp + (size_t)iy * c->w * LANES,
                       (size_t)c->w * LANES * 4);
    }
    return;
  }
  for (int iy = 0; iy < c->h; iy++) {
    const float* src[LANES];
    for (int k = 0; k < LANES; k++) src[k] = planes[k] ? planes[k] + (size_t)iy * c->w : 0;
    interleave(src, c->w, p + (size_t)(iy + c->ph) * wp4 + c->pw * LANES);
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
static void conv_unit(const Conv* c, const Layout* l, float* p, const v4* wt, v4 bias, float* const* outs, int add) {
  float* plane = p + l->block + l->row;
  for (int oh = 0; oh < c->oh; oh++) forward_row(c, l, p, wt, bias, oh, plane + (size_t)oh * c->ow * LANES);
  deinterleave(plane, c->oh * c->ow, outs, add);
}

static void forward_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow;
  float* p = buffer(tid);
  v4 wt[64];
  int wco = -1;
  zero(p, l->block);
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
    pack_block(c, l, planes, p, p + l->block + l->row);
    if (co0 != wco) weights4(c, co0, wt), wco = co0;
    conv_unit(c, l, p, wt, wasm_f32x4_make(b[0], b[1], b[2], b[3]), outs, 0);
  }
}

// The stride-1 input gradient as a forward convolution: dx is dy, padded by (k-1)*d - pad, correlated with
// the flipped kernel. dw_.c is that transposed geometry (h x w = dy's plane, oh x ow = dx's); dw_.fwd is the
// original convolution.
static void grad_input_gather_task(int t, int tid) {
  const Conv* g = dw_.c;
  const Conv* c = dw_.fwd;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, taps = c->kh * c->kw, ohw = c->oh * c->ow, hw = c->h * c->w;
  float* p = buffer(tid);
  v4 wt[64];
  zero(p, l->block);
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u % c->n, ci0 = (u / c->n) * LANES;
    float* outs[LANES];
    for (int k = 0; k < LANES; k++) outs[k] = ci0 + k < c->cin ? dw_.dx + ((size_t)img * c->cin + ci0 + k) * hw : 0;
    for (int mm = 0; mm < m; mm++) {
      const float* planes[LANES];
      for (int k = 0; k < LANES; k++) {
        planes[k] = ci0 + k < c->cin ? dw_.dy + ((size_t)img * c->cout + (ci0 + k) * m + mm) * ohw : 0;
      }
      pack_block(g, l, planes, p, p + l->block + l->row);
      for (int t_ = 0; t_ < taps; t_++) {
        float v[LANES];
        for (int k = 0; k < LANES; k++) {
          v[k] = ci0 + k < c->cin ? dw_.w[(size_t)((ci0 + k) * m + mm) * taps + (taps - 1 - t_)] : 0.0f;
        }
        wt[t_] = wasm_f32x4_make(v[0], v[1], v[2], v[3]);
      }
      conv_unit(g, l, p, wt, ZERO, outs, mm > 0);
    }
  }
}

// The input gradient for any stride, as a gather over phases: dx[iy][ix] sums w[ky][kx] * dy[oy][ox] over the
// taps with iy + ph - ky*dh = oy*sh and ix + pw - kx*dw = ox*sw. Tap (ky, kx) reaches exactly the outputs with
// iy = (ky*dh - ph) mod sh and ix = (kx*dw - pw) mod sw, so the taps split into sh*sw classes and every output
// of a class reads only that class's taps (about kh*kw / (sh*sw)) from a zero-padded dy block; no position
// is written twice. dw_.c is the geometry of that block (h x w = dy's plane, symmetric padding wide enough
// for every tap), dw_.fwd the original convolution.
static void grad_input_phase_task(int t, int tid) {
  const Conv* g = dw_.c;
  const Conv* c = dw_.fwd;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, taps = c->kh * c->kw, ohw = c->oh * c->ow, hw = c->h * c->w;
  int wp4 = l->wp * LANES;
  float* p = buffer(tid);
  float* plane = p + l->block + l->row;
  v4 wt[64], ew[64];
  // Taps by class (py * sw + px), with the block offset of output (py, px) of the class.
  int classes = c->sh * c->sw, start[65], tap[64], base[64];
  {
    int count[64] = {0};
    for (int t_ = 0; t_ < taps; t_++) {
      int py = (((t_ / c->kw) * c->dh - c->ph) % c->sh + c->sh) % c->sh;
      int px = (((t_ % c->kw) * c->dw - c->pw) % c->sw + c->sw) % c->sw;
      count[py * c->sw + px]++;
    }
    start[0] = 0;
    for (int k = 0; k < classes; k++) start[k + 1] = start[k] + count[k], count[k] = 0;
    for (int t_ = 0; t_ < taps; t_++) {
      int ky = t_ / c->kw, kx = t_ % c->kw;
      int py = ((ky * c->dh - c->ph) % c->sh + c->sh) % c->sh, px = ((kx * c->dw - c->pw) % c->sw + c->sw) % c->sw;
      int k = py * c->sw + px, e = start[k] + count[k]++;
      tap[e] = t_;
      // Exact divisions: the numerators are multiples of the stride by the choice of py, px.
      base[e] = ((py + c->ph - ky * c->dh) / c->sh + g->ph) * wp4 + ((px + c->pw - kx * c->dw) / c->sw + g->pw) * LANES;
    }
  }
  zero(p, l->block);
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u % c->n, ci0 = (u / c->n) * LANES;
    float* outs[LANES];
    for (int k = 0; k < LANES; k++) outs[k] = ci0 + k < c->cin ? dw_.dx + ((size_t)img * c->cin + ci0 + k) * hw : 0;
    for (int mm = 0; mm < m; mm++) {
      const float* planes[LANES];
      for (int k = 0; k < LANES; k++) {
        planes[k] = ci0 + k < c->cin ? dw_.dy + ((size_t)img * c->cout + (ci0 + k) * m + mm) * ohw : 0;
      }
      pack_block(g, l, planes, p, plane);
      for (int t_ = 0; t_ < taps; t_++) {
        float v[LANES];
        for (int k = 0; k < LANES; k++) v[k] = ci0 + k < c->cin ? dw_.w[(size_t)((ci0 + k) * m + mm) * taps + t_] : 0.0f;
        wt[t_] = wasm_f32x4_make(v[0], v[1], v[2], v[3]);
      }
      for (int py = 0; py < c->sh && py < c->h; py++) {
        for (int px = 0; px < c->sw && px < c->w; px++) {
          int k = py * c->sw + px, e0 = start[k], ne = start[k + 1] - e0;
          for (int e = 0; e < ne; e++) ew[e] = wt[tap[e0 + e]];
          const int* eo = base + e0;
          int step = c->sw * LANES, cols = (c->w - px + c->sw - 1) / c->sw;
          for (int a = 0; py + a * c->sh < c->h; a++) {
            float* out = plane + ((size_t)(py + a * c->sh) * c->w + px) * LANES;
            const float* row = p + (size_t)a * wp4;
            if (ne == 4) {
              v4 w0 = ew[0], w1 = ew[1], w2 = ew[2], w3 = ew[3];
              const float *s0 = row + eo[0], *s1 = row + eo[1], *s2 = row + eo[2], *s3 = row + eo[3];
              for (int j = 0; j < cols; j++) {
                int o = j * LANES;
                v4 x = wasm_f32x4_mul(w0, LD(s0 + o));
                v4 y = wasm_f32x4_mul(w1, LD(s1 + o));
                x = FMA(w2, LD(s2 + o), x);
                y = FMA(w3, LD(s3 + o), y);
                ST(out + (size_t)j * step, wasm_f32x4_add(x, y));
              }
            } else if (ne == 2) {
              v4 w0 = ew[0], w1 = ew[1];
              const float *s0 = row + eo[0], *s1 = row + eo[1];
              for (int j = 0; j < cols; j++) {
                int o = j * LANES;
                ST(out + (size_t)j * step, FMA(w1, LD(s1 + o), wasm_f32x4_mul(w0, LD(s0 + o))));
              }
            } else if (ne == 1) {
              v4 w0 = ew[0];
              const float* s0 = row + eo[0];
              for (int j = 0; j < cols; j++) ST(out + (size_t)j * step, wasm_f32x4_mul(w0, LD(s0 + j * LANES)));
            } else {
              for (int j = 0; j < cols; j++) {
                v4 x = ZERO;
                for (int e = 0; e < ne; e++) x = FMA(ew[e], LD(row + eo[e] + j * LANES), x);
                ST(out + (size_t)j * step, x);
              }
            }
          }
        }
      }
      deinterleave(plane, hw, outs, mm > 0);
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
  zero(p, l->block);
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
      pack_block(c, l, planes, p, p + l->block + l->row);
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
  int tasks = setup(c, c->cout, c->n * cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.w = w, dw_.bias = bias, dw_.y = y;
  parallel_for(forward_task, tasks, pool_threads());
}

void depthwise_grad_input(const Conv* c, const float* dy, const float* w, float* dx) {
  int m = c->cout / c->groups;
  double per = LANES * (2.0 * m * c->oh * c->ow * c->kh * c->kw + 2 * c->h * c->w);
  static Conv g;
  g = *c;
  g.h = c->oh, g.w = c->ow, g.oh = c->h, g.ow = c->w;
  int tph = (c->kh - 1) * c->dh - c->ph, tpw = (c->kw - 1) * c->dw - c->pw;
  task_fn fn;
  if (c->sh == 1 && c->sw == 1 && tph >= 0 && tpw >= 0) {
    // Stride 1: correlate dy, padded by (k-1)*d - pad, with the flipped kernel: the forward kernel's loop.
    g.ph = tph, g.pw = tpw;
    fn = grad_input_gather_task;
  } else {
    // Any stride: padding wide enough for every tap's dy index (out-of-range ones read zeros).
    g.ph = imax(imax(0, cdiv(tph, c->sh)), (c->h - 1 + c->ph) / c->sh - c->oh + 1);
    g.pw = imax(imax(0, cdiv(tpw, c->sw)), (c->w - 1 + c->pw) / c->sw - c->ow + 1);
    fn = grad_input_phase_task;
  }
  int tasks = setup(&g, c->cin, c->n * cdiv(c->cin, LANES), per);
  dw_.fwd = c, dw_.dy = dy, dw_.w = w, dw_.dx = dx;
  parallel_for(fn, tasks, pool_threads());
}

void depthwise_grad_weight(const Conv* c, const float* x, const float* dy, float* dw) {
  double per = LANES * c->n * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  int tasks = setup(c, c->cout, cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.dy = dy, dw_.dw = dw;
  parallel_for(grad_weight_task, tasks, pool_threads());
}
