// Register-blocked GEMM on packed panels (the BLIS loop nest) for matmul and the convolutions.
//
// A task owns one MC x NC tile of C (of one problem of the outer batch, and of one part of the reduction
// when it is split) and walks K in KC blocks: it packs the A block into MR-row panels and the B block into
// NR-column panels in its thread's scratch, then runs the MR x NR micro-kernel over them. Packing copies
// each operand into the order the micro-kernel reads (contiguous, zero-padded to whole panels), which is
// also where transposes, image strides and implicit im2col are resolved: the micro-kernel only ever sees
// dense panels.
//
// MR x NR = 4 x 8: per step of k, one 16-byte load of A broadcast lane by lane with shuffles, two loads of B
// and 8 multiply-adds into 8 accumulators. Measured on V8 (x86-64, Zen 2) in isolation: 39 GFLOP/s, the
// machine's 128-bit FMA peak, where 6x8 with load32_splat broadcasts reached 23, 8x8 26-29 and 4x16 32 (the
// splat loads and the larger tiles' register spills cost more than the extra reuse saves).
#include "gemm.h"

#define MR 4
#define NR 8
#define KC 256
#define MC 96
#define NC 384



// ---- packing ------------------------------------------------------------------------------------------

// A rows [i0, i0+mc) x reduction [p0, p0+kc) into panels dst[panel][p][MR], rows past m zero.
static void pack_a(const Gemm* g, const float* a, int i0, int mc, int p0, int kc, float* dst) {
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

static void pack_b(const Gemm* g, const float* b, int j0, int nc, int p0, int kc, float* dst) {
  if (g->bkind == B_DENSE) pack_b_dense(g, b, j0, nc, p0, kc, dst);
  else if (g->bkind == B_IM2COL) pack_b_im2col(g, b, j0, nc, p0, kc, dst);
  else pack_b_im2col_t(g, b, j0, nc, p0, kc, dst);
}

// ---- micro-kernel -------------------------------------------------------------------------------------

// Where a tile's results go: `rows` x `cols` of C at c (column jj at coff[jj]), added to what C holds when
// load, plus bias when given.
typedef struct {
  float* c;
  int ldc;
  int rows, cols;
  const int* coff;
  int consecutive;
  int load;
  const float* brow; // bias per row (BIAS_ROW), already offset to the tile's first row
  const float* bcol; // bias per column (BIAS_COL), already offset to the tile's first column
} Tile;

static void store_tile(const Tile* t, v4 acc[MR][2]) {
  if (t->brow) {
    for (int r = 0; r < MR; r++) {
      v4 b = SPLAT(r < t->rows ? t->brow[r] : 0.0f);
      acc[r][0] = wasm_f32x4_add(acc[r][0], b);
      acc[r][1] = wasm_f32x4_add(acc[r][1], b);
    }
  }
  if (t->consecutive && t->rows == MR && !t->bcol) {
    float* c = t->c + t->coff[0];
    for (int r = 0; r < MR; r++, c += t->ldc) {
      v4 lo = acc[r][0], hi = acc[r][1];
      if (t->load) {
        lo = wasm_f32x4_add(lo, LD(c));
        hi = wasm_f32x4_add(hi, LD(c + 4));
      }
      ST(c, lo);
      ST(c + 4, hi);
    }
    return;
  }
  float tmp[MR][NR] __attribute__((aligned(16)));
  for (int r = 0; r < MR; r++) {
    ST(tmp[r], acc[r][0]);
    ST(tmp[r] + 4, acc[r][1]);
  }
  for (int r = 0; r < t->rows; r++) {
    float* c = t->c + (size_t)r * t->ldc;
    for (int jj = 0; jj < t->cols; jj++) {
      float v = tmp[r][jj] + (t->bcol ? t->bcol[jj] : 0.0f);
      float* d = c + t->coff[jj];
      *d = t->load ? *d + v : v;
    }
  }
}

#define LANE(v, i) wasm_i32x4_shuffle(v, v, i, i, i, i)

static void micro_kernel(int kc, const float* a, const float* b, const Tile* t) {
  v4 c00 = ZERO, c01 = ZERO, c10 = ZERO, c11 = ZERO, c20 = ZERO, c21 = ZERO, c30 = ZERO, c31 = ZERO;
  for (int p = 0; p < kc; p++) {
    v4 b0 = LD(b), b1 = LD(b + 4);
    v4 av = LD(a);
    v4 a0 = LANE(av, 0);
    c00 = FMA(a0, b0, c00);
    c01 = FMA(a0, b1, c01);
    v4 a1 = LANE(av, 1);
    c10 = FMA(a1, b0, c10);
    c11 = FMA(a1, b1, c11);
    v4 a2 = LANE(av, 2);
    c20 = FMA(a2, b0, c20);
    c21 = FMA(a2, b1, c21);
    v4 a3 = LANE(av, 3);
    c30 = FMA(a3, b0, c30);
    c31 = FMA(a3, b1, c31);
    a += MR;
    b += NR;
  }
  v4 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  store_tile(t, acc);
}

// ---- driver -------------------------------------------------------------------------------------------

typedef struct {
  const Gemm* g;
  int mc, nc, mt, nt, parts, sum_tasks;
  float* work; // parts x m x n partial sums when the reduction is split
} Plan;

static Plan plan;

// One MC x NC tile of problem `bi`, reduction range [k0, k1); into C, or into partial sums `part`.
static void gemm_tile(const Gemm* g, int bi, int i0, int j0, int k0, int k1, int part, int tid) {
  int mc = imin(plan.mc, g->m - i0), nc = imin(plan.nc, g->n - j0);
  float* ap = scratch(tid);
  float* bp = ap + MC * KC;
  const float* a = g->a + (size_t)bi * g->sa;
  const float* b = g->b + (size_t)bi * g->sb;
  int to_work = part >= 0;
  float* c = to_work ? plan.work + (size_t)part * g->m * g->n : g->c + (size_t)bi * g->sc;
  const float* bias = g->bias + (size_t)bi * g->sbias;
  int coff[NR];
  for (int p0 = k0; p0 < k1; p0 += KC) {
    int kc = imin(KC, k1 - p0);
    pack_a(g, a, i0, mc, p0, kc, ap);
    pack_b(g, b, j0, nc, p0, kc, bp);
    int first = p0 == k0;
    for (int jp = 0; jp < nc; jp += NR) {
      int j = j0 + jp;
      int cols = imin(NR, nc - jp);
      int consecutive = 1;
      if (to_work) {
        for (int jj = 0; jj < NR; jj++) coff[jj] = j + jj;
      } else {
        int img = j / g->npix, pix = j % g->npix;
        for (int jj = 0; jj < NR; jj++) {
          coff[jj] = img * g->cnimg + pix;
          if (jj && (jj >= cols || coff[jj] != coff[0] + jj)) consecutive = 0;
          if (++pix == g->npix) pix = 0, img++;
        }
      }
      if (cols < NR) consecutive = 0;
      for (int ip = 0; ip < mc; ip += MR) {
        int i = i0 + ip;
        Tile t = {
          .c = c + (size_t)i * (to_work ? g->n : g->ldc),
          .ldc = to_work ? g->n : g->ldc,
          .rows = imin(MR, mc - ip),
          .cols = cols,
          .coff = coff,
          .consecutive = consecutive,
          .load = !first || (!to_work && g->accumulate),
          .brow = first && !to_work && g->bias_mode == BIAS_ROW ? bias + i : 0,
          .bcol = first && !to_work && g->bias_mode == BIAS_COL ? bias + j : 0,
        };
        micro_kernel(kc, ap + (size_t)ip * kc, bp + (size_t)jp * kc, &t);
      }
    }
  }
}

static void gemm_task(int t, int tid) {
  const Gemm* g = plan.g;
  int nt = t % plan.nt;
  t /= plan.nt;
  int mt = t % plan.mt;
  t /= plan.mt;
  if (plan.parts > 1) {
    // Part t of the reduction, in whole images (kpix) where the reduction spans images.
    int steps = cdiv(g->k, g->kpix);
    int k0 = (int)((long long)steps * t / plan.parts) * g->kpix;
    int k1 = imin(g->k, (int)((long long)steps * (t + 1) / plan.parts) * g->kpix);
    if (k0 < k1) gemm_tile(g, 0, mt * plan.mc, nt * plan.nc, k0, k1, t, tid);
    else {
      float* w = plan.work + (size_t)t * g->m * g->n;
      for (int i = mt * plan.mc; i < imin(g->m, (mt + 1) * plan.mc); i++) {
        for (int j = nt * plan.nc; j < imin(g->n, (nt + 1) * plan.nc); j++) w[(size_t)i * g->n + j] = 0.0f;
      }
    }
  } else {
    gemm_tile(g, t, mt * plan.mc, nt * plan.nc, 0, g->k, -1, tid);
  }
}

// C (=|+=) sum of the partial products (+ bias), rows split over tasks.
static void gemm_sum_task(int t, int tid) {
  (void)tid;
  const Gemm* g = plan.g;
  int rows = cdiv(g->m, plan.sum_tasks);
  for (int i = t * rows; i < imin(g->m, (t + 1) * rows); i++) {
    int img = 0, pix = 0;
    for (int j = 0; j < g->n; j++) {
      float s = 0.0f;
      for (int q = 0; q < plan.parts; q++) s += plan.work[((size_t)q * g->m + i) * g->n + j];
      if (g->bias_mode == BIAS_ROW) s += g->bias[i];
      else if (g->bias_mode == BIAS_COL) s += g->bias[j];
      float* d = g->c + (size_t)i * g->ldc + img * g->cnimg + pix;
      *d = g->accumulate ? *d + s : s;
      if (++pix == g->npix) pix = 0, img++;
    }
  }
}

static void make_plan(const Gemm* g, int threads) {
  plan.g = g;
  plan.mc = imin(MC, cdiv(g->m, MR) * MR);
  plan.nc = imin(NC, cdiv(g->n, NR) * NR);
  double flops = 2.0 * g->m * g->n * g->k * g->nb;
  // Enough tiles to keep every thread busy on a loaded machine, but never below 1 MFLOP a task.
  int want = threads > 1 ? split_count(flops, 1e6, 4 * threads) : 1;
  while (g->nb * cdiv(g->m, plan.mc) * cdiv(g->n, plan.nc) < want && plan.nc > 4 * NR) plan.nc /= 2;
  while (g->nb * cdiv(g->m, plan.mc) * cdiv(g->n, plan.nc) < want && plan.mc > 2 * MR) {
    plan.mc = cdiv(plan.mc / 2, MR) * MR;
  }
  plan.mt = cdiv(g->m, plan.mc);
  plan.nt = cdiv(g->n, plan.nc);
  plan.parts = 1;
  int tiles = g->nb * plan.mt * plan.nt;
  // Few output tiles but a long reduction (weight gradients): split the reduction, sum the parts after.
  if (g->nb == 1 && tiles < want && g->k >= 4 * KC) {
    plan.parts = imin(cdiv(want, tiles), cdiv(g->k, KC));
    int steps = cdiv(g->k, g->kpix);
    if (plan.parts > steps && g->kpix > KC) plan.parts = steps;
  }
}

int gemm_work_floats(const Gemm* g, int threads) {
  make_plan(g, threads);
  return plan.parts > 1 ? plan.parts * g->m * g->n : 0;
}

void gemm_run(const Gemm* g, int threads, float* work) {
  if (g->m <= 0 || g->n <= 0 || g->nb <= 0) return;
  if (g->k <= 0) {
    // An empty reduction: C = bias (+ C).
    for (int bi = 0; bi < g->nb; bi++) {
      float* c = g->c + (size_t)bi * g->sc;
      const float* bias = g->bias + (size_t)bi * g->sbias;
      int img = 0, pix = 0;
      for (int j = 0; j < g->n; j++) {
        for (int i = 0; i < g->m; i++) {
          float s = g->bias_mode == BIAS_ROW ? bias[i] : g->bias_mode == BIAS_COL ? bias[j] : 0.0f;
          float* d = c + (size_t)i * g->ldc + img * g->cnimg + pix;
          *d = g->accumulate ? *d + s : s;
        }
        if (++pix == g->npix) pix = 0, img++;
      }
    }
    return;
  }
  make_plan(g, threads);
  plan.work = work;
  int tiles = plan.mt * plan.nt;
  if (plan.parts > 1 && work) {
    parallel_for(gemm_task, plan.parts * tiles, threads);
    plan.sum_tasks = imin(g->m, 2 * threads);
    parallel_for(gemm_sum_task, plan.sum_tasks, threads);
    return;
  }
  plan.parts = 1;
  parallel_for(gemm_task, g->nb * tiles, threads);
}

// Scratch each thread needs for packing: an MC x KC block of A and a KC x NC block of B.
EXPORT int gemm_scratch_bytes(void) { return (MC * KC + KC * NC) * 4; }
