// 2-D max and average pooling and their gradients (kernels.ts pool2d, pool2d_grad), per plane over the pool.
// Scalar C with the reference's exact rules: the first maximal tap wins, a NaN beats everything and stays,
// windows with no input tap give -inf / 0 and argmax 0xffffffff; average sums in double.
#include "common.h"

#define NO_TAP 0xffffffffu

typedef struct {
  int max, n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, oh, ow, include_pad;
} Pool;

static struct {
  Pool p;
  int per;
  const float* x;
  const float* dy;
  float* out;
  uint32_t* argmax;
} pl_;

static int divisor(const Pool* a, int oh, int ow) {
  int h0 = oh * a->sh - a->pt, w0 = ow * a->sw - a->pl;
  if (a->include_pad) {
    int h1 = imin(h0 + a->kh, a->h + a->pb), w1 = imin(w0 + a->kw, a->w + a->pr);
    return (h1 - h0) * (w1 - w0);
  }
  int rows = imin(h0 + a->kh, a->h) - imax(h0, 0), cols = imin(w0 + a->kw, a->w) - imax(w0, 0);
  return imax(rows, 0) * imax(cols, 0);
}

static void pool_task(int t, int tid) {
  (void)tid;
  const Pool* a = &pl_.p;
  int plane = a->h * a->w, oplane = a->oh * a->ow;
  for (int pi = t * pl_.per; pi < imin(a->n * a->c, (t + 1) * pl_.per); pi++) {
    const float* x = pl_.x + (size_t)pi * plane;
    for (int oh = 0; oh < a->oh; oh++) {
      for (int ow = 0; ow < a->ow; ow++) {
        int h0 = oh * a->sh - a->pt, w0 = ow * a->sw - a->pl;
        float best = -__builtin_inff();
        uint32_t at = NO_TAP;
        double sum = 0.0;
        for (int i = 0; i < a->kh; i++) {
          int ih = h0 + i * a->dh;
          if (ih < 0 || ih >= a->h) continue;
          for (int j = 0; j < a->kw; j++) {
            int iw = w0 + j * a->dw;
            if (iw < 0 || iw >= a->w) continue;
            float v = x[ih * a->w + iw];
            sum += v;
            if (at == NO_TAP || v > best || (v != v && best == best)) best = v, at = (uint32_t)(ih * a->w + iw);
          }
        }
        size_t o = (size_t)pi * oplane + oh * a->ow + ow;
        if (a->max) {
          pl_.out[o] = best;
          if (pl_.argmax) pl_.argmax[o] = at;
        } else {
          int div = divisor(a, oh, ow);
          pl_.out[o] = div > 0 ? (float)(sum / div) : 0.0f;
        }
      }
    }
  }
}

static void pool_grad_task(int t, int tid) {
  (void)tid;
  const Pool* a = &pl_.p;
  int plane = a->h * a->w, oplane = a->oh * a->ow;
  for (int pi = t * pl_.per; pi < imin(a->n * a->c, (t + 1) * pl_.per); pi++) {
    float* d = pl_.out + (size_t)pi * plane;
    const float* g = pl_.dy + (size_t)pi * oplane;
    for (int i = 0; i < plane; i++) d[i] = 0.0f;
    if (a->max) {
      const uint32_t* am = pl_.argmax + (size_t)pi * oplane;
      for (int o = 0; o < oplane; o++) {
        if (am[o] != NO_TAP) d[am[o]] += g[o];
      }
      continue;
    }
    for (int oh = 0; oh < a->oh; oh++) {
      for (int ow = 0; ow < a->ow; ow++) {
        int div = divisor(a, oh, ow);
        if (div == 0) continue;
        float v = g[oh * a->ow + ow] / (float)div;
        int h0 = oh * a->sh - a->pt, w0 = ow * a->sw - a->pl;
        for (int ih = imax(h0, 0); ih < imin(h0 + a->kh, a->h); ih++) {
          for (int iw = imax(w0, 0); iw < imin(w0 + a->kw, a->w); iw++) d[ih * a->w + iw] += v;
        }
      }
    }
  }
}

#define POOL_ARGS                                                                                       \
  int max, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr, int dh, \
      int dw, int oh, int ow, int include_pad
#define POOL_INIT {max, n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, oh, ow, include_pad}

static int plane_tasks(const Pool* a, double work_per_plane) {
  int planes = a->n * a->c;
  int tasks = imin(planes, split_count(work_per_plane * planes, 1 << 16, 8 * pool_threads()));
  pl_.per = cdiv(planes, tasks);
  return cdiv(planes, pl_.per);
}

EXPORT void pool2d(const float* x, float* out, uint32_t* argmax, POOL_ARGS) {
  Pool p = POOL_INIT;
  pl_.p = p, pl_.x = x, pl_.out = out, pl_.argmax = argmax;
  parallel_for(pool_task, plane_tasks(&p, (double)oh * ow * kh * kw), pool_threads());
}

EXPORT void pool2d_grad(const float* dy, const uint32_t* argmax, float* out, POOL_ARGS) {
  Pool p = POOL_INIT;
  pl_.p = p, pl_.dy = dy, pl_.out = out, pl_.argmax = (uint32_t*)argmax;
  parallel_for(pool_grad_task, plane_tasks(&p, (double)h * w + oh * ow * (max ? 1 : kh * kw)), pool_threads());
}
