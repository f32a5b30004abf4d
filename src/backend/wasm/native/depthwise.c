// Depthwise convolutions (one input channel per group), direct: forward, input and weight gradients.
//
// The input plane is copied once into a zero-padded, stride-phase-split layout: P[y][r][j] holds padded
// column j*sw + r of padded row y. Output column ow of tap kx then reads P[y][(kx*dw) % sw][ow + (kx*dw)/sw],
// so for every stride and dilation the SIMD loop over ow does contiguous, unconditional loads (padding and
// edges are zeros in the copy). The input gradient is the adjoint: it scatters into a zeroed accumulator of
// the same layout with contiguous loads and stores, then copies the interior back out.
#include "conv.h"
#include "common.h"



typedef struct {
  int hp;      // padded rows
  int wq;      // floats per phase row
  int rstride; // floats per padded row: sw * wq
  int ow4;     // output columns rounded up to whole vectors
  int floats;  // plane + one zero-padded output row
} Layout;

static struct {
  const Conv* c;
  Layout l;
  const float *x, *w, *bias, *dy;
  float *y, *dx, *dw;
  float* buf; // per-thread buffers (floats each), when the plane does not fit in scratch
  int planes_per_task;
} dw_;

static Layout layout(const Conv* c) {
  Layout l;
  l.hp = c->h + 2 * c->ph;
  l.ow4 = cdiv(c->ow, 4) * 4;
  l.wq = imax(l.ow4 + (c->kw - 1) * c->dw / c->sw + 1, cdiv(c->w + 2 * c->pw, c->sw));
  l.rstride = c->sw * l.wq;
  l.floats = l.hp * l.rstride + l.ow4 + 4;
  return l;
}

static float* buffer(int tid) {
  return dw_.buf ? dw_.buf + (size_t)tid * cdiv(dw_.l.floats, 16) * 16 : scratch(tid);
}

// Padded, phase-split copy of one input plane.
static void fill_plane(const Conv* c, const Layout* l, const float* x, float* p) {
  for (int y = 0; y < l->hp; y++) {
    float* row = p + (size_t)y * l->rstride;
    int iy = y - c->ph;
    if (iy < 0 || iy >= c->h) {
      for (int i = 0; i < l->rstride; i++) row[i] = 0.0f;
      continue;
    }
    const float* src = x + (size_t)iy * c->w;
    if (c->sw == 1) {
      for (int i = 0; i < c->pw; i++) row[i] = 0.0f;
      __builtin_memcpy(row + c->pw, src, (size_t)c->w * 4);
      for (int i = c->pw + c->w; i < l->wq; i++) row[i] = 0.0f;
    } else {
      for (int r = 0; r < c->sw; r++) {
        float* ph = row + r * l->wq;
        for (int j = 0; j < l->wq; j++) {
          int ix = j * c->sw + r - c->pw;
          ph[j] = ix >= 0 && ix < c->w ? src[ix] : 0.0f;
        }
      }
    }
  }
}

// Offset of tap (ky, kx) for output (oh, 0) in the layout.
INLINE int tap_offset(const Conv* c, const Layout* l, int oh, int ky, int kx) {
  int col = kx * c->dw;
  return (oh * c->sh + ky * c->dh) * l->rstride + (col % c->sw) * l->wq + col / c->sw;
}

INLINE void store_row(float* dst, int ow, int cols, v4 v) {
  if (ow + 4 <= cols) {
    ST(dst + ow, v);
  } else {
    float t[4] __attribute__((aligned(16)));
    ST(t, v);
    for (int i = 0; ow + i < cols; i++) dst[ow + i] = t[i];
  }
}

