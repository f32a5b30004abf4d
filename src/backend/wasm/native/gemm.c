// Register-blocked GEMM on packed panels (the BLIS loop nest) for matmul and the convolutions.
//
// A task owns one MC x NC tile of C (of one problem of the outer batch, and of one part of the reduction
// when it is split) and walks K in KC blocks: it packs the A block into MR-row panels and the B block into
// NR-column panels in its thread's scratch, then runs the MR x NR micro-kernel over them. Packing copies
// each operand into the order the micro-kernel reads (contiguous, zero-padded to whole panels), which is
// also where transposes, image strides and implicit im2col are resolved (gemm_pack.c): the micro-kernel only
// ever sees dense panels.
//
// MR x NR = 4 x 8: per step of k, one 16-byte load of A broadcast lane by lane with shuffles, two loads of B
// and 8 multiply-adds into 8 accumulators. Measured on V8 (x86-64, Zen 2) in isolation: 39 GFLOP/s, the
// machine's 128-bit FMA peak, where 6x8 with load32_splat broadcasts reached 23, 8x8 26-29 and 4x16 32 (the
// splat loads and the larger tiles' register spills cost more than the extra reuse saves).
#include "gemm.h"

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
    gemm_pack_a(g, a, i0, mc, p0, kc, ap);
    gemm_pack_b(g, b, j0, nc, p0, kc, bp);
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
  double flops = 2.0 * g->m * g->n * g->k * g->nb;
  // Enough tiles to keep every thread busy on a loaded machine, but never below 1 MFLOP a task.
  int want = threads > 1 ? split_count(flops, 1e6, 4 * threads) : 1;
  // Tiles of equal size (a 392-column problem is two of 200, not 384 + 8: each tile packs its whole A
  // block, which a sliver of columns would not pay back), more of them along N first, then M.
  int mt = cdiv(g->m, MC), nt = cdiv(g->n, NC);
  while (g->nb * mt * nt < want) {
    if (cdiv(g->n, nt + 1) >= 4 * NR) nt++;
    else if (cdiv(g->m, mt + 1) >= 2 * MR) mt++;
    else break;
  }
  plan.mc = cdiv(cdiv(g->m, mt), MR) * MR;
  plan.nc = cdiv(cdiv(g->n, nt), NR) * NR;
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
