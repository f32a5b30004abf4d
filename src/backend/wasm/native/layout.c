// strided_copy (kernels.ts): the one data-movement kernel behind transpose, slice, pad, expand, concat and
// split. Dimensions that are contiguous in both views are merged, so most copies become a few long rows:
// memmove where both rows are unit-stride, a strided loop otherwise. Element bits are copied as they are
// (f32 and u32 alike); strides may be 0 (broadcast) or negative (a reversed slice).
#include "common.h"

static struct {
  int rank, rows, cols, per;
  int shape[6];
  long long xs[6], os[6];
  long long xoff, ooff;
  const uint32_t* x;
  uint32_t* out;
} sc;

static void copy_task(int t, int tid) {
  (void)tid;
  int last = sc.rank - 1;
  long long xs = sc.xs[last], os = sc.os[last];
  for (int r = t * sc.per; r < imin(sc.rows, (t + 1) * sc.per); r++) {
    long long xi = sc.xoff, oi = sc.ooff;
    int rem = r;
    for (int d = last - 1; d >= 0; d--) {
      int i = rem % sc.shape[d];
      rem /= sc.shape[d];
      xi += i * sc.xs[d];
      oi += i * sc.os[d];
    }
    const uint32_t* src = sc.x + xi;
    uint32_t* dst = sc.out + oi;
    if (xs == 1 && os == 1) {
      __builtin_memmove(dst, src, (size_t)sc.cols * 4);
    } else {
      for (int j = 0; j < sc.cols; j++) dst[j * os] = src[j * xs];
    }
  }
}

// shape, x strides, out strides: rank int32s each at the given addresses.
EXPORT void strided_copy(const uint32_t* x, uint32_t* out, int rank, const int* shape, int xoff, const int* xs,
                         int ooff, const int* os) {
  int r = 0;
  for (int d = 0; d < rank; d++) {
    if (shape[d] == 0) return;
    if (shape[d] == 1) continue;
    if (r > 0 && sc.xs[r - 1] == (long long)xs[d] * shape[d] && sc.os[r - 1] == (long long)os[d] * shape[d]) {
      sc.shape[r - 1] *= shape[d];
      sc.xs[r - 1] = xs[d];
      sc.os[r - 1] = os[d];
    } else {
      sc.shape[r] = shape[d], sc.xs[r] = xs[d], sc.os[r] = os[d];
      r++;
    }
  }
  if (r == 0) sc.shape[0] = 1, sc.xs[0] = 1, sc.os[0] = 1, r = 1;
  sc.rank = r, sc.x = x, sc.out = out, sc.xoff = xoff, sc.ooff = ooff;
  sc.cols = sc.shape[r - 1];
  sc.rows = 1;
  for (int d = 0; d < r - 1; d++) sc.rows *= sc.shape[d];
  int tasks = imin(sc.rows, split_count((double)sc.rows * sc.cols, 1 << 15, 8 * pool_threads()));
  sc.per = cdiv(sc.rows, tasks);
  parallel_for(copy_task, cdiv(sc.rows, sc.per), pool_threads());
}
