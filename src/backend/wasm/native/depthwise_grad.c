// Gradients of the depthwise convolutions: the input gradient as a gather (stride 1: the forward loop over dy
// with the flipped kernel; other strides: one loop per stride phase), and the weight gradient summed over
// images with one accumulator per tap.
#include "depthwise.h"

// The stride-1 input gradient as a forward convolution: dx is dy, padded by (k-1)*d - pad, correlated with
// the flipped kernel. dw_.c is that transposed geometry (h x w = dy's plane, oh x ow = dx's); dw_.fwd is the
// original convolution.
static void grad_input_gather_task(int t, int tid) {
  const Conv* g = dw_.c;
  const Conv* c = dw_.fwd;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, taps = c->kh * c->kw, ohw = c->oh * c->ow, hw = c->h * c->w;
  float* p = dw_buffer(tid);
  v4 wt[64];
  dw_zero(p, l->block);
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u % c->n, ci0 = (u / c->n) * LANES;
    float* outs[LANES];
    for (int k = 0; k < LANES; k++) outs[k] = ci0 + k < c->cin ? dw_.dx + ((size_t)img * c->cin + ci0 + k) * hw : 0;
    for (int mm = 0; mm < m; mm++) {
      const float* planes[LANES];
      for (int k = 0; k < LANES; k++) {
        planes[k] = ci0 + k < c->cin ? dw_.dy + ((size_t)img * c->cout + (ci0 + k) * m + mm) * ohw : 0;
      }
      dw_pack_block(g, l, planes, p, p + l->block + l->row);
      for (int t_ = 0; t_ < taps; t_++) {
        float v[LANES];
        for (int k = 0; k < LANES; k++) {
          v[k] = ci0 + k < c->cin ? dw_.w[(size_t)((ci0 + k) * m + mm) * taps + (taps - 1 - t_)] : 0.0f;
        }
        wt[t_] = wasm_f32x4_make(v[0], v[1], v[2], v[3]);
      }
      dw_conv_unit(g, l, p, wt, ZERO, outs, mm > 0);
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
  float* p = dw_buffer(tid);
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
  dw_zero(p, l->block);
  for (int u = t * dw_.per; u < imin(c->n * dw_.groups4, (t + 1) * dw_.per); u++) {
    int img = u % c->n, ci0 = (u / c->n) * LANES;
    float* outs[LANES];
    for (int k = 0; k < LANES; k++) outs[k] = ci0 + k < c->cin ? dw_.dx + ((size_t)img * c->cin + ci0 + k) * hw : 0;
    for (int mm = 0; mm < m; mm++) {
      const float* planes[LANES];
      for (int k = 0; k < LANES; k++) {
        planes[k] = ci0 + k < c->cin ? dw_.dy + ((size_t)img * c->cout + (ci0 + k) * m + mm) * ohw : 0;
      }
      dw_pack_block(g, l, planes, p, plane);
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
      dw_deinterleave(plane, hw, outs, mm > 0);
    }
  }
}

// Weight gradient of four output channels, summed over every image: one accumulator per tap.
static void grad_weight_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int m = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw, wp4 = l->wp * LANES;
  float* p = dw_buffer(tid);
  float* row = p + l->block;
  v4 acc[64];
  double sum[64][LANES];
  dw_zero(p, l->block);
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
      dw_pack_block(c, l, planes, p, p + l->block + l->row);
      for (int t_ = 0; t_ < taps; t_++) acc[t_] = ZERO;
      for (int oh = 0; oh < c->oh; oh++) {
        const float* src[LANES];
        for (int k = 0; k < LANES; k++) src[k] = dys[k] ? dys[k] + (size_t)oh * c->ow : 0;
        dw_interleave(src, c->ow, row);
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
  int tasks = dw_setup(&g, c->cin, c->n * cdiv(c->cin, LANES), per);
  dw_.fwd = c, dw_.dy = dy, dw_.w = w, dw_.dx = dx;
  parallel_for(fn, tasks, pool_threads());
}

void depthwise_grad_weight(const Conv* c, const float* x, const float* dy, float* dw) {
  double per = LANES * c->n * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  int tasks = dw_setup(c, c->cout, cdiv(c->cout, LANES), per);
  dw_.x = x, dw_.dy = dy, dw_.dw = dw;
  parallel_for(grad_weight_task, tasks, pool_threads());
}
