// matmul and the convolutions that run as GEMMs (gemm.c): 1x1 pointwise convolutions on the images as they
// lie, other shapes through implicit im2col in the B packer. Depthwise convolutions are in depthwise.c.
#include "gemm.h"
#include "conv.h"



EXPORT void matmul(const float* a, const float* b, const float* bias, float* c, int batch, int m, int n, int k,
                   int trans_a, int trans_b, int stride_a, int stride_b, int stride_c, int accumulate) {
  Gemm g = {
      .m = m, .n = n, .k = k,
      .nb = batch, .sa = stride_a, .sb = stride_b, .sc = stride_c,
      .kpix = k, .npix = n,
      .a = a, .ars = trans_a ? 1 : k, .acs = trans_a ? m : 1,
      .bkind = B_DENSE, .b = b, .brs = trans_b ? 1 : n, .bcs = trans_b ? k : 1,
      .c = c, .ldc = n,
      .bias = bias, .bias_mode = bias ? BIAS_COL : BIAS_NONE,
      .accumulate = accumulate,
  };
  int threads = pool_threads();
  int wf = gemm_work_floats(&g, threads);
  gemm_run(&g, threads, wf ? ws_alloc(wf * 4) : 0);
}

static ConvGeom geom(const Conv* c) {
  ConvGeom g = {
      .h = c->h, .w = c->w, .kh = c->kh, .kw = c->kw, .sh = c->sh, .sw = c->sw, .ph = c->ph, .pw = c->pw,
      .dh = c->dh, .dw = c->dw, .outw = c->ow, .ohw = c->oh * c->ow, .hw = c->h * c->w,
  };
  return g;
}

static int pointwise(const Conv* c) {
  return c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->ph == 0 && c->pw == 0 && c->oh == c->h &&
         c->ow == c->w;
}

void conv_gemm_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y) {
  int cing = c->cin / c->groups, coutg = c->cout / c->groups;
  int kdim = cing * c->kh * c->kw, hw = c->h * c->w, ohw = c->oh * c->ow;
  Gemm g = {
      .m = coutg, .n = c->n * ohw, .k = kdim,
      .nb = c->groups, .sa = coutg * kdim, .sb = cing * hw, .sc = coutg * ohw,
      .kpix = kdim, .npix = ohw,
      .a = w, .ars = kdim, .acs = 1,
      .b = x, .bnimg = c->cin * hw,
      .g = geom(c),
      .c = y, .ldc = ohw, .cnimg = c->cout * ohw,
      .bias = bias, .bias_mode = bias ? BIAS_ROW : BIAS_NONE, .sbias = coutg,
  };
  if (pointwise(c)) {
    g.bkind = B_DENSE;
    g.brs = hw;
    g.bcs = 1;
  } else {
    g.bkind = B_IM2COL;
  }
  gemm_run(&g, pool_threads(), 0);
}

void conv_gemm_grad_weight(const Conv* c, const float* x, const float* dy, float* dw) {
  int cing = c->cin / c->groups, coutg = c->cout / c->groups;
  int kdim = cing * c->kh * c->kw, hw = c->h * c->w, ohw = c->oh * c->ow;
  Gemm g = {
      .m = coutg, .n = kdim, .k = c->n * ohw,
      .nb = c->groups, .sa = coutg * ohw, .sb = cing * hw, .sc = coutg * kdim,
      .kpix = ohw, .npix = kdim,
      .a = dy, .ars = ohw, .acs = 1, .akimg = c->cout * ohw,
      .b = x, .bkimg = c->cin * hw,
      .g = geom(c),
      .c = dw, .ldc = kdim,
  };
  if (pointwise(c)) {
    g.bkind = B_DENSE;
    g.brs = 1;
    g.bcs = hw;
  } else {
    g.bkind = B_IM2COL_T;
  }
  int threads = pool_threads();
  int wf = gemm_work_floats(&g, threads);
  gemm_run(&g, threads, wf ? ws_alloc(wf * 4) : 0);
}

// col2im of a chunk of images: dx[img, ci] = sum over taps of the dcol rows that read it.
static struct {
  const Conv* c;
  const float* dcol; // [groups][kdim][nimg * ohw]
  float* dx;
  int img0, nimg;
} c2i;

