// Packing for the GEMM core (gemm.c): copies of A and B blocks into the panel order the micro-kernel reads,
// contiguous and zero-padded to whole panels. This is where transposes, image strides and implicit im2col are
// resolved, so the micro-kernel only ever sees dense panels.
#include "gemm.h"

// A rows [i0, i0+mc) x reduction [p0, p0+kc) into panels dst[panel][p][MR], rows past m zero.
void gemm_pack_a(const Gemm* g, const float* a, int i0, int mc, int p0, int kc, float* dst) {
  for (int ip = 0; ip < mc; ip += MR) {
    int rows = imin(MR, g->m - (i0 + ip));
    const float* arow = a + (size_t)(i0 + ip) * g->ars;
    int img = p0 / g->kpix, pix = p0 % g->kpix;
    for (int p = 0; p < kc; p++) {
      const float* src = arow + (size_t)img * g->akimg + (size_t)pix * g->acs;
      if (rows == MR) {
        for (int r = 0; r < MR; r++) dst[r] = src[(size_t)r * g->ars];
      } else {
        for (int r = 0; r < MR; r++) dst[r] = r < rows ? src[(size_t)r * g->ars] : 0.0f;
      }
      dst += MR;
      if (++pix == g->kpix) pix = 0, img++;
    }
  }
}

// Columns [j0, j0+NR) of a dense B: per-column offsets, and whether they are NR consecutive elements.
static int dense_columns(const Gemm* g, int j0, int* off) {
  int img = j0 / g->npix, pix = j0 % g->npix;
  int consecutive = g->bcs == 1;
  for (int jj = 0; jj < NR; jj++) {
    if (j0 + jj >= g->n) {
      off[jj] = -1;
      consecutive = 0;
    } else {
      off[jj] = img * g->bnimg + pix * g->bcs;
      if (jj && off[jj] != off[0] + jj) consecutive = 0;
    }
    if (++pix == g->npix) pix = 0, img++;
  }
  return consecutive;
}

static void pack_b_dense(const Gemm* g, const float* b, int j0, int nc, int p0, int kc, float* dst) {
  int off[NR];
  for (int jp = 0; jp < nc; jp += NR) {
    int consecutive = dense_columns(g, j0 + jp, off);
    int img = p0 / g->kpix, pix = p0 % g->kpix;
    for (int p = 0; p < kc; p++) {
      const float* src = b + (size_t)img * g->bkimg + (size_t)pix * g->brs;
      if (consecutive) {
        ST(dst, wasm_v128_load(src + off[0]));
        ST(dst + 4, wasm_v128_load(src + off[0] + 4));
      } else {
        for (int jj = 0; jj < NR; jj++) dst[jj] = off[jj] < 0 ? 0.0f : src[off[jj]];
      }
      dst += NR;
      if (++pix == g->kpix) pix = 0, img++;
    }
  }
}

