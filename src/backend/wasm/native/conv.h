// Convolution attributes as kernels.ts's Conv2dAttrs, and the GEMM-based convolution paths (conv.c).
#pragma once

typedef struct {
  int n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, oh, ow;
} Conv;

void conv_gemm_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y);
void conv_gemm_grad_input(const Conv* c, const float* dy, const float* w, float* dx);
void conv_gemm_grad_weight(const Conv* c, const float* x, const float* dy, float* dw);

int depthwise_fits(const Conv* c);
void depthwise_forward(const Conv* c, const float* x, const float* w, const float* bias, float* y);
void depthwise_grad_input(const Conv* c, const float* dy, const float* w, float* dx);
void depthwise_grad_weight(const Conv* c, const float* x, const float* dy, float* dw);