static void forward_plane(const Conv* c, const Layout* l, const float* p, const float* w, float b, float* y) {
  int taps = c->kh * c->kw;
  if (c->kh == 3 && c->kw == 3) {
    v4 w0 = SPLAT(w[0]), w1 = SPLAT(w[1]), w2 = SPLAT(w[2]), w3 = SPLAT(w[3]), w4 = SPLAT(w[4]);
    v4 w5 = SPLAT(w[5]), w6 = SPLAT(w[6]), w7 = SPLAT(w[7]), w8 = SPLAT(w[8]);
    int o0 = tap_offset(c, l, 0, 0, 0), o1 = tap_offset(c, l, 0, 0, 1), o2 = tap_offset(c, l, 0, 0, 2);
    int o3 = tap_offset(c, l, 0, 1, 0), o4 = tap_offset(c, l, 0, 1, 1), o5 = tap_offset(c, l, 0, 1, 2);
    int o6 = tap_offset(c, l, 0, 2, 0), o7 = tap_offset(c, l, 0, 2, 1), o8 = tap_offset(c, l, 0, 2, 2);
    v4 bv = SPLAT(b);
    for (int oh = 0; oh < c->oh; oh++) {
      const float* r = p + (size_t)oh * c->sh * l->rstride;
      float* dst = y + (size_t)oh * c->ow;
      for (int ow = 0; ow < c->ow; ow += 4) {
        const float* q = r + ow;
        v4 a = FMA(w0, LD(q + o0), bv);
        v4 a2 = wasm_f32x4_mul(w1, LD(q + o1));
        a = FMA(w2, LD(q + o2), a);
        a2 = FMA(w3, LD(q + o3), a2);
        a = FMA(w4, LD(q + o4), a);
        a2 = FMA(w5, LD(q + o5), a2);
        a = FMA(w6, LD(q + o6), a);
        a2 = FMA(w7, LD(q + o7), a2);
        a = FMA(w8, LD(q + o8), a);
        store_row(dst, ow, c->ow, wasm_f32x4_add(a, a2));
      }
    }
    return;
  }
  for (int oh = 0; oh < c->oh; oh++) {
    float* dst = y + (size_t)oh * c->ow;
    for (int ow = 0; ow < c->ow; ow += 4) {
      v4 a = SPLAT(b);
      for (int t = 0; t < taps; t++) {
        a = FMA(SPLAT(w[t]), LD(p + tap_offset(c, l, oh, t / c->kw, t % c->kw) + ow), a);
      }
      store_row(dst, ow, c->ow, a);
    }
  }
}

static void forward_task(int t, int tid) {
  const Conv* c = dw_.c;
  int coutg = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw;
  float* p = buffer(tid);
  int total = c->n * c->cout;
  int last = -1;
  for (int pl = t * dw_.planes_per_task; pl < imin(total, (t + 1) * dw_.planes_per_task); pl++) {
    int img = pl / c->cout, co = pl % c->cout;
    int src = img * c->cin + co / coutg;
    if (src != last) fill_plane(c, &dw_.l, dw_.x + (size_t)src * c->h * c->w, p);
    last = src;
    forward_plane(c, &dw_.l, p, dw_.w + (size_t)co * taps, dw_.bias ? dw_.bias[co] : 0.0f,
                  dw_.y + (size_t)pl * ohw);
  }
}

// A zero-padded copy of one output row of dy (whole vectors past ow read zeros).
static const float* dy_row(const Conv* c, const Layout* l, const float* dy, int oh, float* tmp) {
  __builtin_memcpy(tmp, dy + (size_t)oh * c->ow, (size_t)c->ow * 4);
  for (int i = c->ow; i < l->ow4; i++) tmp[i] = 0.0f;
  return tmp;
}

static void grad_input_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int coutg = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw;
  float* q = buffer(tid);
  float* tmp = q + (size_t)l->hp * l->rstride;
  int total = c->n * c->cin;
  for (int pl = t * dw_.planes_per_task; pl < imin(total, (t + 1) * dw_.planes_per_task); pl++) {
    int img = pl / c->cin, ci = pl % c->cin;
    for (int i = 0; i < l->hp * l->rstride; i++) q[i] = 0.0f;
    for (int co = ci * coutg; co < (ci + 1) * coutg; co++) {
      const float* w = dw_.w + (size_t)co * taps;
      const float* dy = dw_.dy + ((size_t)img * c->cout + co) * ohw;
      for (int oh = 0; oh < c->oh; oh++) {
        const float* d = dy_row(c, l, dy, oh, tmp);
        for (int tp = 0; tp < taps; tp++) {
          v4 wv = SPLAT(w[tp]);
          float* dst = q + tap_offset(c, l, oh, tp / c->kw, tp % c->kw);
          for (int ow = 0; ow < l->ow4; ow += 4) ST(dst + ow, FMA(wv, LD(d + ow), LD(dst + ow)));
        }
      }
    }
    float* dx = dw_.dx + (size_t)pl * c->h * c->w;
    for (int iy = 0; iy < c->h; iy++) {
      const float* row = q + (size_t)(iy + c->ph) * l->rstride;
      float* out = dx + (size_t)iy * c->w;
      if (c->sw == 1) {
        __builtin_memcpy(out, row + c->pw, (size_t)c->w * 4);
      } else {
        for (int ix = 0; ix < c->w; ix++) {
          int col = ix + c->pw;
          out[ix] = row[(col % c->sw) * l->wq + col / c->sw];
        }
      }
    }
  }
}