static void col2im_task(int t, int tid) {
  (void)tid;
  const Conv* c = c2i.c;
  int img = t / c->cin, ch = t % c->cin;
  int cing = c->cin / c->groups, grp = ch / cing, ci = ch % cing;
  int taps = c->kh * c->kw, kdim = cing * taps, ohw = c->oh * c->ow, cols = c2i.nimg * ohw;
  float* plane = c2i.dx + ((size_t)(c2i.img0 + img) * c->cin + ch) * c->h * c->w;
  for (int i = 0; i < c->h * c->w; i++) plane[i] = 0.0f;
  for (int t_ = 0; t_ < taps; t_++) {
    int ky = t_ / c->kw, kx = t_ % c->kw;
    int offy = ky * c->dh - c->ph, offx = kx * c->dw - c->pw;
    const float* src = c2i.dcol + ((size_t)grp * kdim + ci * taps + t_) * cols + (size_t)img * ohw;
    // Output rows/columns whose input index oh*sh + offy lies inside the image.
    int ylo = offy >= 0 ? 0 : cdiv(-offy, c->sh), yhi = imin(c->oh, (c->h - 1 - offy) / c->sh + 1);
    int xlo = offx >= 0 ? 0 : cdiv(-offx, c->sw), xhi = imin(c->ow, (c->w - 1 - offx) / c->sw + 1);
    if (c->h - 1 - offy < 0 || c->w - 1 - offx < 0) continue;
    for (int oh = ylo; oh < yhi; oh++) {
      float* d = plane + (oh * c->sh + offy) * c->w + offx;
      const float* s = src + oh * c->ow;
      int ow = xlo;
      if (c->sw == 1) {
        for (; ow + 4 <= xhi; ow += 4) ST(d + ow, wasm_f32x4_add(LD(d + ow), LD(s + ow)));
      }
      for (; ow < xhi; ow++) d[ow * c->sw] += s[ow];
    }
  }
}

// Floats of dcol a chunk of images may use: 8 Mi floats (32 MiB) or one image, whichever is more.
#define DCOL_FLOATS (8 << 20)

void conv_gemm_grad_input(const Conv* c, const float* dy, const float* w, float* dx) {
  int cing = c->cin / c->groups, coutg = c->cout / c->groups;
  int kdim = cing * c->kh * c->kw, hw = c->h * c->w, ohw = c->oh * c->ow;
  int threads = pool_threads();
  if (pointwise(c)) {
    // dx = W^T dy per group, on the images as they lie.
    Gemm g = {
        .m = cing, .n = c->n * hw, .k = coutg,
        .nb = c->groups, .sa = coutg * cing, .sb = coutg * hw, .sc = cing * hw,
        .kpix = coutg, .npix = hw,
        .a = w, .ars = 1, .acs = cing,
        .bkind = B_DENSE, .b = dy, .brs = ohw, .bcs = 1, .bnimg = c->cout * ohw,
        .c = dx, .ldc = hw, .cnimg = c->cin * hw,
    };
    gemm_run(&g, threads, 0);
    return;
  }
  int per_image = c->groups * kdim * ohw;
  int chunk = imax(1, imin(c->n, DCOL_FLOATS / imax(1, per_image)));
  float* dcol = ws_alloc(chunk * per_image * 4);
  for (int img0 = 0; img0 < c->n; img0 += chunk) {
    int nimg = imin(chunk, c->n - img0);
    // dcol[grp][kdim][img, pix] = W_grp^T dy[img0 + img, grp]
    Gemm g = {
        .m = kdim, .n = nimg * ohw, .k = coutg,
        .nb = c->groups, .sa = coutg * kdim, .sb = coutg * ohw, .sc = kdim * nimg * ohw,
        .kpix = coutg, .npix = ohw,
        .a = w, .ars = 1, .acs = kdim,
        .bkind = B_DENSE, .b = dy + (size_t)img0 * c->cout * ohw, .brs = ohw, .bcs = 1, .bnimg = c->cout * ohw,
        .c = dcol, .ldc = nimg * ohw, .cnimg = ohw,
    };
    gemm_run(&g, threads, 0);
    c2i.c = c;
    c2i.dcol = dcol;
    c2i.dx = dx;
    c2i.img0 = img0;
    c2i.nimg = nimg;
    parallel_for(col2im_task, nimg * c->cin, threads);
  }
}

// One input channel per group and at most 4 outputs each: direct loops (depthwise.c), as the CPU reference.
static int is_depthwise(const Conv* c) {
  return c->cin == c->groups && c->cout / c->groups <= 4 && depthwise_fits(c);
}

#define CONV_ARGS                                                                                           \
  int n, int cin, int h, int w_, int cout, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw_, \
      int groups, int oh, int ow
#define CONV_INIT {n, cin, h, w_, cout, kh, kw, sh, sw, ph, pw, dh, dw_, groups, oh, ow}

EXPORT void conv2d(const float* x, const float* w, const float* bias, float* y, CONV_ARGS) {
  Conv c = CONV_INIT;
  if (is_depthwise(&c)) depthwise_forward(&c, x, w, bias, y);
  else conv_gemm_forward(&c, x, w, bias, y);
}

EXPORT void conv2d_grad_input(const float* dy, const float* w, float* dx, CONV_ARGS) {
  Conv c = CONV_INIT;
  if (is_depthwise(&c)) depthwise_grad_input(&c, dy, w, dx);
  else conv_gemm_grad_input(&c, dy, w, dx);
}

EXPORT void conv2d_grad_weight(const float* x, const float* dy, float* dwt, CONV_ARGS) {
  Conv c = CONV_INIT;
  if (is_depthwise(&c)) depthwise_grad_weight(&c, x, dy, dwt);
  else conv_gemm_grad_weight(&c, x, dy, dwt);
}
