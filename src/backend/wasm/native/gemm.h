// The GEMM core of matmul and the convolutions: C (=|+=) op(A) op(B) on "virtual" matrices whose rows and
// columns may be spread over images, so one call covers a batched 1x1 convolution, an implicit-im2col
// convolution and a weight gradient summed over images (see gemm.c).
#pragma once
#include "common.h"

// Micro-tile (MR x NR) and cache blocks (MC x KC of A, KC x NC of B per thread).
#define MR 4
#define NR 8
#define KC 256
#define MC 96
#define NC 384

enum { B_DENSE = 0, B_IM2COL = 1, B_IM2COL_T = 2 };
enum { BIAS_NONE = 0, BIAS_COL = 1, BIAS_ROW = 2 };

typedef struct {
  // Convolution geometry, for the im2col packers: x is [.., cin, h, w], output positions [outH, outW].
  int h, w, kh, kw, sh, sw, ph, pw, dh, dw, outw, ohw, hw;
} ConvGeom;

typedef struct {
  int m, n, k;
  // Outer batch: problem b reads A + b*sa, B + b*sb and writes C + b*sc (element strides).
  int nb, sa, sb, sc;
  // The reduction index p is (p / kpix, p % kpix) = (image, pixel); the column index j is
  // (j / npix, j % npix). kpix = k and npix = n make them plain indices.
  int kpix, npix;
  // A(i, p) = a[i*ars + img(p)*akimg + pix(p)*acs].
  const float* a;
  int ars, acs, akimg;
  // B_DENSE: B(p, j) = b[img(p)*bkimg + pix(p)*brs + img(j)*bnimg + pix(j)*bcs]. B_IM2COL: p = (ci, ky, kx),
  // j = (image, oh, ow), element x[image, ci, ...] of the window. B_IM2COL_T: p = (image, oh, ow), j = (ci, ky, kx).
  int bkind;
  const float* b;
  int brs, bcs, bkimg, bnimg;
  ConvGeom g;
  // C(i, j) = c[i*ldc + img(j)*cnimg + pix(j)].
  float* c;
  int ldc, cnimg;
  const float* bias;
  int bias_mode;
  int sbias; // bias offset per problem of the outer batch
  int accumulate;
} Gemm;

// Run g on up to `threads` threads. `work` is scratch for split reductions (see gemm_work_floats).
void gemm_run(const Gemm* g, int threads, float* work);

// Floats of `work` gemm_run may use with `threads` threads (0 when it never splits the reduction).
int gemm_work_floats(const Gemm* g, int threads);

// gemm_pack.c: A rows [i0, i0+mc) x reduction [p0, p0+kc) into MR-row panels; B's kc x nc block into NR-column
// panels (dense, or gathered through im2col).
void gemm_pack_a(const Gemm* g, const float* a, int i0, int mc, int p0, int kc, float* dst);
void gemm_pack_b(const Gemm* g, const float* b, int j0, int nc, int p0, int kc, float* dst);