static void grad_weight_task(int t, int tid) {
  const Conv* c = dw_.c;
  const Layout* l = &dw_.l;
  int coutg = c->cout / c->groups, ohw = c->oh * c->ow, taps = c->kh * c->kw;
  float* p = buffer(tid);
  float* tmp = p + (size_t)l->hp * l->rstride;
  v4 acc[64];
  double sum[64];
  for (int co = t * dw_.planes_per_task; co < imin(c->cout, (t + 1) * dw_.planes_per_task); co++) {
    int ci = co / coutg;
    for (int t0 = 0; t0 < taps; t0 += 64) {
      int nt = imin(64, taps - t0);
      for (int k = 0; k < nt; k++) sum[k] = 0.0;
      for (int img = 0; img < c->n; img++) {
        fill_plane(c, l, dw_.x + ((size_t)img * c->cin + ci) * c->h * c->w, p);
        const float* dy = dw_.dy + ((size_t)img * c->cout + co) * ohw;
        for (int k = 0; k < nt; k++) acc[k] = ZERO;
        for (int oh = 0; oh < c->oh; oh++) {
          const float* d = dy_row(c, l, dy, oh, tmp);
          for (int k = 0; k < nt; k++) {
            int tp = t0 + k;
            const float* src = p + tap_offset(c, l, oh, tp / c->kw, tp % c->kw);
            v4 a = acc[k];
            for (int ow = 0; ow < l->ow4; ow += 4) a = FMA(LD(d + ow), LD(src + ow), a);
            acc[k] = a;
          }
        }
        for (int k = 0; k < nt; k++) sum[k] += hsum(acc[k]);
      }
      for (int k = 0; k < nt; k++) dw_.dw[(size_t)co * taps + t0 + k] = (float)sum[k];
    }
  }
}

// Prepare the shared state; returns the plane count and sets planes_per_task from the work per plane.
static void setup(const Conv* c, int planes, double flops_per_plane) {
  dw_.c = c;
  dw_.l = layout(c);
  int threads = pool_threads();
  dw_.buf = 0;
  if ((size_t)dw_.l.floats * 4 > (size_t)scratch_bytes()) {
    dw_.buf = ws_alloc(threads * cdiv(dw_.l.floats, 16) * 16 * 4);
  }
  int tasks = split_count(flops_per_plane * planes, 2e5, 8 * threads);
  dw_.planes_per_task = cdiv(planes, tasks);
}

void depthwise_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y) {
  setup(c, c->n * c->cout, 2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w);
  dw_.x = x, dw_.w = w, dw_.bias = bias, dw_.y = y;
  parallel_for(forward_task, cdiv(c->n * c->cout, dw_.planes_per_task), pool_threads());
}

void depthwise_grad_input(const Conv* c, const float* dy, const float* w, float* dx) {
  int coutg = c->cout / c->groups;
  setup(c, c->n * c->cin, 2.0 * coutg * c->oh * c->ow * c->kh * c->kw + 2 * c->h * c->w);
  dw_.dy = dy, dw_.w = w, dw_.dx = dx;
  parallel_for(grad_input_task, cdiv(c->n * c->cin, dw_.planes_per_task), pool_threads());
}

void depthwise_grad_weight(const Conv* c, const float* x, const float* dy, float* dw) {
  setup(c, c->cout, c->n * (2.0 * c->oh * c->ow * c->kh * c->kw + c->h * c->w));
  dw_.x = x, dw_.dy = dy, dw_.dw = dw;
  parallel_for(grad_weight_task, cdiv(c->cout, dw_.planes_per_task), pool_threads());
}