// Implicit im2col: B(p, j) = x[img(j), ci, oh*sh + ky*dh - ph, ow*sw + kx*dw - pw] for p = (ci, ky, kx).
static void pack_b_im2col(const Gemm* g, const float* x, int j0, int nc, int p0, int kc, float* dst) {
  const ConvGeom* c = &g->g;
  int taps = c->kh * c->kw;
  // Per reduction index: channel plane offset and the tap's row/column offsets (no divisions per panel).
  int poff[KC], pky[KC], pkx[KC];
  for (int p = 0; p < kc; p++) {
    int ci = (p0 + p) / taps, t = (p0 + p) % taps;
    poff[p] = ci * c->hw;
    pky[p] = (t / c->kw) * c->dh;
    pkx[p] = (t % c->kw) * c->dw;
  }
  int imgoff[NR], ih0[NR], iw0[NR];
  int img = j0 / g->npix, pix = j0 % g->npix;
  int oh = pix / c->outw, ow = pix % c->outw;
  for (int jp = 0; jp < nc; jp += NR) {
    int valid = imin(NR, g->n - (j0 + jp));
    for (int jj = 0; jj < NR; jj++) {
      imgoff[jj] = img * g->bnimg;
      ih0[jj] = oh * c->sh - c->ph;
      iw0[jj] = ow * c->sw - c->pw;
      if (++ow == c->outw) {
        ow = 0;
        if (++oh == c->ohw / c->outw) oh = 0, img++;
      }
    }
    // One output row of one image: a window row is NR input elements 1 or 2 apart (the stem's stride 2).
    int row = valid == NR && (c->sw == 1 || c->sw == 2) && imgoff[NR - 1] == imgoff[0] && ih0[NR - 1] == ih0[0];
    int span = (NR - 1) * c->sw + 1;
    for (int p = 0; p < kc; p++) {
      const float* plane = x + poff[p];
      int kyd = pky[p], kxd = pkx[p];
      if (row) {
        int ih = ih0[0] + kyd, iw = iw0[0] + kxd;
        if (ih < 0 || ih >= c->h) {
          ST(dst, ZERO);
          ST(dst + 4, ZERO);
        } else if (iw >= 0 && iw + span <= c->w) {
          const float* src = plane + imgoff[0] + ih * c->w + iw;
          if (c->sw == 1) {
            ST(dst, wasm_v128_load(src));
            ST(dst + 4, wasm_v128_load(src + 4));
          } else {
            // Even lanes of 16 consecutive elements; the last load stops at the window's last element.
            v4 a = LD(src), b = LD(src + 4), d = LD(src + 8), e = LD(src + 11);
            ST(dst, wasm_i32x4_shuffle(a, b, 0, 2, 4, 6));
            ST(dst + 4, wasm_i32x4_shuffle(d, e, 0, 2, 5, 7));
          }
        } else {
          const float* src = plane + imgoff[0] + ih * c->w;
          for (int jj = 0; jj < NR; jj++) {
            int x_ = iw + jj * c->sw;
            dst[jj] = x_ >= 0 && x_ < c->w ? src[x_] : 0.0f;
          }
        }
      } else {
        for (int jj = 0; jj < NR; jj++) {
          int ih = ih0[jj] + kyd, iw = iw0[jj] + kxd;
          dst[jj] = jj < valid && ih >= 0 && ih < c->h && iw >= 0 && iw < c->w
                        ? plane[imgoff[jj] + ih * c->w + iw]
                        : 0.0f;
        }
      }
      dst += NR;
    }
  }
}

// im2col transposed (the weight gradient): B(p, j) = x[img(p), ci, oh*sh + ky*dh - ph, ow*sw + kx*dw - pw] for
// p = (img, oh, ow) and j = (ci, ky, kx).
static void pack_b_im2col_t(const Gemm* g, const float* x, int j0, int nc, int p0, int kc, float* dst) {
  const ConvGeom* c = &g->g;
  int taps = c->kh * c->kw;
  // Per reduction index: image offset and window origin (no divisions in the panel loops).
  int pimg[KC], pih[KC], piw[KC];
  {
    int img = p0 / g->kpix, pix = p0 % g->kpix;
    int oh = pix / c->outw, ow = pix % c->outw;
    for (int p = 0; p < kc; p++) {
      pimg[p] = img * g->bkimg;
      pih[p] = oh * c->sh - c->ph;
      piw[p] = ow * c->sw - c->pw;
      if (++ow == c->outw) {
        ow = 0;
        if (++oh == c->ohw / c->outw) oh = 0, img++;
      }
    }
  }
  int choff[NR], kyd[NR], kxd[NR];
  for (int jp = 0; jp < nc; jp += NR) {
    int j = j0 + jp;
    int valid = imin(NR, g->n - j);
    for (int jj = 0; jj < NR; jj++) {
      int jj_ = imin(j + jj, g->n - 1);
      choff[jj] = (jj_ / taps) * c->hw;
      kyd[jj] = ((jj_ % taps) / c->kw) * c->dh;
      kxd[jj] = ((jj_ % taps) % c->kw) * c->dw;
    }
    for (int p = 0; p < kc; p++) {
      const float* xi = x + pimg[p];
      int ih0 = pih[p], iw0 = piw[p];
      for (int jj = 0; jj < NR; jj++) {
        int ih = ih0 + kyd[jj], iw = iw0 + kxd[jj];
        dst[jj] = jj < valid && ih >= 0 && ih < c->h && iw >= 0 && iw < c->w
                      ? xi[choff[jj] + ih * c->w + iw]
                      : 0.0f;
      }
      dst += NR;
    }
  }
}

void gemm_pack_b(const Gemm* g, const float* b, int j0, int nc, int p0, int kc, float* dst) {
  if (g->bkind == B_DENSE) pack_b_dense(g, b, j0, nc, p0, kc, dst);
  else if (g->bkind == B_IM2COL) pack_b_im2col(g, b, j0, nc, p0, kc, dst);
  else pack_b_im2col_t(g, b, j0, nc, p0, kc, dst);
}

